"""Load keras-hub `SigLIPBackbone` presets (e.g. `siglip2_base_patch16_224`) into `SigLIP2Backbone`.

A keras-hub preset directory holds `config.json` (the serialized
`keras_hub.models.SigLIPBackbone`), `model.weights.h5` (or, above keras-hub's
shard size, `model.weights.json` with `model_NNNNN.weights.h5` shards),
`tokenizer.json` with its vocabulary under `assets/tokenizer/vocabulary.spm`,
and `image_converter.json` and/or `preprocessor.json`.

The weights are read straight from the H5 file(s) Keras wrote, without
building keras-hub's model (Keras' own `load_weights` would ignore extra
tensors in the file): the towers are walked by `tower_walker` and every tensor
is mapped once through `WeightLoader`, so a tensor left over or a variable
left unset is an error.

Layout of the H5 file (Keras 3 `save_weights`): one group per layer, named after
the layer's class in snake case, numbered `_1`, `_2`, ... in the order the
layers appear in their parent (this is how Keras itself matches them up on
load), and each layer's own variables under `vars/0`, `vars/1`, ... in creation
order. For `SigLIPBackbone`:

    layers/sig_lip_vision_encoder/layers/sig_lip_vision_embedding/...
    layers/sig_lip_vision_encoder/layers/sig_lip_encoder_layer{,_1,...}/...
    layers/sig_lip_vision_encoder/layers/layer_normalization/...      (post LN)
    layers/sig_lip_vision_encoder/layers/sig_lip_multi_head_attention_pooling/...
    layers/sig_lip_text_encoder/layers/sig_lip_text_embedding/...
    layers/sig_lip_text_encoder/layers/sig_lip_encoder_layer{,_1,...}/...
    layers/sig_lip_text_encoder/layers/layer_normalization/...        (final LN)
    layers/sig_lip_text_encoder/layers/dense/...                      (text head)
    layers/sig_lip_head/vars/{0: logit_scale, 1: logit_bias}

Attention layers are `keras.layers.MultiHeadAttention`: q/k/v kernels
(D, heads, head_dim) and biases (heads, head_dim), output kernel
(heads, head_dim, D); ours are Dense (D, D) kernels with heads outermost on
the split axis, so they are plain reshapes.
"""

import json
import math
import os

import numpy as np

from keras_siglip2.converters.file_errors import CorruptFileError, read_json, reading
from keras_siglip2.converters.tower_walker import heads_layout, load_tensors, tower_tensors
from keras_siglip2.converters.weight_loader import WeightLoader, WeightLoadingError
from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.models.text_encoder import SigLIP2TextEncoder
from keras_siglip2.models.vision_encoder import SigLIP2VisionEncoder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
SHARDED_WEIGHTS_FILE = "model.weights.json"
TOKENIZER_FILE = "tokenizer.json"
IMAGE_CONVERTER_FILE = "image_converter.json"
PREPROCESSOR_FILE = "preprocessor.json"

_BACKBONE_CLASS = "SigLIPBackbone"
_VISION_CLASS = "SigLIPVisionEncoder"
_TEXT_CLASS = "SigLIPTextEncoder"
# keras-hub's name for the tanh-approximate GELU (transformers' `gelu_pytorch_tanh`).
_ACTIVATION = "gelu_approximate"
# keras-hub's vision tower hard-codes this epsilon for its post-encoder LayerNorm.
_VISION_POST_NORM_EPSILON = 1e-6

_COMMON_KEYS = {"name", "trainable", "dtype"}
_VISION_KEYS = _COMMON_KEYS | {
    "patch_size", "hidden_dim", "num_layers", "num_heads", "intermediate_dim",
    "intermediate_activation", "layer_norm_epsilon", "image_shape", "data_format",
}
_TEXT_KEYS = _COMMON_KEYS | {
    "vocabulary_size", "embedding_dim", "hidden_dim", "num_layers", "num_heads",
    "intermediate_dim", "intermediate_activation", "layer_norm_epsilon",
    "max_sequence_length", "projection_dim",
}
_BACKBONE_KEYS = _COMMON_KEYS | {"vision_encoder", "text_encoder"}


