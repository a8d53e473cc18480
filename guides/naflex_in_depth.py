"""
Title: NaFlex in depth: native aspect ratio, any sequence length
Author: keras_siglip2 developers
Description: What `NaFlexImageConverter` produces, how the sequence length trades accuracy
for speed (measured), and training on several lengths at once.
Accelerator: GPU recommended (runs on a CPU, slowly)
"""

"""
## Setup

The project has no public release yet: put a checkout of keras_siglip2 on the machine at
`./keras_siglip2` (in Colab, upload a zip of it in the Files pane and run
`!unzip -q keras_siglip2.zip`), then install it (the notebook's first cell does):
`!pip install ./keras_siglip2`

The guide loads the released `siglip2_base_patch16_naflex` (a download of about 1.5 GB).
The test suite runs it with `GUIDE_STEPS` set: then a tiny random NaFlex model, written as a
local checkpoint, stands in for it (no download), at shorter sequence lengths, and the
accuracies are those of chance. Pick the backend with `KERAS_BACKEND`.
"""

import os
import pathlib
import tempfile
import time

import keras
import numpy as np
from PIL import Image, ImageDraw

from keras_siglip2 import (
    NaFlexImageConverter,
    SigLIP2Backbone,
    SigLIP2Tokenizer,
    SigLIP2Trainer,
    evaluation,
)
from keras_siglip2.testing import save_tiny_random_checkpoint
from keras_siglip2.datasets import scenes
from keras_siglip2.evaluation.batches import encode_image_batch
from keras_siglip2.plots import plot_curves
from keras_siglip2.preprocessing import naflex_multi_length_batches, naflex_target_size

TINY = "GUIDE_STEPS" in os.environ
STEPS = int(os.environ.get("GUIDE_STEPS", 100))
OUTPUT = pathlib.Path(os.environ.get("GUIDE_OUTPUT", "naflex_lengths.png"))
if TINY:
    PRESET = save_tiny_random_checkpoint(pathlib.Path(tempfile.mkdtemp()), naflex=True)
    LENGTHS, NUM_IMAGES = (16, 32, 64), 8
    print("GUIDE_STEPS is set: a tiny RANDOM model stands in for the released checkpoint.")
else:
    PRESET = "siglip2_base_patch16_naflex"
    LENGTHS, NUM_IMAGES = (64, 144, 256, 576, 1024), 128
keras.utils.set_random_seed(0)

backbone = SigLIP2Backbone.from_preset(PRESET)
tokenizer = SigLIP2Tokenizer.from_preset(PRESET)
PATCH = backbone.vision_encoder.patch_size

"""
## From an image to a patch sequence

A fixed-resolution SigLIP resizes every image to one square. NaFlex keeps the aspect ratio:
for a budget of N patches of P × P pixels, `naflex_target_size` finds the largest scale at
which the image, rounded up to whole patches on each side, has at most N patches. The image
is resized to that size (scaled to [-1, 1] first, bilinear with antialiasing, as big_vision),
cut into patches row by row, and padded to N. `NaFlexImageConverter` returns:

- `patches` (N, P·P·3): each patch's pixels, flattened;
- `patch_coords` (N, 2): each patch's (row, column) in the image's patch grid;
- `patch_mask` (N,): 1 for a real patch, 0 for padding (attention ignores padding);
- `spatial_shapes` (2,): the grid, (rows, columns).

The image tower adds to each patch a learned position embedding (a square grid, resized to
the image's grid) and pools the real patches with attention.
"""

picture = scenes.example("test", 3, language="en", num_objects=2)["image"]
height, width = picture.shape[:2]
for n in LENGTHS:
    print(f"{height} x {width} px, {n:4d} patches -> {naflex_target_size(height, width, PATCH, n)}")

converter = NaFlexImageConverter(PATCH, LENGTHS[1])
one = converter(picture)
rows, cols = (int(v) for v in one["spatial_shapes"])
print({k: v.shape for k, v in one.items()}, "grid", (rows, cols), "real",
      int(one["patch_mask"].sum()))
print("first coords", one["patch_coords"][:4].tolist(), "last real", one["patch_coords"][
    rows * cols - 1].tolist())

"""
The patches are the image itself: put each one back at its coordinates and the resized
image reappears. Below, the same picture at each sequence length, with its patch grid.
"""


def from_patches(inputs):
    """The (rows·P, cols·P, 3) uint8 image that a converter's output holds."""
    rows, cols = inputs["spatial_shapes"]
    image = np.zeros((rows * PATCH, cols * PATCH, 3), "float32")
    for patch, (r, c), real in zip(inputs["patches"], inputs["patch_coords"],
                                   inputs["patch_mask"]):
        if real:
            image[r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH] = patch.reshape(
                PATCH, PATCH, 3)
    return ((image + 1) * 127.5).clip(0, 255).astype("uint8")


