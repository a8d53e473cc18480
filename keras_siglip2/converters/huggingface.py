"""Load Hugging Face transformers SigLIP / SigLIP 2 checkpoints into `SigLIP2Backbone`.

Two checkpoint families are understood, both as a local directory holding
`config.json` and safetensors weights (`model.safetensors`, or a sharded
`model.safetensors.index.json` with its shards):

* `model_type: "siglip2"` (transformers' `Siglip2Model`): the NaFlex models
  (e.g. google/siglip2-base-patch16-naflex). Image tower: a Linear patch
  embedding on flattened patches and a square grid of position embeddings
  resized to each image's patch grid.
* `model_type: "siglip"` (transformers' `SiglipModel`): the fixed-resolution
  models (google/siglip2-*-patch16-224 and the like, and SigLIP 1). Image
  tower: a Conv2d patch embedding and a (num_patches, D) position table.

Only safetensors are read (with `safetensors`' NumPy API: no torch, never a
pickle). Every tensor goes through `WeightLoader`, so a missing, superfluous or
mis-shaped tensor is an error rather than a silently half-loaded model.

Layout notes (transformers → ours):
* `nn.Linear.weight` is (out, in); a Keras `Dense.kernel` is (in, out).
* `nn.Conv2d.weight` is (D, 3, P, P); a Keras `Conv2D.kernel` is (P, P, 3, D).
* The MAP head uses `torch.nn.MultiheadAttention`, whose `in_proj_weight`
  (3D, D) / `in_proj_bias` (3D,) stack query, key and value in that order.
* transformers' NaFlex image processor flattens each patch as (P, P, 3)
  row-major (rows, then columns, then channels), the same order as ours and
  big_vision's, so the NaFlex patch-embedding weight needs only a transpose.
* The NaFlex position embedding (num_patches, D) is a row-major
  (sqrt(num_patches), sqrt(num_patches), D) grid, rows first.
* `logit_scale` / `logit_bias` have shape (1,); transformers computes
  logits = exp(logit_scale) · cos + logit_bias, as we do.
"""

import math
import os

import ml_dtypes  # gives NumPy the "bfloat16" dtype, which safetensors reads BF16 tensors as
import numpy as np
from safetensors import safe_open

from keras_siglip2.converters.file_errors import read_json, reading
from keras_siglip2.converters.tower_walker import load_tensors, scalar, tower_tensors
from keras_siglip2.converters.weight_loader import WeightLoader, WeightLoadingError
from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.models.naflex_vision_encoder import SigLIP2NaFlexVisionEncoder
from keras_siglip2.models.text_encoder import SigLIP2TextEncoder
from keras_siglip2.models.vision_encoder import SigLIP2VisionEncoder

_MODEL_TYPES = ("siglip", "siglip2")
_SAFETENSORS = "model.safetensors"
_SAFETENSORS_INDEX = "model.safetensors.index.json"
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.model", "spiece.model")

# transformers' config defaults (SiglipTextConfig / Siglip2TextConfig and the
# vision configs): `save_pretrained` may leave out values equal to them.
_TEXT_DEFAULTS = {
    "vocab_size": 32000, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 64, "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6, "projection_size": None,
}
_VISION_DEFAULTS = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "num_channels": 3, "image_size": 224, "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "vision_use_head": True,
    "num_patches": 256,
}
_SUPPORTED_ACTIVATIONS = ("gelu_pytorch_tanh",)


# ---------------------------------------------------------------------------
# Directory inspection
# ---------------------------------------------------------------------------


def _read_config(path):
    return read_json(os.path.join(path, "config.json"))


def is_huggingface_checkpoint(path):
    """True if `path` is a directory whose `config.json` has model_type siglip or siglip2."""
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "config.json")):
        return False
    try:
        config = _read_config(path)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") in _MODEL_TYPES


def tokenizer_proto(path):
    """Path of the SentencePiece model (`tokenizer.model` or `spiece.model`) in `path`, or None."""
    for name in _TOKENIZER_FILES:
        candidate = os.path.join(os.fspath(path), name)
        if os.path.isfile(candidate):
            return candidate
    return None