class KerasHubConversionError(ValueError):
    """A keras-hub preset that `SigLIP2Backbone` cannot represent or load."""


# ---------------------------------------------------------------------------
# Files


def _read_json(path, filename):
    file = os.path.join(path, filename)
    try:
        return read_json(file)
    except FileNotFoundError:
        raise KerasHubConversionError(
            f"keras-hub preset '{path}': `{filename}` is missing."
        ) from None


def _read_json_if_present(path, filename):
    if not os.path.isfile(os.path.join(path, filename)):
        return None
    return _read_json(path, filename)


def _is_keras_hub_object(config, class_name):
    if not isinstance(config, dict) or config.get("class_name") != class_name:
        return False
    registered = config.get("registered_name") or ""
    module = config.get("module") or ""
    return registered == f"keras_hub>{class_name}" or module.startswith("keras_hub")


def is_keras_hub_checkpoint(path):
    """True if `path` is a directory whose `config.json` is a keras-hub `SigLIPBackbone`.

    Our own `SigLIP2Backbone` presets (saved with `save_to_preset`) are not
    matched: they name `keras_siglip2>SigLIP2Backbone`.
    """
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return False
    try:
        config = _read_json(path, CONFIG_FILE)
    except (KerasHubConversionError, CorruptFileError):
        return False
    return _is_keras_hub_object(config, _BACKBONE_CLASS)


# ---------------------------------------------------------------------------
# Architecture


def _refuse(path, message):
    raise KerasHubConversionError(
        f"keras-hub preset '{path}' cannot be loaded as a SigLIP 2 backbone: {message}"
    )


def _check_keys(path, what, config, allowed):
    unknown = sorted(set(config) - allowed)
    if unknown:
        _refuse(
            path,
            f"its {what} config has fields this converter does not know: {unknown}. "
            "A newer keras-hub may have added an option that changes the "
            "architecture; refusing rather than ignoring it.",
        )


def _check_activation(path, what, config):
    activation = config.get("intermediate_activation", _ACTIVATION)
    if activation != _ACTIVATION:
        _refuse(
            path,
            f"the {what} MLP activation is {activation!r}; SigLIP 2 (and this "
            f"model) uses the tanh-approximate GELU ({_ACTIVATION!r}).",
        )


def _int(path, what, config, key):
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        _refuse(path, f"{what} `{key}` must be a positive integer, got {value!r}.")
    return value


def _saved_dtype_name(path, config):
    dtype = config.get("dtype")
    if dtype is None:
        return None
    if isinstance(dtype, str):
        name = dtype
    elif isinstance(dtype, dict) and dtype.get("class_name") == "DTypePolicy":
        name = (dtype.get("config") or {}).get("name")
    else:
        name = None
    if name not in ("float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16"):
        _refuse(
            path,
            f"its dtype policy {json.dumps(dtype)} is not a plain floating-point "
            "policy (quantized presets are not supported).",
        )
    return name


