"""Text pipeline of the released SigLIP 2 checkpoints (big_vision demo).

`lower(key="text")|tok(length=64, model="gemma", bos="no", eos="sticky")`: ASCII lower-casing
(`tf.strings.lower`), Gemma SentencePiece, no BOS, EOS appended and kept when truncating (a text
longer than `sequence_length` keeps its first `sequence_length - 1` tokens, then EOS), padded
with `<pad>` (id 0) to `sequence_length`.
"""

import json
import os
import string

import keras
import numpy as np
import sentencepiece
from keras_hub.tokenizers import SentencePieceTokenizer

from keras_siglip2 import preset_registry
from keras_siglip2.models.backbone import SigLIP2Backbone

LOWERCASE_MODES = ("ascii", "unicode", None)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_KERAS_CONFIG = "tokenizer.json"


def _tf():
    import tensorflow as tf

    return tf


def _as_strings(inputs):
    """`(list of str, batched)` from a str, bytes, list/tuple of them, or a 0-/1-D array."""
    expected = (
        "a str, a list of str, or a 0-D/1-D numpy array or tf.string tensor of texts"
    )
    tf = _tf()
    if isinstance(inputs, tf.Tensor):
        if inputs.dtype != tf.string:
            raise TypeError(
                f"SigLIP2Tokenizer expects {expected}; got a {inputs.dtype.name} tensor."
            )
        inputs = inputs.numpy()
    if isinstance(inputs, (str, bytes)):
        items, batched = [inputs], False
    elif isinstance(inputs, np.ndarray):
        if inputs.dtype.kind not in "USO":
            raise TypeError(f"SigLIP2Tokenizer expects {expected}; got a {inputs.dtype} array.")
        if inputs.ndim > 1:
            raise ValueError(f"SigLIP2Tokenizer expects {expected}; got shape {inputs.shape}.")
        items, batched = (inputs.tolist(), True) if inputs.ndim else ([inputs.item()], False)
    elif isinstance(inputs, (list, tuple)):
        items, batched = list(inputs), True
    else:
        raise TypeError(f"SigLIP2Tokenizer expects {expected}; got {type(inputs).__name__}.")
    texts = []
    for index, item in enumerate(items):
        if isinstance(item, bytes):
            item = _decode_utf8(item, index if batched else None)
        if not isinstance(item, str):
            raise TypeError(
                f"SigLIP2Tokenizer expects {expected}; got an element of type "
                f"{type(item).__name__}: {item!r}."
            )
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates
            raise ValueError(
                f"SigLIP2Tokenizer: {_which(index if batched else None)} is not valid Unicode "
                f"({e.reason} at character {e.start}): {item[:60]!r}. Remove or replace the "
                "surrogate code points."
            ) from None
        texts.append(item)
    return texts, batched


def _which(index):
    return "the text" if index is None else f"text {index}"


