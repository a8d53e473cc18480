"""SigLIP 2 for Keras 3 (JAX, TensorFlow, PyTorch)."""

from keras_siglip2.models import (
    LocCaDecoder,
    SigLIP2Backbone,
    SigLIP2NaFlexVisionEncoder,
    SigLIP2TextEncoder,
    SigLIP2Trainer,
    SigLIP2VisionEncoder,
)
from keras_siglip2.preprocessing import (
    NaFlexImageConverter,
    SigLIP2ImageConverter,
)
from keras_siglip2.tokenizer import SigLIP2Tokenizer

__version__ = "0.1.0"
