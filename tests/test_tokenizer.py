"""SigLIP2Tokenizer against independent references, on a tiny Gemma-like SentencePiece model.

References: (a) the `sentencepiece` library on lower-cased text, with big_vision's sticky EOS
and padding written out here; (b) transformers' `Siglip2Tokenizer` built from the same
`.model` file, called the way its processor calls it (padding="max_length", truncation).
"""

import doctest
import json
import pathlib

import keras
import keras_hub
import numpy as np
import pytest
import sentencepiece
import tensorflow as tf

from keras_siglip2.preset_loader import PresetError
from keras_siglip2.tokenizer import SigLIP2Tokenizer
from spm_model import train_tiny_spm

L = 16
EOS, PAD = 1, 0
TEXTS = [
    "A photo of a cat sitting on a red sofa.",
    "THE QUICK BROWN FOX",
    "Eine Katze schläft auf dem Sofa. ÜBER DEN FLUSS, STRASSE und Straße",
    "Une vache en smoking, ÉTÉ comme HIVER.",
    "Фотография кошки на диване. МОСКВА ЗИМОЙ.",
    "ΑΘΗΝΑ και ένα μήλο",
    "İstanbul'da bir kedi. IŞIK",
    "炎热天气里一杯冷饮的照片。",
    "ロックバンドの写真",
    "एक तस्वीर जिसमें दो लोगों को कैफीन की ज़रूरत है",
    "صورة قطة على الأريكة",
    "Emoji fall back to bytes: 😀🐈",
    "Numbers 0123456789 and 42 degrees",
    "",
    " leading and  double  spaces ",
    "a picture of a laptop with the lockscreen on, a cup of cappuccino, salt and pepper "
    "grinders. The view through the window reveals lake Zürich and the Alps.",
]
# Upper-case only in ASCII: every lower-casing mode agrees on these.
ASCII_UPPER = [t for t in TEXTS if t.lower() == t.encode().lower().decode()]
# A word-final capital sigma lower-cases to "ς" in Python / ICU, to "σ" in transformers.
FINAL_SIGMA = "ΟΔΟΣ ΣΤΗΝ ΑΘΗΝΑ"
BACKBONE_CONFIG = {
    "module": "keras_siglip2.models.backbone", "class_name": "SigLIP2Backbone",
    "config": {}, "registered_name": "keras_siglip2>SigLIP2Backbone",
}


@pytest.fixture(scope="session")
def proto(tmp_path_factory):
    return train_tiny_spm(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="session")
def sp(proto):
    return sentencepiece.SentencePieceProcessor(model_file=proto)


