"""The procedural scenes dataset: determinism, splits, hold-out, annotations, text, tf.data."""

import collections
import os

import numpy as np
import pytest
import sentencepiece

from keras_siglip2.datasets import captions, scenes, vocabulary

FIELDS = ("image", "caption", "language", "boxes", "referring_expressions", "colour", "shape",
          "size", "texture", "held_out", "segmentation")


def assert_examples_equal(a, b):
    assert sorted(a) == sorted(FIELDS) == sorted(b)
    for key in FIELDS:
        if key in ("caption", "language"):
            assert a[key] == b[key], key
        elif key == "referring_expressions":
            assert list(a[key]) == list(b[key])
        else:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def colour_stem(name, language):
    """The part of a colour's dictionary form that every inflected form keeps."""
    if language == "es" and name.endswith("o"):
        return name[:-1]
    return name[:-2] if language == "ru" else name


def test_deterministic_by_seed_split_and_index():
    a = scenes.example("train", 12, seed=3)
    assert_examples_equal(a, scenes.example("train", 12, seed=3))
    other_seed = scenes.example("train", 12, seed=4)
    assert a["image"].shape != other_seed["image"].shape or not np.array_equal(
        a["image"], other_seed["image"]
    )
    # The language has its own stream: the scene is the same in every language.
    for language in scenes.LANGUAGES:
        fixed = scenes.example("train", 12, seed=3, language=language)
        np.testing.assert_array_equal(fixed["image"], a["image"])
        np.testing.assert_array_equal(fixed["boxes"], a["boxes"])
        assert fixed["language"] == language
    # Reading order does not matter.
    forward = [scenes.example("validation", i)["caption"] for i in range(5)]
    backward = [scenes.example("validation", i)["caption"] for i in reversed(range(5))]
    assert forward == backward[::-1]


def test_splits_are_disjoint():
    digests = {
        split: {scenes.example(split, i)["image"].tobytes() for i in range(150)}
        for split in scenes.SPLITS
    }
    assert all(len(d) == 150 for d in digests.values())
    assert not digests["train"] & digests["validation"]
    assert not digests["train"] & digests["test"]
    assert not digests["validation"] & digests["test"]


def test_held_out_pairs_only_in_test():
    held_out = {(scenes.COLOURS.index(c), scenes.SHAPES.index(s)) for c, s in scenes.HELD_OUT_PAIRS}
    # A sensible hold-out: every colour and every shape keeps most of its pairs.
    assert {c for c, _ in held_out} == set(range(len(scenes.COLOURS)))
    assert {s for _, s in held_out} == set(range(len(scenes.SHAPES)))
    assert 0.1 <= len(held_out) / (len(scenes.COLOURS) * len(scenes.SHAPES)) <= 0.2
    for split in ("train", "validation", "test"):
        pairs, flags = [], []
        index = 0
        while len(pairs) < (1000 if split == "test" else 2000):
            ex = scenes.example(split, index, num_objects=(3, 4))
            pairs += list(zip(ex["colour"].tolist(), ex["shape"].tolist()))
            flags += ex["held_out"].tolist()
            index += 1
        assert flags == [p in held_out for p in pairs]
        if split == "test":
            assert 0.08 < np.mean(flags) < 0.22  # about 8 / 56 of the objects
            assert set(pairs) == {(c, s) for c in range(8) for s in range(7)}
        else:
            assert not any(flags)
            seen = set(pairs)
            assert {c for c, _ in seen} == set(range(len(scenes.COLOURS)))
            assert {s for _, s in seen} == set(range(len(scenes.SHAPES)))


def test_annotations_are_consistent():
    for index in range(60):
        ex = scenes.example("test", index)
        image, segmentation, boxes = ex["image"], ex["segmentation"], ex["boxes"]
        height, width = segmentation.shape
        k = len(boxes)
        assert image.dtype == np.uint8 and image.shape == (height, width, 3)
        assert segmentation.dtype == np.uint8 and boxes.dtype == np.float32
        assert boxes.shape == (k, 4) and 1 <= k <= 4
        assert len(ex["referring_expressions"]) == k
        for key in ("colour", "shape", "size", "texture"):
            assert ex[key].dtype == np.int32 and ex[key].shape == (k,)
        assert ex["held_out"].dtype == bool and ex["held_out"].shape == (k,)
        assert np.all((boxes >= 0) & (boxes <= 1))
        assert np.all(boxes[:, :2] < boxes[:, 2:])
        pixels = np.rint(boxes * [height, width, height, width]).astype(int)
        covered = np.zeros_like(segmentation, bool)
        short = min(height, width)
        for (y0, x0, y1, x1), shape, size in zip(pixels, ex["shape"], ex["size"]):
            inside = segmentation[y0:y1, x0:x1]
            # Every foreground pixel in the box is this object's shape, and the box is tight.
            assert set(np.unique(inside).tolist()) <= {0, 1 + shape}
            assert (inside[0] > 0).any() and (inside[-1] > 0).any()
            assert (inside[:, 0] > 0).any() and (inside[:, -1] > 0).any()
            assert not covered[y0:y1, x0:x1].any(), "boxes overlap"
            covered[y0:y1, x0:x1] = True
            # Small objects: about a quarter of the short side; large ones clearly larger.
            extent = max(y1 - y0, x1 - x0) / short
            assert (0.24 <= extent <= 0.33) if size == 0 else (0.4 <= extent <= 0.53)
        # Every foreground pixel belongs to some object's box.
        assert not (segmentation[~covered] > 0).any()


