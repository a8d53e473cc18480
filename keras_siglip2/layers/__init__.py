from keras_siglip2.layers.attention import MultiHeadAttention
from keras_siglip2.layers.logits import SigmoidLogits, l2_normalize
from keras_siglip2.layers.map_head import MAPHead
from keras_siglip2.layers.naflex_position_embedding import (
    NaFlexPositionEmbedding,
    antialiased_bilinear_weights,
)
from keras_siglip2.layers.transformer import MlpBlock, TransformerBlock, TransformerEncoder
from keras_siglip2.layers.dino_head import DINOHead

__all__ = [
    "DINOHead",
    "MAPHead",
    "MlpBlock",
    "MultiHeadAttention",
    "NaFlexPositionEmbedding",
    "SigmoidLogits",
    "TransformerBlock",
    "TransformerEncoder",
    "antialiased_bilinear_weights",
    "l2_normalize",
]