def architecture(path):
    """SigLIP2 constructor arguments read from a keras-hub preset's `config.json`.

    Returns a dict with `vision` (kwargs of `SigLIP2VisionEncoder`), `text`
    (kwargs of `SigLIP2TextEncoder`) and `saved_dtype` (the preset's dtype
    policy name). Raises `KerasHubConversionError` for any configuration
    SigLIP 2 cannot represent.
    """
    path = os.fspath(path)
    config = _read_json(path, CONFIG_FILE)
    if not _is_keras_hub_object(config, _BACKBONE_CLASS):
        _refuse(
            path,
            f"`{CONFIG_FILE}` names {config.get('registered_name') or config.get('class_name')!r}, "
            f"not keras-hub's {_BACKBONE_CLASS!r}.",
        )
    backbone = config.get("config") or {}
    _check_keys(path, "backbone", backbone, _BACKBONE_KEYS)
    vision_config = backbone.get("vision_encoder")
    text_config = backbone.get("text_encoder")
    if not _is_keras_hub_object(vision_config, _VISION_CLASS):
        _refuse(path, f"its vision encoder is not keras-hub's {_VISION_CLASS!r}.")
    if not _is_keras_hub_object(text_config, _TEXT_CLASS):
        _refuse(path, f"its text encoder is not keras-hub's {_TEXT_CLASS!r}.")
    vision_config = vision_config.get("config") or {}
    text_config = text_config.get("config") or {}
    _check_keys(path, "vision encoder", vision_config, _VISION_KEYS)
    _check_keys(path, "text encoder", text_config, _TEXT_KEYS)

    # --- Vision tower.
    _check_activation(path, "vision", vision_config)
    # Missing optional fields take keras-hub's constructor defaults.
    image_shape = vision_config.get("image_shape", (224, 224, 3))
    data_format = vision_config.get("data_format")
    if not isinstance(image_shape, (list, tuple)) or len(image_shape) != 3:
        _refuse(path, f"vision `image_shape` {image_shape!r} is not (height, width, 3).")
    if data_format == "channels_first" or (
        data_format is None and image_shape[0] == 3 and image_shape[-1] != 3
    ):
        channels, height, width = image_shape
    else:
        height, width, channels = image_shape
    if channels != 3 or height != width or not isinstance(height, int):
        _refuse(
            path,
            f"vision `image_shape` {list(image_shape)} is not a square RGB image "
            "of fixed size.",
        )
    vision_eps = vision_config.get("layer_norm_epsilon", 1e-6)
    if not math.isclose(vision_eps, _VISION_POST_NORM_EPSILON, rel_tol=1e-6):
        _refuse(
            path,
            f"vision `layer_norm_epsilon` is {vision_eps}, but keras-hub's vision "
            f"tower always uses {_VISION_POST_NORM_EPSILON} in its post-encoder "
            "LayerNorm; our tower uses one epsilon for all of its LayerNorms.",
        )
    vision = {
        "image_size": height,
        "patch_size": _int(path, "vision", vision_config, "patch_size"),
        "hidden_dim": _int(path, "vision", vision_config, "hidden_dim"),
        "num_layers": _int(path, "vision", vision_config, "num_layers"),
        "num_heads": _int(path, "vision", vision_config, "num_heads"),
        "intermediate_dim": _int(path, "vision", vision_config, "intermediate_dim"),
        "layer_norm_epsilon": vision_eps,
    }

    # --- Text tower.
    _check_activation(path, "text", text_config)
    hidden_dim = _int(path, "text", text_config, "hidden_dim")
    embedding_dim = _int(path, "text", text_config, "embedding_dim")
    if embedding_dim != hidden_dim:
        _refuse(
            path,
            f"text `embedding_dim` ({embedding_dim}, the token-embedding width) "
            f"differs from `hidden_dim` ({hidden_dim}); SigLIP 2 feeds the token "
            "embeddings straight into the encoder.",
        )
    projection_dim = text_config.get("projection_dim") or hidden_dim
    if isinstance(projection_dim, bool) or not isinstance(projection_dim, int):
        _refuse(path, f"text `projection_dim` must be an integer, got {projection_dim!r}.")
    text = {
        "vocabulary_size": _int(path, "text", text_config, "vocabulary_size"),
        "sequence_length": _int(
            path, "text", {"max_sequence_length": 64, **text_config}, "max_sequence_length"
        ),
        "hidden_dim": hidden_dim,
        "num_layers": _int(path, "text", text_config, "num_layers"),
        "num_heads": _int(path, "text", text_config, "num_heads"),
        "intermediate_dim": _int(path, "text", text_config, "intermediate_dim"),
        "embedding_dim": projection_dim,
        "layer_norm_epsilon": text_config.get("layer_norm_epsilon", 1e-6),
    }
    if projection_dim != vision["hidden_dim"]:
        _refuse(
            path,
            f"the text head projects to {projection_dim} but the image embedding "
            f"width is {vision['hidden_dim']}; keras-hub has no image projection, "
            "so the two must match.",
        )
    for sub in (vision_config, text_config):
        _saved_dtype_name(path, sub)
    return {"vision": vision, "text": text, "saved_dtype": _saved_dtype_name(path, backbone)}


# ---------------------------------------------------------------------------
# Weights


