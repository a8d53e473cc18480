"""Running a checkpoint at another resolution or patch size.

SigLIP 2's fixed-resolution variants were made from one model by resizing its
position embedding to a new sequence length; FlexiViT showed that a patch
embedding can be moved to another patch size by the pseudo-inverse of the
patch resize ("PI-resize"). These functions apply both to Keras weights, and
`resize_backbone` builds a fixed-resolution `SigLIP2Backbone` from any
backbone (fixed or NaFlex) at a chosen image and patch size.

All functions take numpy arrays or backend tensors and return numpy arrays.
"""

import math

import numpy as np
from keras import ops

from keras_siglip2.converters.weight_loader import WeightLoader
from keras_siglip2.layers.naflex_position_embedding import antialiased_bilinear_weights
from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.models.text_encoder import SigLIP2TextEncoder
from keras_siglip2.models.vision_encoder import SigLIP2VisionEncoder


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def _pair(size, name):
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"{name} must be an int or a (height, width) pair, got {size}.")
    return size


def resize_matrix(in_size, out_size, antialias=True):
    """(out_size, in_size) matrix M with `resize(x) = M @ x` along one axis.

    Bilinear with half-pixel centres, as `jax.image.resize` and
    `tf.image.resize`. With `antialias=True` the filter widens when
    shrinking (the same weights as the NaFlex position embedding uses); with
    `antialias=False` it is plain bilinear interpolation. Upsampling is the
    same either way.

    Example:
    >>> resize_matrix(2, 4).round(2).tolist()
    [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"Sizes must be positive, got {in_size} → {out_size}.")
    if antialias:
        weights = antialiased_bilinear_weights(
            ops.arange(out_size, dtype="float32"), float(out_size), in_size
        )
        return _numpy(weights).astype("float64")
    center = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    weights = np.maximum(0.0, 1.0 - np.abs(np.arange(in_size)[None, :] - center[:, None]))
    return weights / weights.sum(axis=1, keepdims=True)


def resize_position_embedding(pos_emb, new_grid):
    """Resizes a learned position embedding to a new patch grid.

    The table is read as a square grid of row-major patch positions and
    resized with bilinear, antialiased interpolation (the same as
    `jax.image.resize(..., "bilinear", antialias=True)` and as the NaFlex
    position embedding), then returned in the input's layout.

    Note: big_vision's own `vit.resample_posemb` (used when fine-tuning at a
    new resolution) interpolates with `scipy.ndimage.zoom(order=1)`, whose
    corner-aligned sampling gives slightly different values.

    Args:
        pos_emb: (N, D) or (1, N, D) with N a square, or a (G_h, G_w, D) grid.
        new_grid: an int, or (rows, cols) — a non-square grid is returned
            flattened row-major for the (N, D) and (1, N, D) layouts.

    Returns:
        A numpy array: (rows·cols, D), (1, rows·cols, D) or (rows, cols, D).

    Example:
    >>> table = np.random.default_rng(0).normal(size=(1, 16 * 16, 8))
    >>> tuple(resize_position_embedding(table, 24).shape)
    (1, 576, 8)
    >>> tuple(resize_position_embedding(np.zeros((16, 16, 8)), (12, 20)).shape)
    (12, 20, 8)
    """
    pos_emb = _numpy(pos_emb)
    rows, cols = _pair(new_grid, "new_grid")
    if pos_emb.ndim == 3 and pos_emb.shape[0] != 1:
        grid, layout = pos_emb, "grid"
    elif pos_emb.ndim in (2, 3):
        layout = "batched" if pos_emb.ndim == 3 else "flat"
        n, dim = pos_emb.shape[-2:]
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"A position table of {n} entries is not a square grid; pass a "
                "(rows, cols, D) grid instead."
            )
        grid = pos_emb.reshape(side, side, dim)
    else:
        raise ValueError(f"Expected (N, D), (1, N, D) or (G, G, D), got shape {pos_emb.shape}.")
    if grid.shape[:2] == (rows, cols):
        resized = grid
    else:
        row_w = resize_matrix(grid.shape[0], rows)
        col_w = resize_matrix(grid.shape[1], cols)
        resized = np.einsum("ih,jw,hwd->ijd", row_w, col_w, grid.astype("float64"))
    resized = resized.astype(pos_emb.dtype)
    if layout == "grid":
        return resized
    flat = resized.reshape(rows * cols, -1)
    return flat[None] if layout == "batched" else flat


def resize_patch_embedding(kernel, new_patch_size, channels=3, antialias=False):
    """FlexiViT's PI-resize of a patch embedding kernel to a new patch size.

    If a patch x is resized to x' = B x, the new kernel ω' = pinv(Bᵀ) ω keeps
    every token unchanged when upsampling (⟨x', ω'⟩ = ⟨x, ω⟩ exactly) and is
    the least-squares best choice when downsampling. B is bilinear, without
    antialiasing by default as in FlexiViT (`tf.image.resize(..., "bilinear")`,
    which is also how the fixed-resolution pipeline resizes images).

    Args:
        kernel: a (P_h, P_w, C, D) convolution kernel, or a (P·P·C, D) NaFlex
            dense kernel over row-major flattened (P, P, C) patches.
        new_patch_size: an int or (height, width).
        channels: C, needed only for the flattened layout.
        antialias: use the antialiased filter in B (matters only when shrinking).

    Returns:
        A numpy array in the input's layout at the new patch size.

    Example:
    >>> kernel = np.random.default_rng(0).normal(size=(16, 16, 3, 8))
    >>> tuple(resize_patch_embedding(kernel, 32).shape)
    (32, 32, 3, 8)
    >>> tuple(resize_patch_embedding(np.zeros((16 * 16 * 3, 8)), 14).shape)
    (588, 8)
    """
    kernel = _numpy(kernel)
    new_h, new_w = _pair(new_patch_size, "new_patch_size")
    flat = kernel.ndim == 2
    if flat:
        side = math.isqrt(kernel.shape[0] // channels)
        if side * side * channels != kernel.shape[0]:
            raise ValueError(
                f"A dense patch kernel of {kernel.shape[0]} inputs is not P·P·{channels}."
            )
        kernel4 = kernel.reshape(side, side, channels, kernel.shape[1])
    elif kernel.ndim == 4:
        kernel4 = kernel
    else:
        raise ValueError(f"Expected (P, P, C, D) or (P·P·C, D), got shape {kernel.shape}.")
    old_h, old_w, c, d = kernel4.shape
    if (old_h, old_w) == (new_h, new_w):
        return kernel.copy()
    # Row-major flattened patches: resizing rows and columns is a Kronecker product.
    resize = np.kron(
        resize_matrix(old_h, new_h, antialias), resize_matrix(old_w, new_w, antialias)
    )
    new = np.linalg.pinv(resize.T) @ kernel4.reshape(old_h * old_w, c * d).astype("float64")
    new = new.astype(kernel.dtype)
    if flat:
        return new.reshape(new_h * new_w * c, d)
    return new.reshape(new_h, new_w, c, d)


def _copy_weights(source, target, replace, what):
    """Copies `source`'s weights into `target` by path, except those in `replace`."""
    tensors = {v.path: v for v in source.weights}
    tensors.update(replace)
    loader = WeightLoader(tensors, what)
    for variable in target.weights:
        loader.assign(variable, ops.convert_to_numpy(loader.take(variable.path)))
    loader.finish(target)