# ---------------------------------------------------------------------------
# Reading safetensors lazily (one tensor in memory at a time)
# ---------------------------------------------------------------------------


class _SafetensorsTensors:
    """A read-only name → NumPy array mapping over one or more safetensors files.

    Tensors are read on access, so loading a large checkpoint never holds it
    all in memory twice.
    """

    def __init__(self, files):
        self._file_of = {}
        for filename in files:
            # safetensors checks the header against the file's size: a cut-short file fails.
            with reading(filename, "safetensors"), safe_open(filename, framework="np") as f:
                for key in f.keys():  # a safe_open handle, not a dict
                    if key in self._file_of:
                        raise WeightLoadingError(
                            f"Tensor '{key}' appears in both {self._file_of[key]} "
                            f"and {filename}."
                        )
                    self._file_of[key] = filename

    def __contains__(self, key):
        return key in self._file_of

    def __iter__(self):
        return iter(self._file_of)

    def __len__(self):
        return len(self._file_of)

    def keys(self):
        return self._file_of.keys()

    def __getitem__(self, key):
        filename = self._file_of[key]
        with reading(filename, "safetensors"), safe_open(filename, framework="np") as f:
            tensor = f.get_tensor(key)
        # BF16 (ml_dtypes' bfloat16, which NumPy cannot compute in) widens exactly to float32.
        return tensor.astype(np.float32) if tensor.dtype == ml_dtypes.bfloat16 else tensor


def _weight_files(path):
    index = os.path.join(path, _SAFETENSORS_INDEX)
    single = os.path.join(path, _SAFETENSORS)
    if os.path.isfile(index):
        weight_map = read_json(index)["weight_map"]
        files = [os.path.join(path, name) for name in sorted(set(weight_map.values()))]
        missing = [name for name in files if not os.path.isfile(name)]
        if missing:
            raise FileNotFoundError(
                f"{index} lists shards that are not in the directory: {missing}"
            )
        return files
    if os.path.isfile(single):
        return [single]
    if any(os.path.isfile(os.path.join(path, name)) for name in _PICKLE_WEIGHTS):
        raise ValueError(
            f"{path} holds only PyTorch pickle weights (pytorch_model.bin), which are "
            "never loaded here (unpickling can run arbitrary code). Convert them to "
            "safetensors first, where you trust the file, e.g. with transformers: "
            "`AutoModel.from_pretrained(path).save_pretrained(new_path)` (recent "
            f"versions write {_SAFETENSORS}; older ones need safe_serialization=True)."
        )
    raise FileNotFoundError(
        f"No {_SAFETENSORS} or {_SAFETENSORS_INDEX} in {path}."
    )


def _find_prefix(tensors):
    """Returns the key prefix under which the model sits ('' for a plain save)."""
    if "logit_scale" in tensors:
        return ""
    prefixes = [k[: -len("logit_scale")] for k in tensors if k.endswith(".logit_scale")]
    if len(prefixes) == 1:
        return prefixes[0]
    raise WeightLoadingError(
        "The checkpoint has no 'logit_scale' tensor: it is not a two-tower "
        "SiglipModel / Siglip2Model save (a vision- or text-only model?)."
    )


# ---------------------------------------------------------------------------
# Architecture from config.json
# ---------------------------------------------------------------------------


def _sub_config(config, key, defaults):
    sub = config.get(key) or {}
    return {**defaults, **{k: v for k, v in sub.items() if v is not None or k not in defaults}}


def _square(value, name):
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"Only square {name} is supported, config gives {value}.")
        value = value[0]
    return int(value)


def _check_common(sub, tower, path):
    act = sub["hidden_act"]
    if act not in _SUPPORTED_ACTIVATIONS:
        raise ValueError(
            f"{path}: the {tower} tower's hidden_act is '{act}', but this model "
            "implements only 'gelu_pytorch_tanh' (the tanh-approximate GELU that "
            "SigLIP / SigLIP 2 use). Loading it would give wrong outputs."
        )
    if sub["hidden_size"] % sub["num_attention_heads"]:
        raise ValueError(
            f"{path}: the {tower} tower's hidden_size {sub['hidden_size']} is not "
            f"divisible by num_attention_heads {sub['num_attention_heads']}."
        )


