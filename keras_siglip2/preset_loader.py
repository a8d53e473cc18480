"""One `from_preset` for every source of SigLIP 2 weights.

A handle is one of: a preset name of ours (`siglip2_base_patch16_224`, see
`presets/`); `hf://owner/name` (transformers' Siglip/Siglip2 format);
`kaggle://...` (a keras-hub preset); a local directory in any of those formats
or saved by `save_to_preset`; a local path or `https://` / `gs://` URL of a
big_vision `.npz`. The format is detected from the files themselves.
"""

import json
import os
import pathlib

import keras
import keras_hub

from keras_siglip2._compat import KerasPresetLoader, get_file
from keras_siglip2.converters import big_vision, download, huggingface
from keras_siglip2.converters.file_errors import read_json
from keras_siglip2.converters.weight_loader import check_finite
from keras_siglip2.converters import keras_hub as keras_hub_converter
from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.models.naflex_vision_encoder import SigLIP2NaFlexVisionEncoder
from keras_siglip2.models.text_encoder import SigLIP2TextEncoder
from keras_siglip2.models.vision_encoder import SigLIP2VisionEncoder
from keras_siglip2.preset_registry import PresetError, register
from keras_siglip2.presets import PRESETS

# big_vision's checkpoints ship without a tokenizer; this is the Gemma
# SentencePiece model its SigLIP 2 demo tokenizes with.
BIG_VISION_TOKENIZER = "gs://big_vision/gemma_tokenizer.model"
SOURCES = ("big_vision", "huggingface", "keras_hub")
_HUGGINGFACE_FILES = (
    "config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.model",
)
_REMOTE_HOSTS = {"hf://": "huggingface.co", "kaggle://": "api.kaggle.com"}


def build_backbone(backbone_config, dtype=None, remat=False):
    """A randomly initialised backbone from a preset's `backbone` section.

    Example:
    >>> from keras_siglip2.presets import PRESETS
    >>> config = PRESETS["siglip2_base_patch16_224"]["backbone"]
    >>> config["vision_encoder"]["image_size"]
    224
    """
    vision_cls = (
        SigLIP2NaFlexVisionEncoder if backbone_config["naflex"] else SigLIP2VisionEncoder
    )
    return SigLIP2Backbone(
        vision_cls(**backbone_config["vision_encoder"], dtype=dtype, remat=remat),
        SigLIP2TextEncoder(**backbone_config["text_encoder"], dtype=dtype, remat=remat),
        dtype=dtype,
    )


def _check_reachable(handle, timeout=5.0):
    """Fails fast, naming the handle, where the hub's host cannot be reached."""
    prefix = next(p for p in _REMOTE_HOSTS if handle.startswith(p))
    host = _REMOTE_HOSTS[prefix]
    try:
        download.check_reachable(host, 443, timeout)
    except OSError as e:
        raise download.DownloadError(
            f"Cannot reach {host} to fetch '{handle}' ({e}). If this machine is "
            "offline, download the checkpoint's files elsewhere (for hf://, the "
            "repository's config.json, *.safetensors and tokenizer.model; for "
            "kaggle://, the whole preset directory), copy them here and pass the "
            "local directory instead of the handle; or convert it once with "
            "`python -m keras_siglip2 convert HANDLE DIR` on a machine online."
        ) from e


def _fetch_remote(handle):
    """Downloads an hf:// or kaggle:// checkpoint, returning its local directory."""
    _check_reachable(handle)
    if handle.startswith("kaggle://"):
        return pathlib.Path(get_file(handle, "config.json")).parent
    files = {}
    for name in _HUGGINGFACE_FILES:
        try:
            files[name] = pathlib.Path(get_file(handle, name))
        except FileNotFoundError:
            continue
    if "config.json" not in files:
        raise PresetError(f"'{handle}' has no config.json: it is not a transformers checkpoint.")
    index = files.get("model.safetensors.index.json")
    if index is not None:
        for shard in sorted(set(read_json(index)["weight_map"].values())):
            get_file(handle, shard)
    return files["config.json"].parent


