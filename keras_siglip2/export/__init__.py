"""Serving artefacts of the SigLIP 2 encoders: TF SavedModel, ONNX, LiteRT."""

from keras_siglip2.export.artifacts import export_encoders
from keras_siglip2.export.encoders import image_encoder_model, text_encoder_model
from keras_siglip2.export.runtimes import load_exported
from keras_siglip2.export.support import FORMATS, export_backend, supported_backends

__all__ = [
    "FORMATS",
    "export_backend",
    "export_encoders",
    "image_encoder_model",
    "load_exported",
    "supported_backends",
    "text_encoder_model",
]
