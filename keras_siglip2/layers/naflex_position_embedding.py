"""NaFlex position embedding: a learned square grid resized to each image's patch grid."""

import keras
from keras import ops


def antialiased_bilinear_weights(index, size, in_size):
    """Interpolation weights of output `index` when resizing `in_size` → `size`.

    The same triangle-filter weights as `jax.image.resize(..., antialias=True)`
    and `torch.nn.functional.interpolate(mode="bilinear", antialias=True,
    align_corners=False)`: when shrinking, the kernel widens to in/out pixels.

    Args:
        index: float tensor of output positions (any shape).
        size: float tensor broadcastable to `index`, the output length.
        in_size: Python int, the input length.

    Returns:
        `index.shape + (in_size,)` weights, each row summing to 1 (or 0 for an
        index outside `[0, size)`).
    """
    size = ops.maximum(size, 1.0)
    in_per_out = in_size / size
    support = ops.maximum(in_per_out, 1.0)[..., None]
    center = ((index + 0.5) * in_per_out - 0.5)[..., None]
    taps = ops.arange(in_size, dtype="float32")
    weights = ops.relu(1.0 - ops.abs(taps - center) / support)
    return weights / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), 1e-12)


@keras.saving.register_keras_serializable(package="keras_siglip2")
class NaFlexPositionEmbedding(keras.layers.Layer):
    """Position embedding of each patch from a `grid_size`² learned grid.

    The grid is resized (bilinear, antialiased) to every image's own patch
    grid, evaluated only at the patches present, so the output shape is static:
    one (grid_size², ) weight vector per token instead of one resize per image.

    Call arguments:
        patch_coords: (B, N, 2) int, (row, col) of each patch.
        spatial_shapes: (B, 2) int, (rows, cols) of each image's patch grid.

    Example:
    >>> layer = NaFlexPositionEmbedding(grid_size=4, hidden_dim=8)
    >>> coords = keras.ops.array([[[0, 0], [0, 1], [1, 0], [1, 1]]])
    >>> tuple(layer(coords, keras.ops.array([[2, 2]])).shape)
    (1, 4, 8)
    """

    def __init__(self, grid_size, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = grid_size
        self.hidden_dim = hidden_dim

    def build(self, patch_coords_shape=None, spatial_shapes_shape=None):
        self.embeddings = self.add_weight(
            shape=(self.grid_size, self.grid_size, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=self.hidden_dim**-0.5),
            name="embeddings",
        )

    def call(self, patch_coords, spatial_shapes):
        coords = ops.cast(patch_coords, "float32")
        shapes = ops.cast(spatial_shapes, "float32")[:, None, :]
        g = self.grid_size
        row_w = antialiased_bilinear_weights(coords[..., 0], shapes[..., 0], g)
        col_w = antialiased_bilinear_weights(coords[..., 1], shapes[..., 1], g)
        weights = row_w[..., :, None] * col_w[..., None, :]
        weights = ops.reshape(weights, (*ops.shape(weights)[:2], g * g))
        grid = ops.reshape(self.embeddings, (g * g, self.hidden_dim))
        return ops.matmul(ops.cast(weights, self.compute_dtype), ops.cast(grid, self.compute_dtype))

    def compute_output_shape(self, patch_coords_shape, spatial_shapes_shape=None):
        return (*patch_coords_shape[:2], self.hidden_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "grid_size": self.grid_size,
            "hidden_dim": self.hidden_dim,
        }
