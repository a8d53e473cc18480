"""SigLIP 2 for Keras 3 (JAX, TensorFlow, PyTorch)."""

# First, before any backend loads: under `python -m keras_siglip2`, `train` restarts with
# huge pages and the backends are quieted (startup.py).
from keras_siglip2 import startup
from keras_siglip2.models import (
    LocCaDecoder,
    SigLIP2Backbone,
    SigLIP2NaFlexVisionEncoder,
    SigLIP2Preprocessor,
    SigLIP2TextEncoder,
    SigLIP2Trainer,
    SigLIP2VisionEncoder,
    SigLIP2ZeroShotClassifier,
)
from keras_siglip2.preprocessing import (
    NaFlexImageConverter,
    SigLIP2ImageConverter,
)
from keras_siglip2.tokenizer import SigLIP2Tokenizer

# The loader layer, above the models: registers the functions their `from_preset`s call
# (preset_registry.py), so it must have run before any `from_preset`.
from keras_siglip2 import preset_loader

__version__ = "0.1.0"

__all__ = [
    "LocCaDecoder",
    "NaFlexImageConverter",
    "SigLIP2Backbone",
    "SigLIP2ImageConverter",
    "SigLIP2NaFlexVisionEncoder",
    "SigLIP2Preprocessor",
    "SigLIP2TextEncoder",
    "SigLIP2Tokenizer",
    "SigLIP2Trainer",
    "SigLIP2VisionEncoder",
    "SigLIP2ZeroShotClassifier",
]
