"""The NaFlex SigLIP 2 image tower: native aspect ratio, variable number of patches."""

import keras
import keras_hub

from keras_siglip2.layers.map_head import MAPHead
from keras_siglip2.losses.masked_prediction import apply_token_mask
from keras_siglip2.layers.naflex_position_embedding import NaFlexPositionEmbedding
from keras_siglip2.layers.token_dense import dense_over_tokens
from keras_siglip2.layers.transformer import TransformerEncoder
from keras_siglip2.models.tower_preset import TowerFromPreset

# The tower's inputs, as `NaFlexImageConverter` returns them.
NAFLEX_KEYS = ("patches", "patch_coords", "patch_mask", "spatial_shapes")


@keras.saving.register_keras_serializable(package="keras_siglip2")
class SigLIP2NaFlexVisionEncoder(TowerFromPreset, keras_hub.models.Backbone):
    """ViT image tower on a padded batch of patch sequences (NaFlex).

    Inputs (a dict, as produced by `NaFlexImageConverter`):
        patches: (B, N, patch_size² · 3) float, row-major flattened patches in [-1, 1].
        patch_coords: (B, N, 2) int, (row, col) of each patch in its image's grid.
        patch_mask: (B, N) int or bool, 1 for real patches, 0 for padding.
        spatial_shapes: (B, 2) int, (rows, cols) of each image's patch grid.

    Padding tokens are ignored by attention and pooling, so they never change
    a real token's output. N is static per batch: pad every batch to one
    maximum number of patches to compile once.

    Output: a dict with `sequence_output` (B, N, hidden_dim) and
    `pooled_output` (B, hidden_dim).

    `remat=True` recomputes each transformer block's activations in the backward
    pass (less memory, same gradients).

    Example:
    >>> encoder = SigLIP2NaFlexVisionEncoder(
    ...     patch_size=4, hidden_dim=8, num_layers=1, num_heads=2,
    ...     intermediate_dim=16, position_grid_size=4)
    >>> out = encoder({
    ...     "patches": keras.ops.zeros((1, 6, 48)),
    ...     "patch_coords": keras.ops.array([[[0, 0], [0, 1], [0, 2], [0, 0], [0, 0], [0, 0]]]),
    ...     "patch_mask": keras.ops.array([[1, 1, 1, 0, 0, 0]]),
    ...     "spatial_shapes": keras.ops.array([[1, 3]]),
    ... })
    >>> tuple(out["pooled_output"].shape)
    (1, 8)
    """

    def __init__(
        self,
        patch_size,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        position_grid_size=16,
        layer_norm_epsilon=1e-6,
        remat=False,
        dtype=None,
        **kwargs,
    ):
        self.patch_embedding = keras.layers.Dense(
            hidden_dim, name="patch_embedding", dtype=dtype
        )
        self.position_embedding = NaFlexPositionEmbedding(
            position_grid_size, hidden_dim, name="position_embedding", dtype=dtype
        )
        self.encoder = TransformerEncoder(
            num_layers, num_heads, intermediate_dim, layer_norm_epsilon, remat,
            name="encoder", dtype=dtype,
        )
        self.head = MAPHead(
            num_heads, intermediate_dim, layer_norm_epsilon, name="map_head", dtype=dtype
        )

        inputs = {
            "patches": keras.Input((None, patch_size * patch_size * 3), name="patches"),
            "patch_coords": keras.Input((None, 2), dtype="int32", name="patch_coords"),
            "patch_mask": keras.Input((None,), dtype="int32", name="patch_mask"),
            "spatial_shapes": keras.Input((2,), dtype="int32", name="spatial_shapes"),
        }
        outputs = self.encode(*self.embed(inputs))
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.position_grid_size = position_grid_size
        self.layer_norm_epsilon = layer_norm_epsilon
        self.remat = remat

    def embed(self, inputs, token_mask=None, mask_token=None):
        """(tokens, key_mask): position-embedded patch tokens (B, N, D) and `patch_mask`.

        Patches where `token_mask` (B, N) is 1 are replaced by `mask_token`
        (D,) before the position embedding is added (masked prediction).
        """
        x = dense_over_tokens(self.patch_embedding, inputs["patches"])
        if token_mask is not None:
            x = apply_token_mask(x, token_mask, mask_token)
        x = x + self.position_embedding(inputs["patch_coords"], inputs["spatial_shapes"])
        return x, inputs["patch_mask"]

    def token_positions(self, inputs):
        """(B, N, 2) float32 (y, x) centre of each token's patch, in [0, 1] of its image.

        Padding tokens get a place too (masked wherever they are read).

        Example:
        >>> encoder = SigLIP2NaFlexVisionEncoder(patch_size=4, hidden_dim=8, num_layers=1,
        ...     num_heads=2, intermediate_dim=16, position_grid_size=4)
        >>> positions = encoder.token_positions({"patch_coords": [[[0, 0], [0, 1], [0, 2]]],
        ...                                      "spatial_shapes": [[1, 3]]})
        >>> (keras.ops.convert_to_numpy(positions) * 6).tolist()  # in sixths of the width
        [[[3.0, 1.0], [3.0, 3.0], [3.0, 5.0]]]
        """
        coords = keras.ops.cast(inputs["patch_coords"], "float32")
        shapes = keras.ops.cast(inputs["spatial_shapes"], "float32")[:, None, :]
        return (coords + 0.5) / keras.ops.maximum(shapes, 1.0)

    def encode(self, tokens, key_mask=None):
        """The encoder and MAP head on embedded tokens (e.g. with some masked)."""
        tokens = self.encoder(tokens, key_mask=key_mask)
        return {"sequence_output": tokens, "pooled_output": self.head(tokens, key_mask=key_mask)}

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "position_grid_size": self.position_grid_size,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "remat": self.remat,
        }
