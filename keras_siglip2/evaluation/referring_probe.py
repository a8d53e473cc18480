"""Referring-box probe: how well the frozen image and text features locate a described object.

The LocCa decoder's box IoU exists only for models trained with a decoder; this probe is the
same for every model, so it compares recipes on what the paper claims the added terms improve,
the image features. A closed-form bilinear head is fitted on frozen features: for each real
patch token t and the expression's text embedding e, the features are the outer product
[t, 1] ⊗ [e, 1], and ridge regression (`fit_ridge_classifier`) learns whether the patch's
centre lies inside the referred object's box. The predicted box is the bounding box of the
patches scored inside (the single best patch if none is). Its fitting has no learning rate,
steps or seed: one pass over the training examples and one solve, identical for every row of
an ablation. The box is read on the patch grid, so even perfect patch scores give IoU below 1
(`patch_grid_iou` is that ceiling).
"""

import numpy as np

from keras_siglip2.evaluation.batches import encode_image_batch, encode_text_batch, numpy_batches
from keras_siglip2.evaluation.referring import box_iou, check_referring_batch
from keras_siglip2.evaluation.ridge import fit_ridge_classifier


def _patch_cells(batch, image, backbone):
    """(B, N, 2) int (row, col) of each patch token and (B, 2) int (rows, cols) of the grid."""
    if backbone.is_naflex:
        return np.asarray(batch["patch_coords"]), np.asarray(batch["spatial_shapes"])
    batch_size, count = image["tokens"].shape[:2]
    side = round(count**0.5)
    index = np.arange(count)
    cells = np.stack([index // side, index % side], -1)
    return np.broadcast_to(cells, (batch_size, count, 2)), np.full((batch_size, 2), side)


def _cell_boxes(cells, grid):
    """(…, 4) y0, x0, y1, x1 in [0, 1] of grid cells."""
    grid = grid[:, None, :].astype("float64")
    return np.concatenate([cells / grid, (cells + 1) / grid], -1)


def _examples(backbone, dataset):
    """Yields per batch: bilinear features (B, N, F), cell boxes (B, N, 4), mask (B, N), boxes."""
    for batch in numpy_batches(dataset):
        check_referring_batch(batch)
        image = encode_image_batch(backbone, batch)
        text = encode_text_batch(backbone, batch["prompt_ids"])
        tokens = image["tokens"].astype("float64")
        ones = np.ones((*tokens.shape[:2], 1))
        tokens = np.concatenate([tokens, ones], -1)
        text = np.concatenate([text.astype("float64"), np.ones((len(text), 1))], -1)
        features = (tokens[:, :, :, None] * text[:, None, None, :]).reshape(*tokens.shape[:2], -1)
        cells = _cell_boxes(*_patch_cells(batch, image, backbone))
        yield features, cells, image["token_mask"], np.asarray(batch["box"], "float64")


def _inside(cells, boxes):
    """(B, N) bool: whether each cell's centre lies inside its example's box."""
    centre = (cells[..., :2] + cells[..., 2:]) / 2
    boxes = boxes[:, None, :]
    return np.all((centre >= boxes[..., :2]) & (centre <= boxes[..., 2:]), axis=-1)


def _bounding_box(cells, selected):
    """(4,) the box around the `selected` (N,) cells."""
    chosen = cells[selected]
    return np.concatenate([chosen[:, :2].min(0), chosen[:, 2:].max(0)])


def referring_probe_iou(backbone, train_dataset, test_dataset, l2_regularization=1e-3):
    """Mean box IoU of the bilinear referring-box probe (see module docstring).

    Batches are those of `referring_box_iou`: the image inputs (`images`, or the NaFlex keys),
    `prompt_ids` (B, L) tokenizer ids of the referring expression and `box` (B, 4) y0, x0, y1,
    x1 in [0, 1]. The probe is fitted on `train_dataset` and scored on `test_dataset`.

    Returns:
        dict with `mean_iou`, `accuracy@0.5`, `patch_grid_iou` (the mean IoU of the boxes
        around the patches truly inside: the probe's ceiling), `num_train_patches` and
        `num_test_examples`.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone()
    >>> batch = {"images": np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)),
    ...          "prompt_ids": [[5, 6, 1, 0], [7, 1, 0, 0]],
    ...          "box": [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]}
    >>> result = referring_probe_iou(backbone, [batch], [batch])
    >>> result["num_test_examples"], result["patch_grid_iou"]
    (2, 1.0)
    """
    rows = (
        (features[mask], _inside(cells, boxes)[mask].astype("int64"))
        for features, cells, mask, boxes in _examples(backbone, train_dataset)
    )
    weights, bias, num_train = fit_ridge_classifier(rows, 2, l2_regularization)
    ious, ceilings = [], []
    for features, cells, mask, boxes in _examples(backbone, test_dataset):
        scores = features @ weights + bias
        margin = np.where(mask, scores[..., 1] - scores[..., 0], -np.inf)
        truth = _inside(cells, boxes) & mask
        for i, box in enumerate(boxes):
            selected = margin[i] > 0
            if not selected.any():
                selected = margin[i] == margin[i].max()
            ious.append(box_iou(_bounding_box(cells[i], selected), box))
            ceilings.append(box_iou(_bounding_box(cells[i], truth[i]), box)
                            if truth[i].any() else 0.0)
    if not ious:
        raise ValueError("The test set gave no examples.")
    ious = np.asarray(ious)
    return {
        "mean_iou": float(ious.mean()),
        "accuracy@0.5": float((ious >= 0.5).mean()),
        "patch_grid_iou": float(np.mean(ceilings)),
        "num_train_patches": num_train,
        "num_test_examples": len(ious),
    }
