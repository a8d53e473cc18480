from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.models.naflex_vision_encoder import SigLIP2NaFlexVisionEncoder
from keras_siglip2.models.packed_naflex import PackedNaFlexVisionEncoder, pack_naflex_batch
from keras_siglip2.models.text_encoder import SigLIP2TextEncoder
from keras_siglip2.models.vision_encoder import SigLIP2VisionEncoder
from keras_siglip2.models.locca_decoder import LocCaDecoder
from keras_siglip2.models.trainer import SigLIP2Trainer
from keras_siglip2.models.preprocessor import SigLIP2Preprocessor
from keras_siglip2.models.zero_shot_classifier import SigLIP2ZeroShotClassifier

__all__ = [
    "LocCaDecoder",
    "PackedNaFlexVisionEncoder",
    "SigLIP2Backbone",
    "SigLIP2NaFlexVisionEncoder",
    "SigLIP2Preprocessor",
    "SigLIP2TextEncoder",
    "SigLIP2Trainer",
    "SigLIP2VisionEncoder",
    "SigLIP2ZeroShotClassifier",
    "pack_naflex_batch",
]