def resolve(handle, source=None):
    """Returns `(format, local_path)` for `handle`, downloading if needed.

    `format` is one of "keras" (saved by `save_to_preset`), "keras_hub",
    "huggingface", "big_vision". `source` picks which published copy a preset
    name loads from (default: big_vision, the authors' own checkpoints).
    """
    handle = os.fspath(handle)
    if handle in PRESETS:
        sources = PRESETS[handle]["sources"]
        source = source or "big_vision"
        if source not in sources:
            raise PresetError(
                f"Preset '{handle}' has no '{source}' source; it has {sorted(sources)}."
            )
        return resolve(sources[source])
    if source is not None:
        raise PresetError("`source` only applies to preset names of ours.")
    if handle.startswith(tuple(_REMOTE_HOSTS)):
        return _detect(_fetch_remote(handle), handle)
    if download.is_url(handle):
        return "big_vision", download.download(handle)
    path = pathlib.Path(handle).expanduser()
    if not path.exists():
        close = [name for name in PRESETS if name.startswith(handle[:12])][:5]
        raise PresetError(
            f"'{handle}' is neither a preset name, an hf:// / kaggle:// handle, a "
            f"URL nor an existing path. Preset names: {close or sorted(PRESETS)}."
        )
    return _detect(path, handle)


def _detect(path, handle):
    if big_vision.is_big_vision_checkpoint(path):
        return "big_vision", path
    if huggingface.is_huggingface_checkpoint(path):
        return "huggingface", path
    if keras_hub_converter.is_keras_hub_checkpoint(path):
        return "keras_hub", path
    config = path / "config.json"
    if config.is_file() and "SigLIP2Backbone" in json.dumps(read_json(config)):
        return "keras", path
    if path.is_file() and path.suffix.lower() == ".npz":
        big_vision.NpzCheckpoint(path, str(path)).close()  # says so if it is corrupt
    raise PresetError(
        f"'{handle}' is not a SigLIP 2 checkpoint in a known format: expected a "
        "big_vision .npz, a transformers directory (config.json with model_type "
        "siglip/siglip2 and model.safetensors), a keras-hub SigLIP preset, or a "
        "directory written by `save_to_preset`."
    )


def _load_saved_preset(path, dtype, remat):
    """A directory written by `save_to_preset`, through keras-hub's loader, checked.

    `dtype` and `remat`, where not None, replace the saved ones of both towers (keras-hub
    gives its options to the backbone's config only). Its weight file is opened first, so a
    truncated one is an error naming it; every loaded weight must be finite.
    """
    tensors, weights_file = keras_hub_converter.open_weights(path)
    tensors.close()
    config = read_json(path / "config.json")
    options = {k: v for k, v in {"dtype": dtype, "remat": remat}.items() if v is not None}
    for tower in ("vision_encoder", "text_encoder"):
        config["config"][tower]["config"].update(options)
    backbone = KerasPresetLoader(str(path), config).load_backbone(
        SigLIP2Backbone, load_weights=True, dtype=dtype
    )
    for variable in backbone.weights:
        check_finite(keras.ops.convert_to_numpy(variable), variable.path, weights_file)
    return backbone


def load_backbone(handle, dtype=None, source=None, load_weights=True, remat=None):
    """`SigLIP2Backbone.from_preset`: see the module docstring for handles.

    `remat=None` keeps a saved preset's setting (False for the other sources).
    """
    if not load_weights:
        if handle not in PRESETS:
            raise PresetError(
                "load_weights=False builds a randomly initialised model and needs "
                f"a preset name; got '{handle}'."
            )
        return build_backbone(PRESETS[handle]["backbone"], dtype=dtype, remat=bool(remat))
    fmt, path = resolve(handle, source)
    if fmt == "keras":
        return _load_saved_preset(path, dtype, remat)
    if fmt == "big_vision" and handle in PRESETS:
        # The weights alone cannot tell 384 px at patch 14 from 378 px.
        image_size = PRESETS[handle]["backbone"]["vision_encoder"].get("image_size")
        return big_vision.load_backbone(
            path, dtype=dtype, image_size=image_size, remat=bool(remat)
        )
    converter = {
        "big_vision": big_vision, "huggingface": huggingface, "keras_hub": keras_hub_converter,
    }[fmt]
    return converter.load_backbone(path, dtype=dtype, remat=bool(remat))


def _saved_class(config_file):
    """The registered class a Keras `config.json` names, or None."""
    try:
        with open(config_file, encoding="utf-8") as f:
            return keras.saving.get_registered_object(str(json.load(f).get("registered_name")))
    except (OSError, ValueError):
        return None