def test_image_sizes_and_aspect_ratios_vary():
    shapes = np.array([scenes.example("train", i)["image"].shape[:2] for i in range(200)])
    assert shapes.min() >= 64 and shapes.max() <= 160
    aspect = shapes[:, 1] / shapes[:, 0]
    assert aspect.min() >= 0.5 and aspect.max() <= 2.0
    assert (aspect < 0.7).sum() > 10 and (aspect > 1.4).sum() > 10
    assert len({tuple(s) for s in shapes}) > 150


def test_num_objects_and_languages():
    counts = collections.Counter()
    languages = collections.Counter()
    for index in range(200):
        ex = scenes.example("train", index)
        counts[len(ex["boxes"])] += 1
        languages[ex["language"]] += 1
    assert set(counts) == {1, 2, 3, 4} and min(counts.values()) > 25
    assert set(languages) == set(scenes.LANGUAGES) and min(languages.values()) > 20
    assert all(len(scenes.example("validation", i, num_objects=2)["boxes"]) == 2
               for i in range(30))


def _english_matches(phrase, ex):
    """Indices of the objects whose English attribute words include all words of `phrase`."""
    words = phrase.split()
    return [
        k for k in range(len(ex["boxes"])) if set(words) <= {
            scenes.SIZES[ex["size"][k]], scenes.COLOURS[ex["colour"][k]],
            scenes.TEXTURES[ex["texture"][k]], scenes.SHAPES[ex["shape"][k]],
        }
    ]


def test_referring_expressions_identify_their_object():
    relations = 0
    for index in range(400):
        ex = scenes.example("validation", index, language="en", num_objects=(2, 4))
        expressions = ex["referring_expressions"]
        assert len(set(expressions)) == len(expressions)
        centres = (ex["boxes"][:, :2] + ex["boxes"][:, 2:]) / 2
        for k, text in enumerate(expressions):
            assert text.startswith("the ")
            head, relation, anchor = text[4:], None, None
            for i, name in enumerate(captions.RELATIONS):
                if f" {name} the " in head:
                    head, anchor = head.split(f" {name} the ")
                    relation = i
            candidates = _english_matches(head, ex)
            assert k in candidates, text
            if relation is None:
                assert candidates == [k], text
                continue
            relations += 1
            (a,) = _english_matches(anchor, ex)
            # left of / right of compare x centres, above / below y centres (y downwards).
            axis, sign = (1 if relation < 2 else 0), (-1, 1, -1, 1)[relation]
            on_side = [c for c in candidates if sign * (centres[c, axis] - centres[a, axis]) > 0]
            assert on_side == [k], text
    assert relations > 0


def test_captions_name_every_object_in_their_language():
    for language in scenes.LANGUAGES:
        shapes = scenes.class_names("shape", language)
        colours = scenes.class_names("colour", language)
        for index in range(40):
            ex = scenes.example("train", index, language=language)
            assert ex["language"] == language
            for k, text in enumerate(ex["referring_expressions"]):
                shape, colour = shapes[ex["shape"][k]], colour_stem(colours[ex["colour"][k]],
                                                                   language)
                assert shape in ex["caption"] and colour in ex["caption"], (ex["caption"], k)
                assert shape in text and colour in text, (text, k)


def test_class_names_and_prompt_templates():
    for language in scenes.LANGUAGES:
        for attribute, values in zip(("colour", "shape", "size", "texture"),
                                     (scenes.COLOURS, scenes.SHAPES, scenes.SIZES,
                                      scenes.TEXTURES)):
            names = scenes.class_names(attribute, language)
            assert len(names) == len(values) == len(set(names))
            templates = scenes.prompt_templates(language, attribute)
            assert len(templates) >= 2
            assert all(t.count("{}") == 1 for t in templates)
        assert scenes.prompt_templates(language) == ["{}"]
    assert scenes.class_names("colour") == scenes.COLOURS


def test_tf_data_matches_example():
    ds = scenes.load("test", num_examples=6, seed=2, num_objects=(1, 3))
    elements = list(ds.as_numpy_iterator())
    assert len(elements) == 6
    for index, element in enumerate(elements):
        element["caption"] = element["caption"].decode()
        element["language"] = element["language"].decode()
        element["referring_expressions"] = [t.decode() for t in element["referring_expressions"]]
        assert_examples_equal(element, scenes.example("test", index, seed=2, num_objects=(1, 3)))
    endless = scenes.load("train", language="de")
    assert endless.cardinality().numpy() < 0  # infinite
    first = next(endless.skip(3).as_numpy_iterator())
    assert first["caption"].decode() == scenes.example("train", 3, language="de")["caption"]
    assert scenes.load("validation").cardinality().numpy() == 1000