def _decode_utf8(data, index):
    """`data` decoded as UTF-8, or a ValueError naming the text (never a guess)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"SigLIP2Tokenizer: {_which(index)} is not valid UTF-8 ({e.reason} at byte "
            f"{e.start}): {data[:60]!r}. Decode it yourself with its real encoding (e.g. "
            "`data.decode('latin-1')`) and pass a str."
        ) from None


def _tf_assert_utf8(texts):
    """`texts` (a 1-D tf.string tensor), checked to be valid UTF-8 when the graph runs."""
    tf = _tf()
    # Replacing invalid sequences by U+FFFD changes exactly the texts that are not UTF-8.
    replaced = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace")
    valid = tf.equal(replaced, texts)
    invalid = tf.logical_not(valid)
    # The message shows the texts with U+FFFD in place of the bad bytes: TF's error message
    # must itself be UTF-8.
    check = tf.debugging.Assert(tf.reduce_all(valid), [
        "SigLIP2Tokenizer: texts that are not valid UTF-8 (decode them with their real "
        "encoding first); their indices in the batch, then the texts with U+FFFD for the bad "
        "bytes:", tf.where(invalid)[:, 0], tf.boolean_mask(replaced, invalid),
    ], summarize=3)
    with tf.control_dependencies([check]):
        return tf.identity(texts)


def _saved_by_keras(directory, config_file=_KERAS_CONFIG):
    """True if `directory` holds a `tokenizer.json` written by keras-hub for one of ours."""
    path = os.path.join(directory, config_file)
    if not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return False
    # transformers' tokenizer.json (a `tokenizers` serialization) has no registered_name.
    cls = keras.saving.get_registered_object(str(config.get("registered_name")))
    return isinstance(cls, type) and issubclass(cls, SigLIP2Tokenizer)


@keras.saving.register_keras_serializable(package="keras_siglip2")
class SigLIP2Tokenizer(SentencePieceTokenizer):
    """Gemma SentencePiece tokenizer with the released SigLIP 2 models' text pipeline.

    Lower-cases (see `lowercase`), tokenizes without BOS, appends EOS and pads with the pad id
    (Gemma: EOS 1, pad 0; both read from the proto) to `sequence_length`. A text longer than
    that is truncated to its first `sequence_length - 1` tokens followed by EOS ("sticky" EOS),
    silently, as in big_vision. The empty string gives EOS followed by padding.

    Eagerly (any Keras backend) a call returns a numpy int32 array of shape
    `(sequence_length,)` for one text or `(batch, sequence_length)` for a list or 1-D array of
    texts; inside `tf.data` / `tf.function` it returns a `tf.Tensor` of the same shape.
    `detokenize` maps ids back to (lower-cased) text; pad and EOS are control pieces, which
    SentencePiece drops when decoding.

    Texts are Unicode: `str`, or bytes / `tf.string` holding UTF-8. Bytes that are not valid
    UTF-8 (and `str` with lone surrogates) are an error, never tokenized as they are: eagerly
    a ValueError naming the text (`text 3 is not valid UTF-8 ...`); inside `tf.data` /
    `tf.function` an InvalidArgumentError when the pipeline runs, with the offending texts.

    Args:
        proto: path of a SentencePiece `.model` file or its serialized bytes.
        sequence_length: length of the output ids (the text tower's 64 by default).
        lowercase: `"ascii"` (default, as big_vision: `tf.strings.lower`, A-Z only),
            `"unicode"` (full Unicode lower-casing, `tf.strings.lower(encoding="utf-8")`),
            or None/False for none. transformers' `Siglip2Tokenizer` lower-cases all of
            Unicode too, but without the Greek final-sigma rule.
        dtype: integer dtype of the ids.

    Usually built with `SigLIP2Tokenizer.from_preset("siglip2_base_patch16_224")` (or any
    handle `SigLIP2Backbone.from_preset` takes), which finds the Gemma vocabulary.

    Example:
    >>> import io, sentencepiece
    >>> proto = io.BytesIO()  # a toy vocabulary, in place of Gemma's `tokenizer.model`
    >>> sentencepiece.SentencePieceTrainer.train(
    ...     sentence_iterator=iter(["a photo of a cat", "two dogs in a park"]),
    ...     model_writer=proto, vocab_size=24, hard_vocab_limit=False,
    ...     pad_id=0, eos_id=1, bos_id=2, unk_id=3, minloglevel=2)
    >>> tokenizer = SigLIP2Tokenizer(proto.getvalue(), sequence_length=8)
    >>> ids = tokenizer(["A cat", ""])
    >>> ids.shape, ids.dtype.name, ids[1].tolist()
    ((2, 8), 'int32', [1, 0, 0, 0, 0, 0, 0, 0])
    >>> tokenizer.detokenize(ids)
    ['a cat', '']
    >>> try:
    ...     tokenizer([b"ok", b"caf\\xe9"])  # Latin-1 bytes, not UTF-8: an error
    ... except ValueError as error:
    ...     print(str(error).split("SigLIP2Tokenizer: ")[1][:25])
    text 1 is not valid UTF-8
    """

    backbone_cls = SigLIP2Backbone

    def __init__(self, proto=None, sequence_length=64, lowercase="ascii", dtype="int32", **kwargs):
        if lowercase is True:
            lowercase = "ascii"
        if lowercase not in LOWERCASE_MODES and lowercase is not False:
            raise ValueError(
                f"`lowercase` must be one of {LOWERCASE_MODES} or False; got {lowercase!r}."
            )
        if isinstance(sequence_length, bool) or not isinstance(sequence_length, int) or (
            sequence_length < 1
        ):
            raise ValueError(f"`sequence_length` must be an int >= 1; got {sequence_length!r}.")
        self.lowercase = lowercase or None
        super().__init__(
            proto=proto, sequence_length=sequence_length, dtype=dtype, add_bos=False,
            add_eos=False, **kwargs,
        )
        if not keras.backend.is_int_dtype(self.compute_dtype):
            raise ValueError(f"`dtype` must be an integer dtype; got {dtype!r}.")

    def set_proto(self, proto):
        if isinstance(proto, os.PathLike):
            proto = os.fspath(proto)
        # Paths are short; keras-hub reads long strings as a base64 proto.
        if isinstance(proto, str) and len(proto) <= 2048 and not os.path.isfile(proto):
            raise FileNotFoundError(
                f"SigLIP2Tokenizer: no SentencePiece model file at '{proto}' (expected the path "
                "of a `.model` file, e.g. Gemma's `tokenizer.model`, or its bytes)."
            )
        self._special_token_attrs = []
        try:
            super().set_proto(proto)
        except (RuntimeError, _tf().errors.OpError) as e:
            source = f"'{proto}'" if isinstance(proto, str) and len(proto) <= 2048 else "`proto`"
            raise ValueError(f"SigLIP2Tokenizer: {source} is not a SentencePiece model.") from e
        if self.proto is None:
            self._spm = self.end_token_id = self.pad_token_id = self.start_token_id = None
            return
        self._spm = sentencepiece.SentencePieceProcessor(model_proto=self.proto)
        eos = self._spm.eos_id()
        if eos < 0:  # A model trained with eos_id=-1: fall back on a piece named like EOS.
            ids = [self._spm.piece_to_id(piece) for piece in ("<eos>", "</s>")]
            eos = next((i for i in ids if i != self._spm.unk_id()), -1)
        if eos < 0:
            raise ValueError("SigLIP2Tokenizer: the SentencePiece model has no EOS piece.")
        pad = self._spm.pad_id()
        special = {"end_token": eos, "pad_token": pad if pad >= 0 else 0}
        if self._spm.bos_id() >= 0:
            special["start_token"] = self._spm.bos_id()
        for name, index in special.items():
            self._special_token_attrs.append(name)
            setattr(self, name, self._spm.id_to_piece(index))
            setattr(self, f"{name}_id", index)

    def _uses_tf(self):
        # Recent keras-hub runs eager calls in Python, graphs in TF; older ones only have TF.
        use_tf = getattr(self, "_use_tf_workflow", None)
        return use_tf() if use_tf is not None else True

    def tokenize(self, inputs):
        self._check_vocabulary()
        if self._uses_tf():
            return self._tokenize_graph(inputs)
        texts, batched = _as_strings(inputs)
        if self.lowercase == "ascii":
            texts = [t.translate(_ASCII_LOWER) for t in texts]
        elif self.lowercase == "unicode":
            texts = [t.lower() for t in texts]  # Full mapping, final sigma: as TF's ICU.
        length = self.sequence_length
        ids = np.full((len(texts), length), self.pad_token_id, self.compute_dtype)
        for row, tokens in zip(ids, self._spm.encode(texts)):
            tokens = tokens[: length - 1] + [self.end_token_id]
            row[: len(tokens)] = tokens
        return ids if batched else ids[0]

    def _tokenize_graph(self, inputs):
        tf = _tf()
        if tf.executing_eagerly():
            self._maybe_initialized_tf()
            sentence_piece = self._sentence_piece
        else:
            # One op per traced graph (tf.data map, tf.function), owning its model: an eager
            # op's resource is freed whenever TF clears its kernel cache, e.g. on
            # `keras.utils.set_random_seed`, which would break pipelines traced before.
            import tensorflow_text

            sentence_piece = tensorflow_text.SentencepieceTokenizer(
                model=self.proto, out_type=self.compute_dtype
            )
        inputs = tf.convert_to_tensor(inputs)
        if inputs.dtype != tf.string or inputs.shape.rank not in (0, 1):
            raise TypeError(
                "SigLIP2Tokenizer expects a 0-D or 1-D tf.string tensor inside tf.data / "
                f"tf.function; got {inputs.dtype.name} of shape {inputs.shape}."
            )
        texts = tf.reshape(inputs, [-1])
        if tf.executing_eagerly():
            for index, text in enumerate(texts.numpy()):
                _decode_utf8(text, index if inputs.shape.rank else None)
        else:
            texts = _tf_assert_utf8(texts)
        if self.lowercase:
            encoding = "utf-8" if self.lowercase == "unicode" else ""
            texts = tf.strings.lower(texts, encoding=encoding)
        tokens = sentence_piece.tokenize(texts)
        tokens = tokens[:, : self.sequence_length - 1]
        eos = tf.fill([tokens.nrows(), 1], tf.constant(self.end_token_id, tokens.dtype))
        tokens = tf.concat([tokens, tf.RaggedTensor.from_tensor(eos)], axis=1)
        tokens = tokens.to_tensor(self.pad_token_id, shape=[None, self.sequence_length])
        tokens = tokens if inputs.shape.rank == 1 else tokens[0]
        return tokens.numpy() if tf.executing_eagerly() else tokens

    def get_config(self):
        config = super().get_config()
        del config["add_bos"], config["add_eos"]
        config["lowercase"] = self.lowercase
        return config

    @classmethod
    def from_preset(cls, preset, config_file=_KERAS_CONFIG, source=None, **kwargs):
        """A tokenizer for any handle `SigLIP2Backbone.from_preset` takes, or a saved one.

        A directory written by `save_to_preset` (its `tokenizer.json`) loads with its saved
        settings. Any other handle (preset name, `hf://`, `kaggle://`, a transformers /
        keras-hub directory, a big_vision `.npz`) gives the SentencePiece model that goes with
        that checkpoint. `kwargs` (e.g. `sequence_length`, `dtype`) replace the settings.
        """
        local = os.path.expanduser(os.fspath(preset))
        if os.path.isdir(local) and _saved_by_keras(local, config_file):
            # As keras-hub's loader does, but a `dtype` given replaces the saved one, and a
            # tokenizer saved on its own (no config.json) loads too.
            with open(os.path.join(local, config_file), encoding="utf-8") as f:
                config = json.load(f)
            unknown = sorted(set(kwargs) - set(config["config"]))
            if unknown:  # from_config would bury this in a many-line message
                raise TypeError(f"{cls.__name__}.from_preset() got unexpected arguments {unknown}.")
            tokenizer = cls.from_config({**config["config"], **kwargs})
            tokenizer.load_preset_assets(local)
            return tokenizer
        proto = preset_registry.tokenizer_proto(preset, source=source)
        if proto is None:
            raise preset_registry.PresetError(
                f"'{preset}' has no SentencePiece vocabulary: expected `tokenizer.model` (or "
                "`spiece.model`) in a transformers directory, or "
                "`assets/tokenizer/vocabulary.spm` in a keras-hub or saved preset."
            )
        return cls(proto=os.fspath(proto), **kwargs)
