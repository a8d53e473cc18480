"""Multi-head attention pooling (MAP): a learned probe attends over the tokens."""

import keras
from keras import ops

from keras_siglip2.layers.attention import MultiHeadAttention
from keras_siglip2.layers.transformer import MlpBlock


@keras.saving.register_keras_serializable(package="keras_siglip2")
class MAPHead(keras.layers.Layer):
    """Pools (B, N, D) tokens to (B, D); tokens where `key_mask` is 0 are ignored.

    Example:
    >>> head = MAPHead(num_heads=2, intermediate_dim=16)
    >>> tuple(head(keras.ops.ones((2, 5, 8))).shape)
    (2, 8)
    """

    def __init__(self, num_heads, intermediate_dim, layer_norm_epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        dtype = self.dtype_policy
        self.attention = MultiHeadAttention(num_heads, name="attention", dtype=dtype)
        self.norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="norm", dtype=dtype
        )
        self.mlp = MlpBlock(intermediate_dim, name="mlp", dtype=dtype)

    def build(self, input_shape):
        width = input_shape[-1]
        self.probe = self.add_weight(
            shape=(1, 1, width), initializer="glorot_uniform", name="probe"
        )
        self.attention.build((None, 1, width), input_shape)
        self.norm.build((None, 1, width))
        self.mlp.build((None, 1, width))

    def call(self, x, key_mask=None, attention_mask=None):
        """(B, D), or (B, Q, D) with `attention_mask` (B, Q, N): Q poolings, each over its keys."""
        queries = 1 if attention_mask is None else ops.shape(attention_mask)[1]
        probe = ops.tile(ops.cast(self.probe, x.dtype), (ops.shape(x)[0], queries, 1))
        y = self.attention(probe, x, key_mask=key_mask, attention_mask=attention_mask)
        y = y + self.mlp(self.norm(y))
        return y[:, 0] if attention_mask is None else y

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