def test_numpy_batches():
    batches = list(scenes.numpy_batches("validation", 3, num_examples=7, seed=1))
    assert [len(b["image"]) for b in batches] == [3, 3, 1]
    assert sorted(batches[0]) == sorted(FIELDS)
    expected = scenes.example("validation", 4, seed=1)
    assert_examples_equal({k: v[1] for k, v in batches[1].items()}, expected)
    kept = scenes.numpy_batches("validation", 3, num_examples=7, drop_remainder=True)
    assert len(list(kept)) == 2
    endless = scenes.numpy_batches("train", 2)
    assert [len(next(endless)["caption"]) for _ in range(3)] == [2, 2, 2]


def test_language_weights_draw_the_caption_language():
    mix = {"en": 3, "zh": 1}
    drawn = collections.Counter(
        scenes.example("train", i, language=mix)["language"] for i in range(400)
    )
    assert set(drawn) == {"en", "zh"} and 240 < drawn["en"] < 360, drawn
    assert {scenes.example("train", i, language={"ru": 0.5})["language"] for i in range(5)} == {
        "ru"}
    # The draw is seeded per example and leaves the scene as it is.
    ex, again = (scenes.example("train", 7, language=mix) for _ in range(2))
    assert ex["caption"] == again["caption"]
    np.testing.assert_array_equal(ex["image"], scenes.example("train", 7)["image"])
    loaded = next(iter(scenes.load("train", language=mix)))
    assert loaded["caption"].numpy().decode() == scenes.example("train", 0, language=mix)[
        "caption"]
    for bad in ({"fr": 1.0}, {"en": -1.0, "de": 2.0}, {"en": 0, "de": 0}, ["en"]):
        with pytest.raises(ValueError, match="language"):
            scenes.example("train", 0, language=bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        scenes.example("dev", 0)
    with pytest.raises(ValueError, match="language"):
        scenes.example("train", 0, language="fr")
    with pytest.raises(ValueError, match="num_objects"):
        scenes.example("train", 0, num_objects=(0, 2))
    with pytest.raises(ValueError, match="num_objects"):
        scenes.load("train", num_objects=7)
    with pytest.raises(ValueError, match="index"):
        scenes.example("train", -1)
    with pytest.raises(ValueError, match="seed"):
        scenes.example("train", 0, seed=-2)
    with pytest.raises(ValueError, match="batch_size"):
        next(scenes.numpy_batches("train", 0))
    with pytest.raises(ValueError, match="attribute"):
        scenes.class_names("hue")


def test_tokenizer_covers_the_grammar():
    path = os.path.join(os.path.dirname(scenes.__file__), "scenes_spm.model")
    assert os.path.getsize(path) < 100_000
    sp = sentencepiece.SentencePieceProcessor(model_file=path)
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (0, 1, 2, 3)
    tokenizer = scenes.tokenizer(sequence_length=32)
    assert tokenizer.vocabulary_size() == sp.vocab_size() == 1000
    texts = []
    for language in scenes.LANGUAGES:
        for attribute in captions.ATTRIBUTES:
            names = scenes.class_names(attribute, language)
            texts += list(names)
            texts += [t.format(n) for t in scenes.prompt_templates(language, attribute)
                      for n in names]
        for index in range(30):
            ex = scenes.example("test", index, language=language)
            texts += [ex["caption"], *ex["referring_expressions"]]
    words = {w for text in texts for w in text.split()}
    # No unknown pieces and no byte fallback, neither in texts nor in isolated words.
    byte_ids = {i for i in range(sp.vocab_size()) if sp.is_byte(i)}
    ids = tokenizer(sorted(words) + texts)
    assert not ((ids == sp.unk_id()) | np.isin(ids, list(byte_ids))).any()
    # Captions of one or two objects fit in 32 tokens (EOS included) in every language.
    for language in scenes.LANGUAGES:
        short = [scenes.example("validation", i, language=language, num_objects=(1, 2))
                 for i in range(30)]
        ids = tokenizer([ex["caption"] for ex in short])
        assert (ids[:, -1] == 0).all(), language
        refs = tokenizer([t for ex in short for t in ex["referring_expressions"]])
        assert (refs[:, 16:] == 0).all(), language


def test_shipped_vocabulary_is_rebuilt_by_vocabulary_module():
    rebuilt = sentencepiece.SentencePieceProcessor(model_proto=vocabulary.build())
    shipped = scenes.tokenizer()._spm
    assert [rebuilt.id_to_piece(i) for i in range(rebuilt.vocab_size())] == [
        shipped.id_to_piece(i) for i in range(shipped.vocab_size())
    ]