def resize_backbone(backbone, image_size=None, patch_size=None):
    """A fixed-resolution copy of `backbone` for `image_size` px images and `patch_size`.

    The position embedding is resized to the new patch grid
    (`image_size // patch_size` per side) and the patch embedding PI-resized to
    the new patch size; every other weight, and the text tower, is copied
    unchanged. A NaFlex backbone becomes a fixed-resolution one (its dense
    patch kernel is the convolution kernel reshaped; its position grid is
    resized as NaFlex would for a square image): pass `image_size`.

    Args:
        backbone: a `SigLIP2Backbone`.
        image_size: new image size; default the current one (fixed resolution).
        patch_size: new patch size; default the current one.

    Returns:
        A new `SigLIP2Backbone`; `backbone` is not modified.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone(image_size=32, patch_size=16, sequence_length=8)
    >>> bigger = resize_backbone(backbone, image_size=64)
    >>> tuple(bigger.vision_encoder.position_embedding.weights[0].shape)
    (16, 8)
    """
    vision = backbone.vision_encoder
    if backbone.is_naflex:
        if image_size is None:
            raise ValueError("Resizing a NaFlex backbone to fixed resolution needs image_size.")
        grid = vision.position_embedding.weights[0]
        kernel = _numpy(vision.patch_embedding.kernel).reshape(
            vision.patch_size, vision.patch_size, 3, vision.hidden_dim
        )
    else:
        old_grid = vision.image_size // vision.patch_size
        grid = _numpy(vision.position_embedding.weights[0]).reshape(old_grid, old_grid, -1)
        kernel = vision.patch_embedding.kernel
    image_size = vision.image_size if image_size is None else image_size
    patch_size = vision.patch_size if patch_size is None else patch_size
    new_grid = image_size // patch_size
    if new_grid < 1:
        raise ValueError(f"image_size={image_size} is smaller than patch_size={patch_size}.")

    dtype = backbone.dtype_policy.name
    new_vision = SigLIP2VisionEncoder(
        image_size=image_size, patch_size=patch_size, hidden_dim=vision.hidden_dim,
        num_layers=vision.num_layers, num_heads=vision.num_heads,
        intermediate_dim=vision.intermediate_dim,
        layer_norm_epsilon=vision.layer_norm_epsilon, dtype=vision.dtype_policy.name,
    )
    new_pos = resize_position_embedding(grid, new_grid).reshape(new_grid * new_grid, -1)
    _copy_weights(
        vision, new_vision,
        {
            new_vision.patch_embedding.kernel.path: resize_patch_embedding(kernel, patch_size),
            new_vision.position_embedding.weights[0].path: new_pos,
        },
        "resize_backbone (image tower)",
    )
    text = backbone.text_encoder
    new_text = SigLIP2TextEncoder.from_config(
        {k: v for k, v in text.get_config().items() if k != "name"}
    )
    _copy_weights(text, new_text, {}, "resize_backbone (text tower)")
    new = SigLIP2Backbone(
        new_vision, new_text,
        logit_scale_init=backbone.logit_scale_init,
        logit_bias_init=backbone.logit_bias_init, dtype=dtype,
    )
    new.logits_head.logit_scale.assign(backbone.logits_head.logit_scale)
    new.logits_head.logit_bias.assign(backbone.logits_head.logit_bias)
    return new
