"""NaViT-style sequence packing for the NaFlex image tower: several images per sequence.

A padded NaFlex batch spends compute on its padding; packing puts the patches of several
images into one row of `max_num_patches` tokens, lets each token attend only to tokens of its
own image (block-diagonal attention) and pools each image with its own MAP query, so the
pooled embeddings equal the unpacked model's while the padding left is only what no image fits.
"""

import keras
import numpy as np
from keras import ops


def pack_naflex_batch(batch, max_num_patches, num_rows=None, max_images_per_row=None):
    """Packs a padded NaFlex batch into rows of `max_num_patches` tokens (first-fit decreasing).

    Args:
        batch: a padded NaFlex batch (numpy-convertible), as from `NaFlexImageConverter`:
            `patches` (B, L, d), `patch_coords` (B, L, 2), `patch_mask` (B, L) with each
            image's real patches first, `spatial_shapes` (B, 2).
        max_num_patches: N, the tokens per packed row.
        num_rows: R, a fixed number of rows (static shapes across batches); default: as few
            as first-fit needs.
        max_images_per_row: K, a fixed number of images per row (one MAP query each);
            default: the most any row holds.

    Returns:
        A dict of numpy arrays: `patches` (R, N, d), `patch_coords` (R, N, 2),
        `spatial_shapes` (R, N, 2) (each token's own image grid), `segment_ids` (R, N)
        (k + 1 for the k-th image of the row, 0 for padding), `slot_ids` (K,) (1 … K, the
        segment each MAP query pools) and `image_index` (B,) (row · K + k of each input
        image, in input order).

    Example:
    >>> batch = {
    ...     "patches": np.zeros((3, 4, 12), "float32"),
    ...     "patch_coords": np.zeros((3, 4, 2), "int32"),
    ...     "patch_mask": np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]]),
    ...     "spatial_shapes": np.array([[1, 3], [1, 1], [1, 2]]),
    ... }
    >>> packed = pack_naflex_batch(batch, max_num_patches=4)
    >>> packed["segment_ids"].tolist(), packed["image_index"].tolist()
    ([[1, 1, 1, 2], [1, 1, 0, 0]], [0, 1, 2])
    """
    patches = np.asarray(batch["patches"])
    coords = np.asarray(batch["patch_coords"])
    mask = np.asarray(batch["patch_mask"]).astype(bool)
    shapes = np.asarray(batch["spatial_shapes"])
    lengths = mask.sum(axis=1)
    if not np.array_equal(lengths, shapes.prod(axis=1)):
        raise ValueError(
            "Each image's patch_mask count must equal rows · cols of its spatial_shapes, got "
            f"{lengths.tolist()} vs {shapes.prod(axis=1).tolist()}: pass the converter's output."
        )
    if not np.array_equal(mask, np.arange(mask.shape[1]) < lengths[:, None]):
        raise ValueError("patch_mask must put each image's real patches first, padding last.")
    if lengths.max(initial=0) > max_num_patches:
        raise ValueError(
            f"An image has {lengths.max()} patches, more than max_num_patches="
            f"{max_num_patches}: raise max_num_patches or resize the image to fewer patches."
        )

    row_of, slot_of, start_of = {}, {}, {}
    fill, count = [], []
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        row = next(
            (r for r in range(len(fill)) if fill[r] + n <= max_num_patches
             and (max_images_per_row is None or count[r] < max_images_per_row)),
            None,
        )
        if row is None:
            row = len(fill)
            fill.append(0)
            count.append(0)
        row_of[i], slot_of[i], start_of[i] = row, count[row], fill[row]
        fill[row] += n
        count[row] += 1
    rows = len(fill) if num_rows is None else num_rows
    if len(fill) > rows:
        raise ValueError(
            f"The batch needs {len(fill)} rows of {max_num_patches} patches, more than "
            f"num_rows={num_rows}: raise num_rows or pass fewer images."
        )
    per_row = max(count, default=1) if max_images_per_row is None else max_images_per_row

    out = {
        "patches": np.zeros((rows, max_num_patches, patches.shape[-1]), patches.dtype),
        "patch_coords": np.zeros((rows, max_num_patches, 2), "int32"),
        "spatial_shapes": np.zeros((rows, max_num_patches, 2), "int32"),
        "segment_ids": np.zeros((rows, max_num_patches), "int32"),
        "slot_ids": np.arange(1, per_row + 1, dtype="int32"),
        "image_index": np.zeros((len(lengths),), "int32"),
    }
    for i, row in row_of.items():
        n, start = int(lengths[i]), start_of[i]
        span = slice(start, start + n)
        out["patches"][row, span] = patches[i, :n]
        out["patch_coords"][row, span] = coords[i, :n]
        out["spatial_shapes"][row, span] = shapes[i]
        out["segment_ids"][row, span] = slot_of[i] + 1
        out["image_index"][i] = row * per_row + slot_of[i]
    return out


@keras.saving.register_keras_serializable(package="keras_siglip2")
class PackedNaFlexVisionEncoder(keras.Model):
    """Runs a `SigLIP2NaFlexVisionEncoder`'s layers on packed rows: one embedding per image.

    Same weights and layers as `encoder`; attention is restricted to tokens of the same
    image, each image gets its position embedding from its own grid and its own MAP pooling.
    Inputs: the dict of `pack_naflex_batch` (R rows of N tokens, K = len(`slot_ids`) MAP
    queries per row; `image_index` picks each image's among the R · K pooled slots).

    Output: (B, hidden_dim) pooled embeddings in the input images' order, equal to
    `encoder(batch)["pooled_output"]`.

    Example:
    >>> from keras_siglip2 import SigLIP2NaFlexVisionEncoder
    >>> encoder = SigLIP2NaFlexVisionEncoder(
    ...     patch_size=2, hidden_dim=8, num_layers=1, num_heads=2,
    ...     intermediate_dim=16, position_grid_size=4)
    >>> batch = {
    ...     "patches": np.zeros((2, 4, 12), "float32"),
    ...     "patch_coords": np.array([[[0, 0], [0, 1], [0, 0], [0, 0]]] * 2),
    ...     "patch_mask": np.array([[1, 1, 0, 0], [1, 0, 0, 0]]),
    ...     "spatial_shapes": np.array([[1, 2], [1, 1]]),
    ... }
    >>> packed = PackedNaFlexVisionEncoder(encoder)
    >>> tuple(packed(pack_naflex_batch(batch, max_num_patches=4)).shape)
    (2, 8)
    """

    def __init__(self, encoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder

    def call(self, inputs):
        enc = self.encoder
        segments = ops.cast(inputs["segment_ids"], "int32")
        rows, length = ops.shape(segments)
        coords = ops.reshape(inputs["patch_coords"], (-1, 1, 2))
        shapes = ops.reshape(inputs["spatial_shapes"], (-1, 2))
        positions = ops.reshape(enc.position_embedding(coords, shapes), (rows, length, -1))
        x = enc.patch_embedding(inputs["patches"]) + positions

        real = segments > 0
        same_image = ops.logical_and(
            segments[:, :, None] == segments[:, None, :], real[:, None, :]
        )
        x = enc.encoder(x, attention_mask=same_image)

        pool_mask = segments[:, None, :] == ops.cast(inputs["slot_ids"], "int32")[None, :, None]
        pooled = enc.head(x, attention_mask=pool_mask)
        pooled = ops.reshape(pooled, (-1, ops.shape(pooled)[-1]))
        return ops.take(pooled, ops.cast(inputs["image_index"], "int32"), axis=0)
