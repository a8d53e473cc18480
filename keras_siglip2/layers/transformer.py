"""Pre-LayerNorm transformer encoder shared by the image and text towers."""

import keras

from keras_siglip2.layers.attention import MultiHeadAttention
from keras_siglip2.layers.token_dense import dense_over_tokens


def layer_norm(epsilon, name, dtype):
    return keras.layers.LayerNormalization(epsilon=epsilon, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_siglip2")
class MlpBlock(keras.layers.Layer):
    """Dense → tanh-approximate GELU → Dense back to the input width.

    Example:
    >>> tuple(MlpBlock(intermediate_dim=16)(keras.ops.ones((1, 3, 8))).shape)
    (1, 3, 8)
    """

    def __init__(self, intermediate_dim, **kwargs):
        super().__init__(**kwargs)
        self.intermediate_dim = intermediate_dim

    def build(self, input_shape):
        self.fc1 = keras.layers.Dense(
            self.intermediate_dim, name="fc1", dtype=self.dtype_policy
        )
        self.fc1.build(input_shape)
        self.fc2 = keras.layers.Dense(input_shape[-1], name="fc2", dtype=self.dtype_policy)
        self.fc2.build((*input_shape[:-1], self.intermediate_dim))

    def call(self, x):
        hidden = keras.activations.gelu(dense_over_tokens(self.fc1, x), approximate=True)
        return dense_over_tokens(self.fc2, hidden)

    def get_config(self):
        return {**super().get_config(), "intermediate_dim": self.intermediate_dim}


@keras.saving.register_keras_serializable(package="keras_siglip2")
class TransformerBlock(keras.layers.Layer):
    """x + MHA(LN(x)), then x + MLP(LN(x)).

    Example:
    >>> block = TransformerBlock(num_heads=2, intermediate_dim=16)
    >>> tuple(block(keras.ops.ones((1, 3, 8))).shape)
    (1, 3, 8)
    """

    def __init__(self, num_heads, intermediate_dim, layer_norm_epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        dtype = self.dtype_policy
        self.norm1 = layer_norm(layer_norm_epsilon, "norm1", dtype)
        self.attention = MultiHeadAttention(num_heads, name="attention", dtype=dtype)
        self.norm2 = layer_norm(layer_norm_epsilon, "norm2", dtype)
        self.mlp = MlpBlock(intermediate_dim, name="mlp", dtype=dtype)

    def build(self, input_shape):
        for layer in (self.norm1, self.attention, self.norm2, self.mlp):
            layer.build(input_shape)

    def call(self, x, key_mask=None, attention_mask=None):
        x = x + self.attention(self.norm1(x), key_mask=key_mask, attention_mask=attention_mask)
        return x + self.mlp(self.norm2(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


@keras.saving.register_keras_serializable(package="keras_siglip2")
class TransformerEncoder(keras.layers.Layer):
    """A stack of `TransformerBlock`s followed by a final LayerNorm.

    With `remat=True` each block's activations are recomputed in the backward
    pass (`keras.remat`) instead of stored: memory per block drops to its input,
    for about one more forward pass of compute. Values and gradients are unchanged.

    Example:
    >>> encoder = TransformerEncoder(num_layers=2, num_heads=2, intermediate_dim=16)
    >>> tuple(encoder(keras.ops.ones((1, 3, 8))).shape)
    (1, 3, 8)
    """

    def __init__(
        self, num_layers, num_heads, intermediate_dim, layer_norm_epsilon=1e-6, remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.remat = remat
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.blocks = [
            TransformerBlock(
                num_heads,
                intermediate_dim,
                layer_norm_epsilon,
                name=f"block_{i}",
                dtype=self.dtype_policy,
            )
            for i in range(num_layers)
        ]
        self.final_norm = layer_norm(layer_norm_epsilon, "final_norm", self.dtype_policy)

    def build(self, input_shape):
        for layer in (*self.blocks, self.final_norm):
            layer.build(input_shape)

    def call(self, x, key_mask=None, attention_mask=None):
        masks = dict(key_mask=key_mask, attention_mask=attention_mask)
        for block in self.blocks:
            if self.remat:
                x = keras.remat(lambda x, block=block: block(x, **masks))(x)
            else:
                x = block(x, **masks)
        return self.final_norm(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "remat": self.remat,
        }
