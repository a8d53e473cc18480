"""The image and text towers as stand-alone Keras models with named inputs and outputs.

Each takes a dict of named inputs with a free batch dimension and returns a dict:

- `embeddings` (B, E): the L2-normalised embedding, what `SigLIP2Backbone.encode_images` /
  `encode_text` return. Image-text scores are `sigmoid(exp(t) · ⟨image, text⟩ + b)`.
- `pooled_output` (B, E): the same before normalisation.
- `sequence_output` (B, N, D): the encoder's last tokens (image patches or text positions),
  e.g. for dense features; NaFlex padding rows are meaningless.

Image inputs: `images` (B, S, S, 3) float in [-1, 1] for a fixed-resolution tower; for
NaFlex, `patches` (B, N, P²·3), `patch_coords` (B, N, 2), `patch_mask` (B, N) and
`spatial_shapes` (B, 2), with N = `max_num_patches` fixed per model (pad every image's
patches to N, as `NaFlexImageConverter` does). Text input: `token_ids` (B, L) int32.
"""

import keras

from keras_siglip2.layers.logits import l2_normalize

OUTPUTS = ("embeddings", "pooled_output", "sequence_output")


def _named_outputs(inputs, encoded, name):
    pooled = encoded["pooled_output"]
    return keras.Model(
        inputs,
        {
            "embeddings": l2_normalize(pooled),
            "pooled_output": pooled,
            "sequence_output": encoded["sequence_output"],
        },
        name=name,
    )


def check_max_num_patches(max_num_patches):
    """Raises `ValueError` unless `max_num_patches` is an int >= 1."""
    if isinstance(max_num_patches, bool) or not isinstance(max_num_patches, int) or (
        max_num_patches < 1
    ):
        raise ValueError(
            "A NaFlex image tower is exported for one fixed number of patches: pass "
            f"`max_num_patches` as an int >= 1 (256 for the released models); got "
            f"{max_num_patches!r}."
        )


def check_image_options(backbone, max_num_patches):
    """Raises `ValueError` unless `max_num_patches` fits `backbone`'s image tower: an int >= 1
    for NaFlex, None for a fixed resolution.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone(image_size=32, patch_size=16, sequence_length=8)
    >>> check_image_options(backbone, None)
    >>> check_image_options(backbone, 256)
    Traceback (most recent call last):
    ...
    ValueError: `max_num_patches` only applies to a NaFlex image tower; ...
    """
    if backbone.is_naflex:
        check_max_num_patches(max_num_patches)
    elif max_num_patches is not None:
        size = backbone.vision_encoder.image_size
        raise ValueError(
            "`max_num_patches` only applies to a NaFlex image tower; this backbone's takes "
            f"fixed {size}x{size} images: leave it unset."
        )


def image_encoder_model(backbone, max_num_patches=None):
    """The image tower of `backbone` as a Keras model (see the module docstring).

    `max_num_patches` (NaFlex only, required there) fixes the patch sequence length N.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone(image_size=32, patch_size=16, sequence_length=8)
    >>> model = image_encoder_model(backbone)
    >>> out = model({"images": np.zeros((2, 32, 32, 3), "float32")})
    >>> {k: tuple(v.shape) for k, v in sorted(out.items())}
    {'embeddings': (2, 8), 'pooled_output': (2, 8), 'sequence_output': (2, 4, 8)}
    """
    check_image_options(backbone, max_num_patches)
    vision = backbone.vision_encoder
    if not backbone.is_naflex:
        size = vision.image_size
        inputs = {"images": keras.Input((size, size, 3), name="images")}
        return _named_outputs(inputs, vision(inputs["images"]), "image_encoder")
    n, width = max_num_patches, vision.patch_size**2 * 3
    inputs = {
        "patches": keras.Input((n, width), name="patches"),
        "patch_coords": keras.Input((n, 2), dtype="int32", name="patch_coords"),
        "patch_mask": keras.Input((n,), dtype="int32", name="patch_mask"),
        "spatial_shapes": keras.Input((2,), dtype="int32", name="spatial_shapes"),
    }
    return _named_outputs(inputs, vision(inputs), "image_encoder")


def text_encoder_model(backbone):
    """The text tower of `backbone` as a Keras model on `token_ids` (see the module docstring).

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone(image_size=32, patch_size=16, sequence_length=8)
    >>> ids = np.ones((3, 8), "int32")
    >>> out = text_encoder_model(backbone)({"token_ids": ids})
    >>> to_numpy = keras.ops.convert_to_numpy
    >>> np.allclose(to_numpy(out["embeddings"]), to_numpy(backbone.encode_text(ids)), atol=1e-6)
    True
    """
    length = backbone.text_encoder.sequence_length
    inputs = {"token_ids": keras.Input((length,), dtype="int32", name="token_ids")}
    return _named_outputs(inputs, backbone.text_encoder(inputs["token_ids"]), "text_encoder")