class _H5Tensors:
    """Read-only name → array mapping over the datasets of Keras weight H5 files.

    Datasets are read lazily, when the loader takes them; bfloat16 datasets
    (stored by Keras as opaque bytes tagged `dtype="bfloat16"`) are decoded.
    """

    def __init__(self, files):
        self._files = files
        self._datasets = {}
        import h5py

        for file in files:
            def visit(name, obj, file=file):
                if isinstance(obj, h5py.Dataset):
                    if name in self._datasets:
                        raise WeightLoadingError(
                            f"tensor '{name}' appears in more than one weight shard "
                            f"({file.filename})."
                        )
                    self._datasets[name] = obj

            with reading(file.filename, "h5"):  # reads every object header
                file.visititems(visit)

    def __contains__(self, key):
        return key in self._datasets

    def __iter__(self):
        return iter(self._datasets)

    def __len__(self):
        return len(self._datasets)

    def __getitem__(self, key):
        dataset = self._datasets[key]
        with reading(dataset.file.filename, "h5"):
            value = dataset[()]
        if dataset.attrs.get("dtype") == "bfloat16":
            import ml_dtypes

            value = np.asarray(value).view(ml_dtypes.bfloat16).reshape(dataset.shape)
        return np.asarray(value)

    def close(self):
        for file in self._files:
            file.close()


def _open_h5(file):
    import h5py

    with reading(file, "h5"):
        return h5py.File(file, "r")


def open_weights_file(file):
    """The name → array mapping of one Keras `.weights.h5` file; close it when done.

    Opening reads every object header, so a truncated or damaged file is a
    `CorruptFileError` naming it.

    Example:
    >>> import keras, os, tempfile
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> file = os.path.join(tempfile.mkdtemp(), "dense.weights.h5")
    >>> keras.saving.save_weights(layer, file)
    >>> tensors = open_weights_file(file)
    >>> sorted(tensors), tensors["vars/0"].shape
    (['vars/0', 'vars/1'], (3, 2))
    >>> tensors.close()
    """
    return _H5Tensors([_open_h5(file)])


def open_weights(path):
    """`(tensors, weights file)` of a preset directory's `model.weights.h5` (or its shards).

    Opening reads every object header, so a truncated or damaged file is a
    `CorruptFileError` naming it. Close `tensors` when done.
    """
    single = os.path.join(path, WEIGHTS_FILE)
    if os.path.isfile(single):
        return open_weights_file(single), single
    sharded = os.path.join(path, SHARDED_WEIGHTS_FILE)
    if os.path.isfile(sharded):
        weight_map = _read_json(path, SHARDED_WEIGHTS_FILE).get("weight_map") or {}
        names = set()
        for value in weight_map.values():
            names.update(value if isinstance(value, list) else [value])
        files = []
        try:
            for name in sorted(names):
                shard = os.path.join(path, name)
                if not os.path.isfile(shard):
                    raise KerasHubConversionError(
                        f"keras-hub preset '{path}': weight shard `{name}` listed in "
                        f"`{SHARDED_WEIGHTS_FILE}` is missing."
                    )
                files.append(_open_h5(shard))
        except Exception:
            for file in files:
                file.close()
            raise
        return _H5Tensors(files), sharded
    raise KerasHubConversionError(
        f"keras-hub preset '{path}': neither `{WEIGHTS_FILE}` nor "
        f"`{SHARDED_WEIGHTS_FILE}` is present."
    )


def _layer_group(class_snake, index):
    """The group Keras gives the `index`-th layer of one class inside its parent."""
    return class_snake if index == 0 else f"{class_snake}_{index}"


# Our layer / variable names → keras-hub's (unlisted names are the same). A layer's
# variables are `vars/0`, `vars/1`, ... in creation order: LayerNormalization
# creates gamma, then beta; Dense and EinsumDense the kernel, then the bias.
_NAMES = {
    "norm1": "layer_norm1", "norm2": "layer_norm2", "norm": "layer_norm",
    "query": "query_dense", "key": "key_dense", "value": "value_dense", "out": "output_dense",
    "gamma": "vars/0", "beta": "vars/1", "kernel": "vars/0", "bias": "vars/1", "probe": "vars/0",
}


_VISION = "layers/sig_lip_vision_encoder/layers"
_TEXT = "layers/sig_lip_text_encoder/layers"
_VISION_EMBEDDING = f"{_VISION}/sig_lip_vision_embedding"
_TEXT_EMBEDDING = f"{_TEXT}/sig_lip_text_embedding"