def _build_backbone(config, path, dtype, remat):
    model_type = config["model_type"]
    text = _sub_config(config, "text_config", _TEXT_DEFAULTS)
    vision = _sub_config(config, "vision_config", _VISION_DEFAULTS)
    _check_common(text, "text", path)
    _check_common(vision, "image", path)
    if not vision["vision_use_head"]:
        raise ValueError(
            f"{path}: vision_use_head is false; SigLIP2Backbone needs the MAP head."
        )
    if vision["num_channels"] != 3:
        raise ValueError(f"{path}: num_channels is {vision['num_channels']}, not 3.")

    patch_size = _square(vision["patch_size"], "patch_size")
    common = {
        "hidden_dim": vision["hidden_size"],
        "num_layers": vision["num_hidden_layers"],
        "num_heads": vision["num_attention_heads"],
        "intermediate_dim": vision["intermediate_size"],
        "layer_norm_epsilon": vision["layer_norm_eps"],
        "dtype": dtype,
        "remat": remat,
    }
    if model_type == "siglip2":
        grid = math.isqrt(vision["num_patches"])
        if grid * grid != vision["num_patches"]:
            raise ValueError(
                f"{path}: num_patches {vision['num_patches']} is not a square number."
            )
        vision_encoder = SigLIP2NaFlexVisionEncoder(
            patch_size=patch_size, position_grid_size=grid, name="vision_encoder", **common
        )
    else:
        vision_encoder = SigLIP2VisionEncoder(
            image_size=_square(vision["image_size"], "image_size"),
            patch_size=patch_size, name="vision_encoder", **common,
        )
    text_encoder = SigLIP2TextEncoder(
        vocabulary_size=text["vocab_size"],
        sequence_length=text["max_position_embeddings"],
        hidden_dim=text["hidden_size"],
        num_layers=text["num_hidden_layers"],
        num_heads=text["num_attention_heads"],
        intermediate_dim=text["intermediate_size"],
        embedding_dim=text["projection_size"] or text["hidden_size"],
        layer_norm_epsilon=text["layer_norm_eps"],
        dtype=dtype,
        remat=remat,
        name="text_encoder",
    )
    return SigLIP2Backbone(vision_encoder, text_encoder, dtype=dtype)


# ---------------------------------------------------------------------------
# Weight mapping
# ---------------------------------------------------------------------------


# Our layer / variable names → transformers' (unlisted names are the same).
_NAMES = {
    "norm1": "layer_norm1", "norm2": "layer_norm2", "norm": "layernorm",
    "query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "out_proj",
    "gamma": "weight", "beta": "bias", "kernel": "weight",
}
_QKV = ("query", "key", "value")


def _packed_qkv(index, then):
    def pick(x):
        if x.shape[0] % 3:
            raise ValueError("expected query, key and value stacked on the first axis (3·D, ...)")
        part = np.split(x, 3)[index]
        return part if then is None else then(part)

    return pick


def _naming(tower, final_norm):
    """Names the tensors of `tower` ("vision_model" / "text_model"), its last LN `final_norm`."""

    def naming(path):
        where, *rest = path
        transform = np.transpose if rest[-1] == "kernel" else None  # Linear.weight is (out, in)
        if where == "block":
            i, *rest = rest
            prefix = f"{tower}.encoder.layers.{i}"
            rest = ["self_attn" if name == "attention" else name for name in rest]
        elif where == "final_norm":
            prefix = f"{tower}.{final_norm}"
        else:
            prefix = f"{tower}.head"
            if rest[0] == "attention" and rest[1] in _QKV:
                # torch.nn.MultiheadAttention packs q, k, v into in_proj_weight / in_proj_bias.
                key = f"{prefix}.attention.in_proj_{_NAMES.get(rest[2], rest[2])}"
                return key, _packed_qkv(_QKV.index(rest[1]), transform)
        return ".".join([prefix, *(_NAMES.get(name, name) for name in rest)]), transform

    return naming


