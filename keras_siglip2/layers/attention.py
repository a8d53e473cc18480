"""Multi-head dot-product attention with biased q/k/v/out projections."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_siglip2")
class MultiHeadAttention(keras.layers.Layer):
    """Scaled dot-product attention as in big_vision's ViT (biases on q, k, v, out).

    The core is `keras.ops.dot_product_attention`: on JAX and TensorFlow its softmax runs in
    float32 whatever the compute dtype, on PyTorch it is `scaled_dot_product_attention`'s
    fused kernel (and on GPUs each backend's flash path where the shapes allow it).

    Args:
        num_heads: number of attention heads; must divide the input width.

    Example:
    >>> layer = MultiHeadAttention(num_heads=2)
    >>> x = keras.random.normal((1, 5, 8))
    >>> tuple(layer(x, key_mask=keras.ops.array([[1, 1, 1, 0, 0]])).shape)
    (1, 5, 8)
    """

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def build(self, query_shape, value_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        width = query_shape[-1]
        if width % self.num_heads:
            raise ValueError(
                f"Width {width} is not divisible by num_heads={self.num_heads}."
            )
        self.head_dim = width // self.num_heads
        for name in ("query", "key", "value", "out"):
            layer = keras.layers.Dense(width, name=name, dtype=self.dtype_policy)
            layer.build(value_shape if name in ("key", "value") else query_shape)
            setattr(self, f"{name}_dense", layer)

    def call(self, query, value=None, key_mask=None, attention_mask=None):
        """Attends from `query` (B, Tq, D) to `value` (B, Tk, D), default self.

        `key_mask` (B, Tk): truthy for keys that may be attended to;
        `attention_mask` (B, Tq, Tk): truthy where query q may attend to key k
        (e.g. causal); both may be given.
        """
        value = query if value is None else value
        split = lambda x: ops.reshape(  # noqa: E731
            x, (ops.shape(x)[0], -1, self.num_heads, self.head_dim)
        )
        q = split(self.query_dense(query))
        k = split(self.key_dense(value))
        v = split(self.value_dense(value))
        keep = None
        if key_mask is not None:
            keep = ops.cast(key_mask, "bool")[:, None, None, :]
        if attention_mask is not None:
            full = ops.cast(attention_mask, "bool")[:, None, :, :]
            keep = full if keep is None else ops.logical_and(keep, full)
        out = ops.dot_product_attention(q, k, v, mask=keep, scale=self.head_dim**-0.5)
        out = ops.reshape(out, (ops.shape(out)[0], -1, self.num_heads * self.head_dim))
        return self.out_dense(out)

    def compute_output_shape(self, query_shape, value_shape=None):
        return query_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}