@pytest.fixture(scope="session")
def hf_tokenizer(proto, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("hf")
    (directory / "tokenizer.model").write_bytes(pathlib.Path(proto).read_bytes())
    # What the SigLIP 2 processor needs: no BOS, EOS added, right padding (the class default
    # is left) and, at call time, padding="max_length" with truncation.
    return transformers.Siglip2Tokenizer.from_pretrained(
        str(directory), add_bos_token=False, add_eos_token=True, padding_side="right"
    )


def reference_ids(sp, texts, length, lower):
    """big_vision's `tok(eos="sticky")`, written out on the sentencepiece library."""
    rows = []
    for text in texts:
        tokens = sp.encode(lower(text)) + [sp.eos_id()]
        if len(tokens) >= length:
            tokens = tokens[: length - 1] + tokens[-1:]
        rows.append(tokens + [sp.pad_id()] * (length - len(tokens)))
    return np.array(rows, "int32")


def ascii_lower(text):
    return text.encode("utf-8").lower().decode("utf-8")  # bytes.lower(): A-Z only


LOWER = {"ascii": ascii_lower, "unicode": str.lower, None: lambda text: text}


def in_tf_data(tokenizer, texts, batch=True):
    ds = tf.data.Dataset.from_tensor_slices(texts)
    ds = ds.batch(len(texts)).map(tokenizer) if batch else ds.map(tokenizer).batch(len(texts))
    out = next(iter(ds))
    assert isinstance(out, tf.Tensor) and out.dtype == tf.int32
    assert out.shape.as_list()[-1] == tokenizer.sequence_length
    return out.numpy()


@pytest.mark.parametrize("lowercase", ["ascii", "unicode", None])
def test_matches_sentencepiece_reference(proto, sp, lowercase):
    tokenizer = SigLIP2Tokenizer(proto, sequence_length=L, lowercase=lowercase)
    texts = [*TEXTS, FINAL_SIGMA]
    expected = reference_ids(sp, texts, L, LOWER[lowercase])
    eager = tokenizer(texts)
    assert isinstance(eager, np.ndarray) and eager.dtype == np.int32
    assert eager.shape == (len(texts), L)
    np.testing.assert_array_equal(eager, expected)
    np.testing.assert_array_equal(in_tf_data(tokenizer, texts), expected)
    np.testing.assert_array_equal(in_tf_data(tokenizer, texts, batch=False), expected)
    if lowercase:  # Lower-casing changes the ids of these texts.
        assert (expected != reference_ids(sp, texts, L, LOWER[None])).any()


def test_default_is_big_vision_pipeline(proto, sp):
    tokenizer = SigLIP2Tokenizer(proto)
    assert tokenizer.sequence_length == 64 and tokenizer.lowercase == "ascii"
    assert (tokenizer.end_token_id, tokenizer.pad_token_id) == (EOS, PAD)
    assert tokenizer.end_token == "<eos>" and tokenizer.start_token_id == 2
    np.testing.assert_array_equal(tokenizer(TEXTS), reference_ids(sp, TEXTS, 64, ascii_lower))
    # No BOS anywhere, exactly one EOS per row.
    ids = tokenizer(TEXTS)
    assert not (ids == 2).any()
    assert ((ids == EOS).sum(axis=1) == 1).all()
    # The proto as a pathlib.Path or as bytes.
    for source in (pathlib.Path(proto), pathlib.Path(proto).read_bytes()):
        np.testing.assert_array_equal(SigLIP2Tokenizer(source)(TEXTS), ids)


def test_matches_transformers(proto, hf_tokenizer):
    def hf(texts, length=L):
        out = hf_tokenizer(texts, padding="max_length", truncation=True, max_length=length)
        return np.array(out["input_ids"], "int32")

    unicode = SigLIP2Tokenizer(proto, sequence_length=L, lowercase="unicode")
    np.testing.assert_array_equal(unicode(TEXTS), hf(TEXTS))
    ascii_ = SigLIP2Tokenizer(proto, sequence_length=L)
    np.testing.assert_array_equal(ascii_(ASCII_UPPER), hf(ASCII_UPPER))
    # Where they differ: big_vision's ASCII lower-casing leaves non-ASCII capitals alone...
    non_ascii = [t for t in TEXTS if t not in ASCII_UPPER]
    assert len(non_ascii) >= 4
    long_ascii = SigLIP2Tokenizer(proto, sequence_length=64)
    assert (long_ascii(non_ascii) != hf(non_ascii, 64)).any(axis=1).all()
    # ...and transformers has no final-sigma rule: it matches "σ" where Python/ICU give "ς".
    assert (unicode(FINAL_SIGMA) != hf([FINAL_SIGMA])[0]).any()
    raw = SigLIP2Tokenizer(proto, sequence_length=L, lowercase=None)
    np.testing.assert_array_equal(
        raw(FINAL_SIGMA.lower().replace("ς", "σ")), hf([FINAL_SIGMA])[0]
    )


def test_sticky_eos(proto, sp):
    text = "The quick brown fox jumps over the lazy dog."
    tokens = sp.encode(text.lower())
    n = len(tokens)
    for length in (1, 2, n - 1, n, n + 1, n + 3):
        ids = SigLIP2Tokenizer(proto, sequence_length=length)(text)
        assert ids.shape == (length,)
        kept = min(n, length - 1)
        assert ids[:kept].tolist() == tokens[:kept]
        assert ids[kept] == EOS
        assert (ids[kept + 1 :] == PAD).all()
    # Truncated in the graph too.
    short = SigLIP2Tokenizer(proto, sequence_length=4)
    np.testing.assert_array_equal(in_tf_data(short, [text])[0], tokens[:3] + [EOS])


def test_empty_string(proto):
    tokenizer = SigLIP2Tokenizer(proto, sequence_length=L)
    expected = [EOS] + [PAD] * (L - 1)
    assert tokenizer("").tolist() == expected
    assert in_tf_data(tokenizer, ["", "x"])[0].tolist() == expected


def test_input_types_and_batching(proto):
    tokenizer = SigLIP2Tokenizer(proto, sequence_length=L)
    batch = tokenizer(TEXTS)
    assert batch.shape == (len(TEXTS), L)
    for i, text in enumerate(TEXTS):
        single = tokenizer(text)
        assert single.shape == (L,) and single.dtype == np.int32
        np.testing.assert_array_equal(single, batch[i])
    same = [
        tuple(TEXTS), np.array(TEXTS), np.array([t.encode() for t in TEXTS]),
        np.array(TEXTS, dtype=object), tf.constant(TEXTS), [t.encode() for t in TEXTS],
    ]
    for inputs in same:
        np.testing.assert_array_equal(tokenizer(inputs), batch)
    for single in (TEXTS[2].encode(), np.array(TEXTS[2]), tf.constant(TEXTS[2])):
        np.testing.assert_array_equal(tokenizer(single), batch[2])
    assert tokenizer([]).shape == (0, L)
    # Also through tf.function, and `tokenize` is the same as calling.
    graph = tf.function(lambda x: tokenizer(x))(tf.constant(TEXTS))
    np.testing.assert_array_equal(graph.numpy(), batch)
    np.testing.assert_array_equal(tokenizer.tokenize(TEXTS), batch)


def test_detokenize_round_trip(proto):
    tokenizer = SigLIP2Tokenizer(proto, sequence_length=64, lowercase="unicode")
    texts = [t for t in TEXTS if len(t) < 60]
    ids = tokenizer(texts)
    assert tokenizer.detokenize(ids) == [t.lower() for t in texts]
    assert tokenizer.detokenize(ids[0]) == texts[0].lower()
    assert tokenizer.detokenize(keras.ops.convert_to_tensor(ids))[3] == texts[3].lower()
    # In a graph (tf_text's decoder); autograph off: it spends seconds on keras-hub's code.
    graph = tf.function(tokenizer.detokenize, autograph=False)(tf.constant(ids))
    assert [x.decode() for x in graph.numpy()] == [t.lower() for t in texts]


def test_config_round_trip(proto):
    tokenizer = SigLIP2Tokenizer(proto, sequence_length=L, lowercase="unicode")
    config = tokenizer.get_config()
    assert config["lowercase"] == "unicode" and config["sequence_length"] == L
    assert config["proto"] is None and "add_bos" not in config
    clone = SigLIP2Tokenizer.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(tokenizer)
    assert serialized["registered_name"] == "keras_siglip2>SigLIP2Tokenizer"
    clone = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(clone, SigLIP2Tokenizer) and clone.lowercase == "unicode"
    clone.set_proto(proto)  # the vocabulary travels as an asset, not in the config
    np.testing.assert_array_equal(clone(TEXTS), tokenizer(TEXTS))
    assert SigLIP2Tokenizer(proto, lowercase=False).get_config()["lowercase"] is None


def test_save_to_preset_round_trip(proto, tmp_path):
    tokenizer = SigLIP2Tokenizer(proto, sequence_length=L, lowercase="unicode")
    tokenizer.save_to_preset(str(tmp_path))
    asset = tmp_path / "assets" / "tokenizer" / "vocabulary.spm"
    assert asset.read_bytes() == pathlib.Path(proto).read_bytes()
    assert json.loads((tmp_path / "tokenizer.json").read_text())["registered_name"] == (
        "keras_siglip2>SigLIP2Tokenizer"
    )
    loaded = SigLIP2Tokenizer.from_preset(str(tmp_path))
    assert (loaded.sequence_length, loaded.lowercase) == (L, "unicode")
    np.testing.assert_array_equal(loaded(TEXTS), tokenizer(TEXTS))
    assert SigLIP2Tokenizer.from_preset(tmp_path, sequence_length=8)("x").shape == (8,)


def test_full_preset_loads_through_keras_hub(proto, tmp_path):
    # What keras-hub reads of a saved backbone's config.json to pick the tokenizer class.
    (tmp_path / "config.json").write_text(json.dumps(BACKBONE_CONFIG))
    SigLIP2Tokenizer(proto, sequence_length=8).save_to_preset(str(tmp_path))
    for loaded in (
        SigLIP2Tokenizer.from_preset(str(tmp_path)),
        keras_hub.models.Tokenizer.from_preset(str(tmp_path)),
    ):
        assert type(loaded) is SigLIP2Tokenizer and loaded.sequence_length == 8
        assert loaded("").tolist() == [EOS] + [PAD] * 7


def test_from_preset_transformers_dir(proto, sp, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    (tmp_path / "tokenizer.model").write_bytes(pathlib.Path(proto).read_bytes())
    # transformers' own tokenizer.json is no keras config and must not be taken for one.
    (tmp_path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {}}))
    tokenizer = SigLIP2Tokenizer.from_preset(str(tmp_path), sequence_length=L)
    np.testing.assert_array_equal(tokenizer(TEXTS), reference_ids(sp, TEXTS, L, ascii_lower))