def draw_grids(picture, lengths, path):
    """The picture at each length, as its patches hold it, with the patch grid, side by side."""
    tiles = []
    for n in lengths:
        inputs = NaFlexImageConverter(PATCH, n)(picture)
        rows, cols = (int(v) for v in inputs["spatial_shapes"])
        tile = Image.fromarray(from_patches(inputs))
        pen = ImageDraw.Draw(tile)
        for x in range(0, tile.width + 1, PATCH):
            pen.line([(x, 0), (x, tile.height)], fill=(255, 255, 255))
        for y in range(0, tile.height + 1, PATCH):
            pen.line([(0, y), (tile.width, y)], fill=(255, 255, 255))
        tiles.append((f"{n} patches: {rows} x {cols}", tile))
    canvas = Image.new("RGB", (sum(t.width + 10 for _, t in tiles), 20 + max(
        t.height for _, t in tiles)), "white")
    x = 0
    for title, tile in tiles:
        canvas.paste(tile, (x, 20))
        ImageDraw.Draw(canvas).text((x, 4), title, fill="black")
        x += tile.width + 10
    canvas.save(path)


grids = OUTPUT.with_name(OUTPUT.stem + "_patches.png")
draw_grids(picture, LENGTHS, grids)
print("saved", grids)
Image.open(grids)  # a notebook shows the figure here

"""
## Sequence length: accuracy against speed

One checkpoint runs at any length; the released ones were trained at several lengths and
are evaluated at 256 patches. Fewer patches cost less compute (attention grows with the square
of the length) and see less detail. Three measurements per length, on single-object test
images of `scenes`:

- the cosine between each image's embedding and its embedding at the longest length;
- zero-shot top-1 accuracy on the object's shape (`evaluation.zero_shot_accuracy`);
- images per second through the image tower (compiled once per length, then timed).
"""

images = [scenes.example("test", i, language="en", num_objects=1) for i in range(NUM_IMAGES)]
labels = np.array([ex["shape"][0] for ex in images])
classifier = evaluation.zero_shot_classifier(
    backbone, tokenizer, scenes.class_names("shape", "en"), scenes.prompt_templates("en", "shape")
)
CHUNK = 8 if TINY else 32  # images per call (attention memory grows with length squared)
embeddings, accuracy, speed = {}, {}, {}
for n in LENGTHS:
    inputs = {**NaFlexImageConverter(PATCH, n)([ex["image"] for ex in images]), "label": labels}
    chunks = [{k: v[i:i + CHUNK] for k, v in inputs.items()} for i in range(0, NUM_IMAGES, CHUNK)]
    # The first pass compiles the tower for this length; the timed ones reuse it.
    embeddings[n] = np.concatenate([encode_image_batch(backbone, c)["embeddings"] for c in chunks])
    repeats = 10 if TINY else 3
    start = time.perf_counter()
    for _ in range(repeats):
        for chunk in chunks:
            encode_image_batch(backbone, chunk)
    speed[n] = repeats * NUM_IMAGES / (time.perf_counter() - start)
    accuracy[n] = evaluation.zero_shot_accuracy(backbone, classifier, chunks, top_k=(1,))[
        "top1_accuracy"]
reference = embeddings[LENGTHS[-1]]
cosine = {n: float((embeddings[n] * reference).sum(-1).mean()) for n in LENGTHS}
print(f"{'patches':>8s} {'cosine':>8s} {'accuracy':>9s} {'images/s':>9s}")
for n in LENGTHS:
    print(f"{n:8d} {cosine[n]:8.4f} {accuracy[n]:9.3f} {speed[n]:9.1f}")

at = ", ".join(map(str, LENGTHS))
plot_curves({
    f"mean cosine to the {LENGTHS[-1]}-patch embedding, at {at} patches": list(cosine.values()),
    f"zero-shot shape accuracy, at {at} patches": list(accuracy.values()),
    f"images/s ({keras.config.backend()}), at {at} patches": list(speed.values()),
}, OUTPUT)
print("saved", OUTPUT)
Image.open(OUTPUT)  # a notebook shows the figure here

"""
Read the plot for the point where the accuracy stops improving while the throughput keeps
falling: that is the length to serve at for images like these. Images with small details
(text, small objects) need longer sequences than these shapes.

## Training on several lengths

SigLIP 2 trains NaFlex at several sequence lengths so that one model serves them all. A
compiled train step needs one static shape per batch: `naflex_multi_length_batches` gives
each example one length (round robin), converts and batches each length separately, and
interleaves the batches in a seeded random order. `fit` traces the step once per length.
"""

train_lengths = LENGTHS[:2] if TINY else (128, 256)
examples = scenes.load("train", language="en").map(
    lambda ex: {"image": ex["image"], "token_ids": tokenizer(ex["caption"])}
)
batches = naflex_multi_length_batches(examples, PATCH, train_lengths, batch_size=8 if TINY
                                      else 16)
print([int(b["patches"].shape[1]) for b in batches.take(6)])

trainer = SigLIP2Trainer(backbone)
trainer.compile(optimizer=keras.optimizers.AdamW(1e-3 if TINY else 1e-5, weight_decay=1e-4))
history = trainer.fit(batches, epochs=1, steps_per_epoch=STEPS, verbose=2)
print("sigmoid loss", history.history["sigmoid_loss"])

"""
The fine-tuned tower still takes every length; rerun the measurements above on it to see
what the training changed at each one.
"""
