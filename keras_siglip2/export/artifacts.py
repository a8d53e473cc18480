"""`export_encoders`: the image and text towers as serving artefacts in one directory.

Layout of `destination` (`<ext>`: nothing for `tf_saved_model`, whose artefacts are
SavedModel directories, `.onnx`, `.tflite`):

    image_encoder<ext>   the image tower (see `encoders.py` for inputs and outputs)
    text_encoder<ext>    the text tower on `token_ids`; a SavedModel also has the endpoint
                         `serve_text` on raw strings `text` when a tokenizer is given
    tokenizer.model      the SentencePiece model (when a tokenizer is given), to tokenize
                         outside the graph
    export.json          what each artefact takes and returns, the image and text
                         pipelines, and the logit scale and bias:
                         p(match) = sigmoid(exp(logit_scale) · ⟨image, text⟩ + logit_bias)

Every artefact has a dynamic batch size; a NaFlex image tower is exported for one fixed
`max_num_patches`. The LocCa decoder and the distillation teacher are not part of it.

Every format is written from every backend: where the current one cannot write it natively
(`support.py`), the model is exported by TensorFlow in a child process (`child.py`).
"""

import json
import os
import pathlib
import sys

import keras

from keras_siglip2.export.child import export_in_child
from keras_siglip2.export.encoders import (
    OUTPUTS, check_image_options, check_max_num_patches, image_encoder_model,
    text_encoder_model,
)
from keras_siglip2.export.saved_model import write_saved_model
from keras_siglip2.export.support import check_format, export_backend
from keras_siglip2.export.torch_onnx import write_onnx_from_torch
from keras_siglip2.preset_loader import (
    NAFLEX_DEFAULT_PATCHES, PresetError, image_config, load_backbone,
)
from keras_siglip2.tokenizer import SigLIP2Tokenizer

ENCODERS = ("image", "text")
_EXTENSIONS = {"tf_saved_model": "", "onnx": ".onnx", "litert": ".tflite"}
TOKENIZER_FILE = "tokenizer.model"
CONFIG_FILE = "export.json"


def _load(handle, tokenizer, max_num_patches):
    backbone = load_backbone(handle)
    if backbone.is_naflex and max_num_patches is None:
        max_num_patches = image_config(handle)["max_num_patches"]
    if tokenizer is None:
        try:
            tokenizer = SigLIP2Tokenizer.from_preset(handle)
        except PresetError:  # a checkpoint without a vocabulary: token ids only
            tokenizer = None
    return backbone, tokenizer, max_num_patches


def _write(model, path, format, tokenizer):
    if format == "tf_saved_model":
        write_saved_model(model, path, tokenizer)
    elif format == "onnx" and keras.config.backend() == "torch":
        write_onnx_from_torch(model, path)
    else:
        # `Model.export` takes its input signature from a model called once.
        model(keras.tree.map_structure(
            lambda x: keras.ops.zeros((1, *x.shape[1:]), x.dtype), model.input
        ))
        model.export(str(path), format=format, verbose=False)


def _spec(tensor):
    return {"shape": [None, *tensor.shape[1:]], "dtype": tensor.dtype}


def _describe(model, path, destination):
    return {
        "path": path.relative_to(destination).as_posix(),
        "inputs": {k: _spec(v) for k, v in model.input.items()},
        "outputs": {k: _spec(model.output[k]) for k in OUTPUTS},
    }


