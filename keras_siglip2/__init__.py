"""SigLIP 2 for Keras 3 (JAX, TensorFlow, PyTorch)."""

from keras_siglip2.models import (
    SigLIP2Backbone,
    SigLIP2NaFlexVisionEncoder,
    SigLIP2TextEncoder,
    SigLIP2VisionEncoder,
)

__version__ = "0.1.0"
