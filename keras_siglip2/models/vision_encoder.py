"""The fixed-resolution SigLIP 2 image tower: ViT with a MAP head, no class token."""

import keras
import keras_hub
from keras import ops

from keras_siglip2.layers.map_head import MAPHead
from keras_siglip2.losses.masked_prediction import apply_token_mask
from keras_siglip2.layers.transformer import TransformerEncoder
from keras_siglip2.models.tower_preset import TowerFromPreset


@keras.saving.register_keras_serializable(package="keras_siglip2")
class SigLIP2VisionEncoder(TowerFromPreset, keras_hub.models.Backbone):
    """ViT image tower for square images of `image_size` pixels.

    The patch grid is `image_size // patch_size` per side; pixels past the last
    whole patch are not seen (So400m/14 at 384 uses 27×27 patches).

    Input: `images` (B, image_size, image_size, 3) in [-1, 1].
    Output: a dict with `sequence_output` (B, N, hidden_dim), the encoded
    patch tokens, and `pooled_output` (B, hidden_dim), the MAP-pooled
    (unnormalised) image embedding.

    `remat=True` recomputes each transformer block's activations in the backward
    pass (less memory, same gradients).

    Example:
    >>> encoder = SigLIP2VisionEncoder(
    ...     image_size=32, patch_size=16, hidden_dim=8, num_layers=1,
    ...     num_heads=2, intermediate_dim=16)
    >>> tuple(encoder(keras.ops.zeros((1, 32, 32, 3)))["pooled_output"].shape)
    (1, 8)
    """

    def __init__(
        self,
        image_size,
        patch_size,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        layer_norm_epsilon=1e-6,
        remat=False,
        dtype=None,
        **kwargs,
    ):
        # As big_vision's VALID conv: a remainder (384 px at patch 14) is dropped.
        num_patches = (image_size // patch_size) ** 2
        self.patch_embedding = keras.layers.Conv2D(
            hidden_dim, patch_size, strides=patch_size, padding="valid",
            name="patch_embedding", dtype=dtype,
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            num_patches, name="position_embedding", dtype=dtype
        )
        self.encoder = TransformerEncoder(
            num_layers, num_heads, intermediate_dim, layer_norm_epsilon, remat,
            name="encoder", dtype=dtype,
        )
        self.head = MAPHead(
            num_heads, intermediate_dim, layer_norm_epsilon, name="map_head", dtype=dtype
        )

        images = keras.Input((image_size, image_size, 3), name="images")
        outputs = self.encode(*self.embed(images))
        super().__init__(inputs=images, outputs=outputs, dtype=dtype, **kwargs)
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.remat = remat

    def embed(self, images, token_mask=None, mask_token=None):
        """(tokens, key_mask): position-embedded patch tokens (B, N, D), no key mask.

        Patches where `token_mask` (B, N) is 1 are replaced by `mask_token`
        (D,) before the position embedding is added (masked prediction).
        """
        x = self.patch_embedding(images)
        x = ops.reshape(x, (-1, x.shape[1] * x.shape[2], x.shape[3]))
        if token_mask is not None:
            x = apply_token_mask(x, token_mask, mask_token)
        return x + self.position_embedding(x), None

    def token_positions(self, images):
        """(B, N, 2) float32 (y, x) centre of each token's patch, in [0, 1] of the image.

        Example:
        >>> from keras_siglip2.testing import toy_backbone
        >>> tower = toy_backbone().vision_encoder  # 16 px images, 8 px patches
        >>> keras.ops.convert_to_numpy(tower.token_positions(keras.ops.zeros((1, 16, 16, 3))))
        array([[[0.25, 0.25],
                [0.25, 0.75],
                [0.75, 0.25],
                [0.75, 0.75]]], dtype=float32)
        """
        side = self.image_size // self.patch_size
        centres = (ops.arange(side, dtype="float32") + 0.5) / side
        grid = ops.stack(ops.meshgrid(centres, centres, indexing="ij"), axis=-1)
        grid = ops.reshape(grid, (1, side * side, 2))
        return ops.broadcast_to(grid, (ops.shape(images)[0], side * side, 2))

    def encode(self, tokens, key_mask=None):
        """The encoder and MAP head on embedded tokens (e.g. with some masked)."""
        tokens = self.encoder(tokens, key_mask=key_mask)
        return {"sequence_output": tokens, "pooled_output": self.head(tokens, key_mask=key_mask)}

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "remat": self.remat,
        }
