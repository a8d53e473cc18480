"""DINO projection head: MLP → bottleneck → L2-normalise → weight-normalised prototypes."""

import keras
from keras import ops


def _unit(x, axis):
    """x / max(‖x‖, 1e-12) along `axis` (torch's F.normalize, as DINO)."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), 1e-24))


@keras.saving.register_keras_serializable(package="keras_siglip2")
class DINOHead(keras.layers.Layer):
    """Projects (..., D) embeddings to (..., out_dim) prototype logits, in float32.

    `num_layers` Dense + exact GELU layers of width `hidden_dim`, a linear bottleneck
    Dense to `bottleneck_dim`, L2 normalisation, then a bias-free linear layer whose
    kernel is weight-normalised with the gain fixed to 1 (DINO's `norm_last_layer`):
    the effective weight `prototypes` has unit-norm columns, so the logits are cosines
    in [-1, 1]. DINO's `nlayers=3` is `num_layers=2`. Works on (B, D) pooled
    embeddings and (B, N, D) patch tokens. The normalisation and the prototype matmul
    run in float32 even under mixed precision: the logits are divided by a teacher
    temperature of ~0.04, which would magnify bfloat16 rounding 25 times.

    Args:
        out_dim: number of prototypes K.
        hidden_dim: width of the MLP layers.
        bottleneck_dim: width of the L2-normalised bottleneck.
        num_layers: number of hidden Dense + GELU layers before the bottleneck (≥ 0).

    Example:
    >>> head = DINOHead(out_dim=32, hidden_dim=16, bottleneck_dim=8)
    >>> tuple(head(keras.ops.ones((2, 12))).shape), tuple(head(keras.ops.ones((2, 5, 12))).shape)
    ((2, 32), (2, 5, 32))
    >>> w = keras.ops.convert_to_numpy(head.prototypes)
    >>> w.shape, np.allclose(np.linalg.norm(w, axis=0), 1.0)
    ((8, 32), True)
    """

    def __init__(self, out_dim, hidden_dim=2048, bottleneck_dim=256, num_layers=2, **kwargs):
        super().__init__(**kwargs)
        self.out_dim = out_dim
        self.hidden_dim = hidden_dim
        self.bottleneck_dim = bottleneck_dim
        self.num_layers = num_layers

        # A fresh initializer per layer: a shared unseeded one gives equal-shaped kernels
        # identical values.
        def dense(width, name):
            init = keras.initializers.TruncatedNormal(stddev=0.02)
            return keras.layers.Dense(
                width, kernel_initializer=init, name=name, dtype=self.dtype_policy
            )

        self.hidden = [dense(hidden_dim, f"hidden_{i}") for i in range(num_layers)]
        self.bottleneck = dense(bottleneck_dim, "bottleneck")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in [*self.hidden, self.bottleneck]:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        # Only the direction of each column matters; autocast off keeps it float32.
        self.last_layer_kernel = self.add_weight(
            shape=(self.bottleneck_dim, self.out_dim),
            name="last_layer_kernel",
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            autocast=False,
        )

    @property
    def prototypes(self):
        """The effective last-layer weight (bottleneck_dim, out_dim): unit-norm columns."""
        return _unit(ops.cast(self.last_layer_kernel, "float32"), axis=0)

    def call(self, x):
        for layer in self.hidden:
            x = keras.activations.gelu(layer(x), approximate=False)
        x = _unit(ops.cast(self.bottleneck(x), "float32"), axis=-1)
        return ops.matmul(x, self.prototypes)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.out_dim)

    def compute_output_spec(self, x):
        return keras.KerasTensor((*x.shape[:-1], self.out_dim), dtype="float32")

    def get_config(self):
        return {
            **super().get_config(),
            "out_dim": self.out_dim,
            "hidden_dim": self.hidden_dim,
            "bottleneck_dim": self.bottleneck_dim,
            "num_layers": self.num_layers,
        }