def _naming(tower, num_heads):
    """Names the tensors of `tower` (the group of its layers) in the H5 file."""

    def naming(path):
        where, *rest = path
        if where == "block":
            i, *rest = rest
            prefix = f"{tower}/{_layer_group('sig_lip_encoder_layer', i)}"
            rest = ["self_attn" if name == "attention" else name for name in rest]
        elif where == "final_norm":
            prefix = f"{tower}/layer_normalization"
        else:
            prefix = f"{tower}/sig_lip_multi_head_attention_pooling"
        key = "/".join([prefix, *(_NAMES.get(name, name) for name in rest)])
        return key, heads_layout(path, num_heads)

    return naming


def _check_position_ids(loader, key, length):
    ids = loader.take(key)
    if ids.shape != (1, length) or not np.array_equal(ids[0], np.arange(length)):
        raise WeightLoadingError(
            f"{loader.source_name}: '{key}' (shape {ids.shape}) is not the positions "
            f"0..{length - 1} in order, as (1, {length}); a permuted position table "
            "is not supported."
        )


def _backbone_tensors(backbone):
    vision, text = backbone.vision_encoder, backbone.text_encoder
    v, t, v_emb, t_emb = _VISION, _TEXT, _VISION_EMBEDDING, _TEXT_EMBEDDING
    return [
        # Conv2D kernel (kh, kw, in, out) in both models, whatever the data format.
        (f"{v_emb}/patch_embedding/vars/0", vision.patch_embedding.kernel, None),
        (f"{v_emb}/patch_embedding/vars/1", vision.patch_embedding.bias, None),
        (f"{v_emb}/position_embedding/vars/0",
         vision.position_embedding.position_embeddings, None),
        *tower_tensors(_naming(v, vision.encoder.num_heads), vision.encoder, vision.head),
        (f"{t_emb}/token_embedding/vars/0", text.token_embedding.embeddings, None),
        (f"{t_emb}/position_embedding/vars/0", text.position_embedding.position_embeddings, None),
        *tower_tensors(_naming(t, text.encoder.num_heads), text.encoder),
        (f"{t}/dense/vars/0", text.head.kernel, None),
        (f"{t}/dense/vars/1", text.head.bias, None),
        # SigLIPHead creates logit_scale (log-temperature), then logit_bias.
        ("layers/sig_lip_head/vars/0", backbone.logits_head.logit_scale, None),
        ("layers/sig_lip_head/vars/1", backbone.logits_head.logit_bias, None),
    ]


def _load_weights(loader, backbone):
    num_patches = backbone.vision_encoder.position_embedding.position_embeddings.shape[0]
    _check_position_ids(loader, f"{_VISION_EMBEDDING}/vars/0", num_patches)
    _check_position_ids(loader, f"{_TEXT_EMBEDDING}/vars/0", backbone.text_encoder.sequence_length)
    load_tensors(loader, _backbone_tensors(backbone))
    loader.finish(backbone)


def load_backbone(path, dtype=None, remat=False):
    """A `SigLIP2Backbone` with the architecture and weights of a keras-hub SigLIP preset.

    Args:
        path: a local keras-hub preset directory (`config.json`,
            `model.weights.h5`, ...) of a `keras_hub.models.SigLIPBackbone`.
        dtype: dtype policy of the returned model. `None` uses Keras' current
            default policy, as keras-hub does for a float preset (the saved
            weights are cast on load).
        remat: the towers' `remat` option.

    Raises:
        KerasHubConversionError: the configuration cannot be represented
            (another activation, mismatched widths, quantized weights, ...).
        WeightLoadingError: a tensor is missing, has the wrong shape, or is
            left unused.
    """
    path = os.fspath(path)
    arch = architecture(path)
    try:
        vision = SigLIP2VisionEncoder(**arch["vision"], dtype=dtype, remat=remat)
        text = SigLIP2TextEncoder(**arch["text"], dtype=dtype, remat=remat)
        backbone = SigLIP2Backbone(vision, text, dtype=dtype)
    except ValueError as e:
        raise KerasHubConversionError(
            f"keras-hub preset '{path}': SigLIP2Backbone cannot be built with the "
            f"preset's configuration {arch['vision']} / {arch['text']}: {e}"
        ) from e

    tensors, weights_file = open_weights(path)
    try:
        _load_weights(WeightLoader(tensors, f"keras-hub weights '{weights_file}'"), backbone)
    finally:
        tensors.close()
    return backbone