def _naflex_positions(grid):
    def to_grid(x):  # (num_patches, D), rows first
        if x.shape[0] != grid * grid:
            raise ValueError(f"expected num_patches = {grid}² = {grid * grid} rows")
        return x.reshape(grid, grid, -1)

    return to_grid


def _conv_kernel(x):  # Conv2d (D, 3, P, P) → Keras Conv2D (P, P, 3, D)
    if x.ndim != 4:
        raise ValueError("expected a Conv2d patch embedding (D, 3, P, P)")
    return x.transpose(2, 3, 1, 0)


def _backbone_tensors(backbone):
    vision, text = backbone.vision_encoder, backbone.text_encoder
    v, t = "vision_model.embeddings", "text_model.embeddings"
    if backbone.is_naflex:
        # (D, P·P·3) on patches flattened as (P, P, 3) row-major, like ours.
        patches = (f"{v}.patch_embedding.weight", vision.patch_embedding.kernel, np.transpose)
        positions = (
            f"{v}.position_embedding.weight", vision.position_embedding.embeddings,
            _naflex_positions(vision.position_embedding.grid_size),
        )
    else:
        patches = (f"{v}.patch_embedding.weight", vision.patch_embedding.kernel, _conv_kernel)
        positions = (
            f"{v}.position_embedding.weight", vision.position_embedding.position_embeddings, None
        )
    return [
        patches,
        (f"{v}.patch_embedding.bias", vision.patch_embedding.bias, None),
        positions,
        *tower_tensors(_naming("vision_model", "post_layernorm"), vision.encoder, vision.head),
        (f"{t}.token_embedding.weight", text.token_embedding.embeddings, None),
        (f"{t}.position_embedding.weight", text.position_embedding.position_embeddings, None),
        *tower_tensors(_naming("text_model", "final_layer_norm"), text.encoder),
        ("text_model.head.weight", text.head.kernel, np.transpose),
        ("text_model.head.bias", text.head.bias, None),
        ("logit_scale", backbone.logits_head.logit_scale, scalar),
        ("logit_bias", backbone.logits_head.logit_bias, scalar),
    ]


def _load_weights(backbone, tensors, source_name, prefix):
    loader = WeightLoader(_Prefixed(tensors, prefix) if prefix else tensors, source_name)
    load_tensors(loader, _backbone_tensors(backbone))
    loader.finish(backbone)


class _Prefixed:
    """View of a tensor mapping with `prefix` removed from every key."""

    def __init__(self, tensors, prefix):
        self._tensors = tensors
        self._prefix = prefix

    def __contains__(self, key):
        return self._prefix + key in self._tensors

    def __iter__(self):
        # Keys outside the prefix are kept whole, so `finish` reports them unused.
        n = len(self._prefix)
        return (k[n:] if k.startswith(self._prefix) else k for k in self._tensors)

    def __getitem__(self, key):
        return self._tensors[self._prefix + key]


def load_backbone(path, dtype=None, remat=False):
    """A `SigLIP2Backbone` with the weights of a transformers SigLIP / SigLIP 2 checkpoint.

    Args:
        path: a local directory with `config.json` (model_type "siglip" for
            fixed-resolution models, "siglip2" for NaFlex ones) and
            `model.safetensors` (or a sharded `model.safetensors.index.json`).
        dtype: the backbone's dtype policy (e.g. "bfloat16"); default float32.
        remat: the towers' `remat` option.

    Raises:
        ValueError: unsupported architecture (e.g. another activation).
        WeightLoadingError: a tensor is missing, unused or mis-shaped.

    Example:
    >>> backbone = load_backbone("siglip2-base-patch16-naflex")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not is_huggingface_checkpoint(path):
        raise ValueError(
            f"{path} is not a transformers SigLIP checkpoint directory (a config.json "
            f"with model_type one of {_MODEL_TYPES})."
        )
    config = _read_config(path)
    files = _weight_files(path)
    tensors = _SafetensorsTensors(files)
    prefix = _find_prefix(tensors)
    backbone = _build_backbone(config, path, dtype, remat)
    _load_weights(backbone, tensors, f"Checkpoint {path}", prefix)
    return backbone
