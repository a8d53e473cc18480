"""The referring-box probe on frozen features: it reads boxes when the features hold them."""

import numpy as np
import pytest

from conftest import tiny_backbone
from keras_siglip2.evaluation import referring_probe_iou

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLOURS = np.array([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]], "float32")


def _scenes(count, seed, shuffle_prompts=False):
    """32 px images (a 4 × 4 grid of 8 px patches) with two squares of different colours, one
    cell each, and the prompt naming one square's colour (token 2 + colour)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 32, 32, 3), "float32")
    prompts = np.zeros((count, 8), "int32")
    boxes = np.zeros((count, 4), "float32")
    for i in range(count):
        cells = rng.choice(16, 2, replace=False)
        colours = rng.choice(len(COLOURS), 2, replace=False)
        for cell, colour in zip(cells, colours):
            row, col = divmod(int(cell), 4)
            images[i, row * 8:(row + 1) * 8, col * 8:(col + 1) * 8] = COLOURS[colour]
        target = rng.integers(2)
        row, col = divmod(int(cells[target]), 4)
        boxes[i] = [row / 4, col / 4, (row + 1) / 4, (col + 1) / 4]
        prompts[i, :2] = [2 + colours[target], 1]
    if shuffle_prompts:
        prompts = prompts[rng.permutation(count)]
    return [{"images": images[s:s + 50], "prompt_ids": prompts[s:s + 50], "box": boxes[s:s + 50]}
            for s in range(0, count, 50)]


def test_probe_finds_the_named_object_and_needs_the_text():
    backbone = tiny_backbone()
    found = referring_probe_iou(backbone, _scenes(400, seed=0), _scenes(100, seed=1))
    # Each box is one grid cell, so the ceiling is exact, and an untrained tower's patch tokens
    # still tell the colours apart: the bilinear head must pick the named square.
    assert found["patch_grid_iou"] == 1.0
    assert found["num_test_examples"] == 100
    assert found["mean_iou"] > 0.9, found
    # With prompts that do not match their images, the same head can only guess which of the
    # two squares is meant (IoU 0.5 expected).
    blind = referring_probe_iou(
        backbone, _scenes(400, seed=0, shuffle_prompts=True), _scenes(100, seed=1)
    )
    assert blind["mean_iou"] < 0.7, blind


def test_probe_rejects_batches_without_boxes():
    batch = _scenes(50, seed=0)[0]
    del batch["box"]
    with pytest.raises(KeyError, match="prompt_ids.*box"):
        referring_probe_iou(tiny_backbone(), [batch], [batch])