def load_tower(tower_cls, handle, source=None, dtype=None, remat=None):
    """`tower_cls.from_preset`: the tower of that class in a two-tower checkpoint.

    A tower saved on its own (`encoder.save_to_preset`) loads as keras-hub loads it.
    """
    local = os.path.expanduser(os.fspath(handle))
    if _saved_class(os.path.join(local, "config.json")) is tower_cls:
        options = {k: v for k, v in {"dtype": dtype, "remat": remat}.items() if v is not None}
        # keras-hub's own loader (the tower's `from_preset` is `TowerFromPreset`'s).
        return keras_hub.models.Backbone.from_preset.__func__(tower_cls, local, **options)
    backbone = load_backbone(handle, source=source, dtype=dtype, remat=remat)
    if tower_cls is type(backbone.text_encoder):
        return backbone.text_encoder
    if tower_cls is not type(backbone.vision_encoder):
        other = type(backbone.vision_encoder).__name__
        raise ValueError(
            f"'{handle}' has a {other} image tower: load it with {other}.from_preset."
        )
    return backbone.vision_encoder


def tokenizer_proto(handle, source=None):
    """Local path of the Gemma SentencePiece model that goes with `handle`."""
    fmt, path = resolve(handle, source)
    if fmt == "big_vision":
        return download.download(BIG_VISION_TOKENIZER)
    if fmt == "keras":
        proto = path / "assets" / "tokenizer" / "vocabulary.spm"
        return proto if proto.is_file() else None
    converter = huggingface if fmt == "huggingface" else keras_hub_converter
    return converter.tokenizer_proto(path)


# The released NaFlex checkpoints' default sequence length.
NAFLEX_DEFAULT_PATCHES = 256


def _vision_image_config(naflex, vision):
    if naflex:
        return {"patch_size": vision["patch_size"], "max_num_patches": NAFLEX_DEFAULT_PATCHES}
    return {"image_size": vision["image_size"]}


def image_config(handle, source=None):
    """The image pipeline for `handle`'s checkpoint, read without loading weights.

    Returns `{"image_size": S}` (fixed resolution, big_vision's resize) or
    `{"patch_size": P, "max_num_patches": N}` (NaFlex; N from the
    checkpoint's image-processor config where it has one, else 256).
    """
    handle = os.fspath(handle)
    if handle in PRESETS:
        return dict(PRESETS[handle]["image"])
    fmt, path = resolve(handle, source)
    if fmt == "huggingface":
        config = read_json(path / "config.json")
        vision = config.get("vision_config", {})
        if config.get("model_type") != "siglip2":
            return {"image_size": vision.get("image_size", 224)}
        processor = path / "preprocessor_config.json"
        processor = read_json(processor) if processor.is_file() else {}
        return {
            "patch_size": processor.get("patch_size", vision.get("patch_size", 16)),
            "max_num_patches": processor.get("max_num_patches", NAFLEX_DEFAULT_PATCHES),
        }
    if fmt == "keras_hub":
        size = (keras_hub_converter.image_config(path).get("image_size") or [None])[0]
        if size is None:  # no image converter saved: the tower's input size
            size = read_json(path / "config.json")["config"]["vision_encoder"][
                "config"]["image_shape"][0]
        return {"image_size": int(size)}
    if fmt == "keras":
        saved = path / keras_hub_converter.IMAGE_CONVERTER_FILE  # a trained checkpoint's
        if saved.is_file():
            config = read_json(saved)["config"]
            if "max_num_patches" in config:
                return {k: config[k] for k in ("patch_size", "max_num_patches")}
            return {"image_size": tuple(config["image_size"])}
        config = read_json(path / "config.json")["config"]
        vision = config["vision_encoder"]
        return _vision_image_config(
            "NaFlex" in vision["class_name"], vision["config"]
        )
    checkpoint = big_vision.NpzCheckpoint(path, str(handle))
    try:
        inferred = big_vision.infer_config(checkpoint.shapes, str(handle))
    finally:
        checkpoint.close()
    return _vision_image_config(inferred["naflex"], inferred["vision"])


# What the models, the tokenizer and the image converters call (`preset_registry`).
register(
    load_backbone=load_backbone, load_tower=load_tower, tokenizer_proto=tokenizer_proto,
    image_config=image_config,
)