# ---------------------------------------------------------------------------
# Tokenizer and image converter


def tokenizer_class(path):
    """The keras-hub tokenizer class the preset names (e.g. `GemmaTokenizer`), or None.

    keras-hub's SigLIP 2 presets use `GemmaTokenizer` (Gemma vocabulary,
    256k); SigLIP 1 presets use `SigLIPTokenizer` (different vocabulary and
    special-token ids), so a caller should check this before pairing the
    vocabulary with a SigLIP 2 tokenizer.
    """
    config = _read_json_if_present(os.fspath(path), TOKENIZER_FILE)
    return None if config is None else config.get("class_name")


def tokenizer_proto(path):
    """Path of the preset's SentencePiece vocabulary, or None if it has none."""
    path = os.fspath(path)
    candidates = []
    config = _read_json_if_present(path, TOKENIZER_FILE)
    if config is not None:
        proto = (config.get("config") or {}).get("proto")
        if isinstance(proto, str) and proto:
            candidates.append(proto if os.path.isabs(proto) else os.path.join(path, proto))
    # keras-hub saves a tokenizer's assets under assets/<config file stem>/.
    candidates.append(os.path.join(path, "assets", "tokenizer", "vocabulary.spm"))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    return None


def image_config(path):
    """What the preset's keras-hub image converter does to an image.

    Read from `image_converter.json`, or from the `image_converter` inside
    `preprocessor.json`. Returns a dict with `image_size` ((height, width) or
    None), `interpolation`, `antialias`, `crop_to_aspect_ratio`,
    `pad_to_aspect_ratio`, `scale` and `offset` (per-channel lists or
    scalars, applied as `x * scale + offset` after resizing, on 0..255
    pixels), `value_range` (the output range for inputs in [0, 255], when
    scale and offset are given), `class_name` and `source` (the file read).
    Returns an empty dict if the preset has no image converter.
    """
    path = os.fspath(path)
    converter, source = None, None
    config = _read_json_if_present(path, IMAGE_CONVERTER_FILE)
    if config is not None:
        converter, source = config, IMAGE_CONVERTER_FILE
    else:
        config = _read_json_if_present(path, PREPROCESSOR_FILE)
        nested = ((config or {}).get("config") or {}).get("image_converter")
        if isinstance(nested, dict):
            converter, source = nested, PREPROCESSOR_FILE
    if converter is None:
        return {}
    c = dict(converter.get("config") or {})
    # Old keras-hub argument names, still accepted by `ImageConverter`.
    if c.get("image_size") is None and "height" in c and "width" in c:
        c["image_size"] = [c["height"], c["width"]]
    if "variance" in c and "mean" in c and c.get("offset") is None:
        std = [math.sqrt(v) for v in c["variance"]]
        base = c.get("scale") if c.get("scale") is not None else 1.0
        c["scale"] = [base / s for s in std]
        c["offset"] = [-m / s for m, s in zip(c["mean"], std)]
    scale, offset = c.get("scale"), c.get("offset")
    image_size = c.get("image_size")
    result = {
        "class_name": converter.get("class_name"),
        "source": source,
        "image_size": tuple(image_size) if image_size is not None else None,
        "interpolation": c.get("interpolation", "bilinear"),
        "antialias": bool(c.get("antialias", False)),
        "crop_to_aspect_ratio": bool(c.get("crop_to_aspect_ratio", True)),
        "pad_to_aspect_ratio": bool(c.get("pad_to_aspect_ratio", False)),
        "scale": scale,
        "offset": offset,
    }
    if scale is not None or offset is not None:
        s = np.asarray(1.0 if scale is None else scale, "float64")
        o = np.asarray(0.0 if offset is None else offset, "float64")
        lo, hi = np.broadcast_arrays(0.0 * s + o, 255.0 * s + o)
        result["value_range"] = (float(np.min(lo)), float(np.max(hi)))
    return result
