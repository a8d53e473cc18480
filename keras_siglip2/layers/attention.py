"""Multi-head dot-product attention with biased q/k/v/out projections."""

import functools

import keras
from keras import ops

from keras_siglip2.layers.token_dense import dense_over_tokens


@functools.cache
def _fused_kernel(backend):
    """True on PyTorch (SDPA's fused kernel) and on accelerators (where the backends' flash
    kernels are; not measured here). On XLA:CPU `ops.dot_product_attention` is a 5-D einsum
    that compiles slower than `_heads_major_attention` (forward + backward at a B/16 shape
    1.3×, at 1,024 tokens 2.1×: benchmarks/README.md)."""
    return backend == "torch" or not keras.distribution.list_devices()[0].startswith("cpu")


def _heads_major_attention(q, k, v, keep, scale):
    """Softmax(q k^T · scale) v on (B, T, N, H) inputs, as two matmuls over (B, N) batches."""
    q = ops.transpose(q, (0, 2, 1, 3)) * ops.cast(scale, q.dtype)
    scores = ops.cast(ops.matmul(q, ops.transpose(k, (0, 2, 3, 1))), "float32")
    if keep is not None:
        scores = ops.where(keep, scores, -1e30)
    weights = ops.cast(ops.softmax(scores, axis=-1), v.dtype)
    return ops.transpose(ops.matmul(weights, ops.transpose(v, (0, 2, 1, 3))), (0, 2, 1, 3))


@keras.saving.register_keras_serializable(package="keras_siglip2")
class MultiHeadAttention(keras.layers.Layer):
    """Scaled dot-product attention as in big_vision's ViT (biases on q, k, v, out).

    The core is `keras.ops.dot_product_attention` where it reaches a fused kernel (PyTorch's
    `scaled_dot_product_attention`; on GPUs and TPUs each backend's flash path where the
    shapes allow it), and two batched matmuls with a softmax on JAX and TensorFlow CPUs,
    where XLA compiles them faster. On JAX and TensorFlow the softmax runs in float32
    whatever the compute dtype.

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
        keep = None
        if key_mask is not None:
            keep = ops.cast(key_mask, "bool")[:, None, :]
        if attention_mask is not None:
            full = ops.cast(attention_mask, "bool")
            keep = full if keep is None else ops.logical_and(keep, full)
        return self.attend(query, *self.keys_values(value), keep)

    def _split_heads(self, x):
        return ops.reshape(x, (ops.shape(x)[0], -1, self.num_heads, self.head_dim))

    def keys_values(self, value):
        """The keys and values of `value` (B, Tk, D), each (B, Tk, heads, head_dim): what a
        decoding cache keeps (`LocCaDecoder.build_cache`)."""
        return (self._split_heads(dense_over_tokens(self.key_dense, value)),
                self._split_heads(dense_over_tokens(self.value_dense, value)))

    def attend(self, query, keys, values, keep=None):
        """The layer's output for `query` (B, Tq, D) against `keys_values`' outputs;
        `keep` (B, 1 or Tq, Tk) truthy where a query may attend to a key, or None."""
        q = self._split_heads(dense_over_tokens(self.query_dense, query))
        keep = None if keep is None else ops.cast(keep, "bool")[:, None]
        if _fused_kernel(keras.config.backend()):
            out = ops.dot_product_attention(q, keys, values, mask=keep, scale=self.head_dim**-0.5)
        else:
            out = _heads_major_attention(q, keys, values, keep, self.head_dim**-0.5)
        out = ops.reshape(out, (ops.shape(out)[0], -1, self.num_heads * self.head_dim))
        return dense_over_tokens(self.out_dense, out)

    def compute_output_shape(self, query_shape, value_shape=None):
        return query_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}
