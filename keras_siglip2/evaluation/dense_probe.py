"""Linear probe of the image tower's patch features for semantic segmentation (mIoU).

Each patch gets one label, the majority label of the pixels it covers (`patch_labels`). A
linear classifier on the `sequence_output` patch features is fitted in closed form
(`fit_ridge_classifier`: ridge regression onto one-hot labels).
"""

import numpy as np

from keras_siglip2.evaluation.batches import encode_image_batch, numpy_batches
from keras_siglip2.evaluation.ridge import fit_ridge_classifier


def patch_labels(segmentation, grid_shape, ignore_index=-1):
    """(rows, cols) int32 label of each patch: the majority label of its pixels.

    The whole (h, w) map is mapped onto the grid, as the image converters map the image: the
    fixed-resolution one resizes the image to `image_size` (grid `image_size // patch_size`),
    the NaFlex one to `spatial_shapes × patch_size`. A pixel belongs to the cell its centre
    falls in; ties go to the smaller label; pixels equal to `ignore_index` do not vote. A cell
    without votes (a map smaller than the grid, or all ignored) takes the label of the pixel
    under its centre, or -1 (ignore) if that pixel is ignored. (For a fixed tower whose
    `image_size` is not a multiple of `patch_size`, the last pixels are not seen: crop the map to
    the fraction `grid · patch_size / image_size` first.) Flatten row-major to align with the
    patch tokens.

    Example:
    >>> segmentation = np.array([[0, 0, 1, 1],
    ...                          [0, 2, 1, 1],
    ...                          [2, 2, 3, -1],
    ...                          [2, 2, -1, -1]])
    >>> patch_labels(segmentation, (2, 2)).tolist()
    [[0, 1], [2, 3]]
    """
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2 or segmentation.size == 0:
        raise ValueError(
            f"segmentation must be a non-empty (h, w) label map; got shape {segmentation.shape}."
        )
    rows, cols = (int(s) for s in grid_shape)
    if rows < 1 or cols < 1:
        raise ValueError(f"grid_shape must be (rows, cols) >= 1; got {grid_shape}.")
    height, width = segmentation.shape
    segmentation = segmentation.astype("int64")
    valid = (segmentation != ignore_index) & (segmentation >= 0)
    # Integer form of floor((y + 0.5) · rows / height): the cell of each pixel centre.
    row_cell = ((2 * np.arange(height) + 1) * rows) // (2 * height)
    col_cell = ((2 * np.arange(width) + 1) * cols) // (2 * width)
    cell = (row_cell[:, None] * cols + col_cell[None, :])[valid]
    labels = segmentation[valid]
    num_labels = int(labels.max()) + 1 if labels.size else 1
    votes = np.bincount(cell * num_labels + labels, minlength=rows * cols * num_labels)
    votes = votes.reshape(rows * cols, num_labels)
    centre_rows = ((2 * np.arange(rows) + 1) * height) // (2 * rows)
    centre_cols = ((2 * np.arange(cols) + 1) * width) // (2 * cols)
    centre = np.ix_(centre_rows, centre_cols)
    fallback = np.where(valid[centre], segmentation[centre], -1).reshape(-1)
    result = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), fallback)
    return result.reshape(rows, cols).astype("int32")


def mean_iou(confusion):
    """Mean over the classes present in the ground truth of TP / (TP + FP + FN).

    `confusion[i, j]` counts examples of true class i predicted as j.

    Example:
    >>> mean_iou([[3, 1, 0], [0, 2, 0], [0, 0, 0]])  # IoUs 3/4 and 2/3; class 2 absent
    0.7083333333333333
    """
    confusion = np.asarray(confusion, "float64")
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be square (C, C); got shape {confusion.shape}.")
    true, predicted, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    present = true > 0
    if not present.any():
        raise ValueError("The confusion matrix counts no examples.")
    return float((hits[present] / (true + predicted - hits)[present]).mean())


def _patch_features(backbone, dataset, num_classes, label_key):
    """Yields (features (M, D) float64, labels (M,)) of each batch's labelled real patches."""
    for batch in numpy_batches(dataset):
        if label_key not in batch:
            raise KeyError(f"The batch has no {label_key!r}; it has {sorted(batch)}.")
        image = encode_image_batch(backbone, batch)
        labels = np.asarray(batch[label_key]).astype("int64")
        if labels.shape != image["token_mask"].shape:
            raise ValueError(
                f"{label_key} has shape {labels.shape}, but the image tower gives "
                f"{image['token_mask'].shape} patches: label each patch (see patch_labels), "
                "padding patches with -1."
            )
        if labels.max(initial=-1) >= num_classes:
            raise ValueError(f"{label_key} has label {labels.max()} ≥ num_classes {num_classes}.")
        keep = image["token_mask"] & (labels >= 0)
        yield image["tokens"][keep].astype("float64"), labels[keep]


def dense_probe_miou(backbone, train_dataset, test_dataset, num_classes, l2_regularization=1e-3,
                     label_key="patch_labels"):
    """mIoU of a ridge-regression linear probe on the patch features (see module docstring).

    Batches carry the image inputs (`images`, or the NaFlex keys) and `patch_labels` (B, N):
    each patch's class in [0, num_classes), -1 to ignore (NaFlex padding patches are dropped
    whatever their label).

    Returns:
        dict with `miou` (over the classes present in the test labels), `patch_accuracy`,
        `num_train_patches` and `num_test_patches`.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone()
    >>> batch = {"images": np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)),
    ...          "patch_labels": np.array([[0, 1, 1, 0], [1, 0, -1, 0]])}
    >>> result = dense_probe_miou(backbone, [batch], [batch], num_classes=2)
    >>> result["num_train_patches"], 0 <= result["miou"] <= 1
    (7, True)
    """
    weights, bias, count = fit_ridge_classifier(
        _patch_features(backbone, train_dataset, num_classes, label_key), num_classes,
        l2_regularization,
    )
    confusion = np.zeros((num_classes, num_classes), "int64")
    for features, labels in _patch_features(backbone, test_dataset, num_classes, label_key):
        predicted = (features @ weights + bias).argmax(axis=1)
        np.add.at(confusion, (labels, predicted), 1)
    tested = int(confusion.sum())
    if tested == 0:
        raise ValueError("The test set has no labelled patches.")
    return {
        "miou": mean_iou(confusion),
        "patch_accuracy": float(np.trace(confusion) / tested),
        "num_train_patches": count,
        "num_test_patches": tested,
    }
