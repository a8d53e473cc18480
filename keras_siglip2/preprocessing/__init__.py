"""Image preprocessing of the released SigLIP 2 checkpoints (big_vision pipelines)."""

from keras_siglip2.preprocessing.image_converter import SigLIP2ImageConverter
from keras_siglip2.preprocessing.image_io import load_image
from keras_siglip2.preprocessing.naflex import NaFlexImageConverter, naflex_target_size
from keras_siglip2.preprocessing.multi_view import LocalViews
from keras_siglip2.preprocessing.naflex_batching import naflex_multi_length_batches

__all__ = [
    "LocalViews",
    "NaFlexImageConverter",
    "SigLIP2ImageConverter",
    "load_image",
    "naflex_multi_length_batches",
    "naflex_target_size",
]