def test_from_preset_keras_style_dirs(proto, sp, tmp_path):
    ours, kh = tmp_path / "ours", tmp_path / "keras_hub"
    # Our backbone preset with its vocabulary but no tokenizer.json.
    (ours / "assets" / "tokenizer").mkdir(parents=True)
    (ours / "assets" / "tokenizer" / "vocabulary.spm").write_bytes(
        pathlib.Path(proto).read_bytes()
    )
    (ours / "config.json").write_text(json.dumps(BACKBONE_CONFIG))
    # A keras-hub SigLIP preset: its GemmaTokenizer's vocabulary, our pipeline.
    keras_hub.tokenizers.GemmaTokenizer(proto=proto).save_to_preset(str(kh))
    (kh / "config.json").write_text(
        json.dumps({"class_name": "SigLIPBackbone", "registered_name": "keras_hub>SigLIPBackbone",
                    "config": {}})
    )
    expected = reference_ids(sp, TEXTS, L, ascii_lower)
    for directory in (ours, kh):
        tokenizer = SigLIP2Tokenizer.from_preset(str(directory), sequence_length=L)
        assert type(tokenizer) is SigLIP2Tokenizer
        np.testing.assert_array_equal(tokenizer(TEXTS), expected)


def test_clear_errors(proto, tmp_path):
    with pytest.raises(FileNotFoundError, match="no SentencePiece model file at"):
        SigLIP2Tokenizer(str(tmp_path / "missing.model"))
    with pytest.raises(FileNotFoundError, match="no SentencePiece model file at"):
        SigLIP2Tokenizer(str(tmp_path))  # a directory
    (tmp_path / "bad.model").write_text("not a model")
    with pytest.raises(ValueError, match="is not a SentencePiece model"):
        SigLIP2Tokenizer(str(tmp_path / "bad.model"))
    with pytest.raises(ValueError, match="is not a SentencePiece model"):
        SigLIP2Tokenizer(b"\x00garbage")
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    with pytest.raises(PresetError, match="no SentencePiece vocabulary"):
        SigLIP2Tokenizer.from_preset(str(hf_dir))
    with pytest.raises(PresetError):
        SigLIP2Tokenizer.from_preset(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="lowercase"):
        SigLIP2Tokenizer(proto, lowercase="upper")
    with pytest.raises(ValueError, match="sequence_length"):
        SigLIP2Tokenizer(proto, sequence_length=0)
    with pytest.raises(ValueError, match="integer dtype"):
        SigLIP2Tokenizer(proto, dtype="string")