def export_encoders(
    backbone_or_preset,
    destination,
    format="tf_saved_model",
    tokenizer=None,
    max_num_patches=None,
    encoders=ENCODERS,
):
    """Exports the image and text towers to `destination` (layout: the module docstring).

    Args:
        backbone_or_preset: a `SigLIP2Backbone`, or any handle `SigLIP2Backbone.from_preset`
            takes (its tokenizer and NaFlex sequence length are then read from it too).
        destination: directory to write to (created; artefacts already there are replaced).
        format: "tf_saved_model", "onnx" or "litert", from any Keras backend. Where the
            current one cannot write `format` (`keras_siglip2.export.support`), the model is
            saved and exported by TensorFlow in a child process (one line on stderr says
            so), with the same artefacts and `export.json`.
        tokenizer: a `SigLIP2Tokenizer`; by default the preset's (when it has one). Saved as
            `tokenizer.model`, and inside the text SavedModel (endpoint `serve_text`).
        max_num_patches: NaFlex only: the fixed number of patches N of the exported image
            tower (default: the preset's, 256 for a backbone object).
        encoders: which towers to export, a subset of ("image", "text").

    Returns:
        A dict "image"/"text" → path of the artefact written.

    Example:
    >>> import tempfile
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone(image_size=32, patch_size=16, sequence_length=8)
    >>> format = "onnx" if keras.config.backend() == "torch" else "tf_saved_model"
    >>> paths = export_encoders(backbone, tempfile.mkdtemp(), format, encoders=("text",))
    >>> paths["text"].name in ("text_encoder", "text_encoder.onnx")
    True
    >>> json.loads((paths["text"].parent / "export.json").read_text())["text_encoder"]["inputs"]
    {'token_ids': {'shape': [None, 8], 'dtype': 'int32'}}
    """
    check_format(format)
    unknown = set(encoders) - set(ENCODERS)
    if unknown or not encoders:
        raise ValueError(
            f"`encoders` must be a non-empty subset of {ENCODERS}; got {tuple(encoders)!r}."
        )
    if max_num_patches is not None:
        check_max_num_patches(max_num_patches)  # before a preset is loaded
    if isinstance(backbone_or_preset, (str, os.PathLike)):
        backbone, tokenizer, max_num_patches = _load(
            os.fspath(backbone_or_preset), tokenizer, max_num_patches
        )
    else:
        backbone = backbone_or_preset
        if backbone.is_naflex and max_num_patches is None:
            max_num_patches = NAFLEX_DEFAULT_PATCHES
    if not hasattr(backbone, "vision_encoder") or not hasattr(backbone, "text_encoder"):
        raise TypeError(
            "export_encoders expects a SigLIP2Backbone or a preset handle; got "
            f"{type(backbone_or_preset).__name__}."
        )
    if backbone.dtype_policy.compute_dtype != "float32":
        raise ValueError(
            f"Export runs in float32; this backbone computes in "
            f"{backbone.dtype_policy.compute_dtype}: load it with dtype='float32'."
        )

    if "image" in encoders:
        check_image_options(backbone, max_num_patches)  # here, not in a child process
    length = backbone.text_encoder.sequence_length
    if tokenizer is not None and tokenizer.sequence_length != length:
        raise ValueError(
            f"The tokenizer pads to {tokenizer.sequence_length} tokens but the text encoder "
            f"takes {length}: build it with sequence_length={length}."
        )
    destination = pathlib.Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    paths = {
        name: destination / f"{name}_encoder{_EXTENSIONS[format]}"
        for name in ENCODERS if name in encoders
    }
    here = keras.config.backend()
    backend = export_backend(format, here)
    if backend == here:
        _export_here(backbone, tokenizer, format, max_num_patches, paths, destination)
    else:
        print(f"{format} cannot be written from {here}; exporting in a {backend} child "
              "process", file=sys.stderr)
        export_in_child(
            backend, backbone, tokenizer, destination, format, max_num_patches, tuple(paths)
        )
    return paths


def _export_here(backbone, tokenizer, format, max_num_patches, paths, destination):
    vision = backbone.vision_encoder
    config = {
        "format": format,
        "exported_from_backend": keras.config.backend(),
        "logit_scale": float(keras.ops.convert_to_numpy(backbone.logits_head.logit_scale)),
        "logit_bias": float(keras.ops.convert_to_numpy(backbone.logits_head.logit_bias)),
    }
    if "image" in paths:
        model = image_encoder_model(backbone, max_num_patches)
        _write(model, paths["image"], format, None)
        pipeline = (
            {"patch_size": vision.patch_size, "max_num_patches": max_num_patches}
            if backbone.is_naflex else {"image_size": vision.image_size}
        )
        config["image_encoder"] = {**_describe(model, paths["image"], destination), **pipeline}
    if "text" in paths:
        model = text_encoder_model(backbone)
        in_graph = tokenizer if format == "tf_saved_model" else None
        _write(model, paths["text"], format, in_graph)
        config["text_encoder"] = {
            **_describe(model, paths["text"], destination),
            "sequence_length": backbone.text_encoder.sequence_length,
            "string_endpoint": "serve_text" if in_graph is not None else None,
        }
        if tokenizer is not None:
            (destination / TOKENIZER_FILE).write_bytes(tokenizer.proto)
            config["tokenizer"] = {
                "path": TOKENIZER_FILE,
                "sequence_length": tokenizer.sequence_length,
                "lowercase": tokenizer.lowercase,
                "eos_id": tokenizer.end_token_id,
                "pad_id": tokenizer.pad_token_id,
            }
    (destination / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
