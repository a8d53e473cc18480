"""Serving artefacts of the SigLIP 2 encoders: TF SavedModel, ONNX, LiteRT."""

from keras_siglip2.export.artifacts import export_encoders
from keras_siglip2.export.encoders import image_encoder_model, text_encoder_model
from keras_siglip2.export.runtimes import load_exported
from keras_siglip2.export.support import (
    FORMATS,
    UnsupportedExportError,
    check_supported,
    supported_backends,
)