@pytest.mark.parametrize(
    "bad", [3, [1, 2], ["ok", None], np.zeros(3), tf.constant([1]), {"text": "x"}]
)
def test_non_string_input(proto, bad):
    with pytest.raises(TypeError, match="expects a str, a list of str"):
        SigLIP2Tokenizer(proto, sequence_length=8)(bad)


def test_rank_2_input(proto):
    tokenizer = SigLIP2Tokenizer(proto, sequence_length=8)
    with pytest.raises(ValueError, match="shape"):
        tokenizer(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="0-D or 1-D tf.string"):
        tf.function(lambda x: tokenizer(x))(tf.constant([["a"]]))


def test_docstring_example_passes():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    for test in finder.find(SigLIP2Tokenizer, "SigLIP2Tokenizer", globs={}):
        test.globs["SigLIP2Tokenizer"] = SigLIP2Tokenizer
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0


def test_pipeline_survives_a_later_random_seed(proto):
    # keras.utils.set_random_seed clears TF's eager kernel cache, which used to free the
    # SentencePiece resource that a tf.data pipeline traced earlier still pointed to.
    tokenizer = SigLIP2Tokenizer(proto=proto, sequence_length=8)
    texts = ["A photo of a cat", "zwei Hunde"]
    dataset = tf.data.Dataset.from_tensor_slices(texts).map(tokenizer)
    keras.utils.set_random_seed(0)
    got = np.stack([ids.numpy() for ids in dataset])
    np.testing.assert_array_equal(got, tokenizer(texts))


@pytest.mark.parametrize(
    "bad,which,what",
    [
        (b"caf\xe9", "the text", "UTF-8"),
        ([b"ok", b"\xff"], "text 1", "UTF-8"),
        (np.array([b"ok", b"\xc3\x28"]), "text 1", "UTF-8"),
        (tf.constant([b"a", b"b", b"\xed\xa0\x80"]), "text 2", "UTF-8"),  # encoded surrogate
        ("\ud800", "the text", "Unicode"),
        (["ok", "a\udfffb"], "text 1", "Unicode"),
    ],
)
def test_non_utf8_text_is_an_error_eagerly(proto, bad, which, what):
    tokenizer = SigLIP2Tokenizer(proto, sequence_length=8)
    for call in (tokenizer, tokenizer.tokenize):
        with pytest.raises(ValueError, match=f"SigLIP2Tokenizer: {which} is not valid {what}"):
            call(bad)


def test_non_utf8_text_is_an_error_in_tf_data(proto):
    tokenizer = SigLIP2Tokenizer(proto, sequence_length=8)
    texts = [b"ok", "caf\xe9".encode("latin-1"), b"fine"]
    message = "not valid UTF-8.*indices in the batch.*\\[1\\].*caf\ufffd"
    for batched in (True, False):
        ds = tf.data.Dataset.from_tensor_slices(texts)
        ds = ds.batch(3).map(tokenizer) if batched else ds.map(tokenizer)
        with pytest.raises(tf.errors.InvalidArgumentError, match=message if batched else
                           "not valid UTF-8.*caf\ufffd"):
            list(ds)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        tf.function(lambda x: tokenizer(x))(tf.constant(texts))


def test_valid_utf8_edge_cases_are_unchanged(proto, sp):
    # U+FFFD itself, NUL, a BOM, a noncharacter, 4-byte characters: valid, tokenised as before
    # and the same in the graph.
    texts = ["a\ufffdb", "x\x00y", "\ufeffBOM", "\uffff", "\U0001F600 \U0010FFFF", "\u0130"]
    tokenizer = SigLIP2Tokenizer(proto, sequence_length=L)
    expected = reference_ids(sp, texts, L, ascii_lower)
    np.testing.assert_array_equal(tokenizer(texts), expected)
    np.testing.assert_array_equal(tokenizer([t.encode() for t in texts]), expected)
    np.testing.assert_array_equal(in_tf_data(tokenizer, texts), expected)
