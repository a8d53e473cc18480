"""Images/s of the NaFlex image tower: padded batch vs sequence packing, same weights.

    KERAS_BACKEND=jax python benchmarks/naflex_packing.py [--images 32] [--repeats 3]

A mixed batch of scenes-like images (sides drawn uniformly in `scenes.IMAGE_SIDE_RANGE`,
independent height and width) at most `--max-patches` patches each. `--grids native` keeps
each image's own patch grid (NaViT-style, shrunk only to fit the maximum), so small images
leave most of a padded row empty; `--grids naflex` resizes every image as SigLIP 2's NaFlex
pipeline does (`naflex_target_size`: scaled up or down to fill the maximum), which leaves
almost no padding. Both paths run through `predict_on_batch`, timed in interleaved rounds
(medians); packing itself (numpy, in the input pipeline) is timed separately.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

from keras_siglip2 import SigLIP2NaFlexVisionEncoder
from keras_siglip2.datasets.scenes import IMAGE_SIDE_RANGE
from keras_siglip2.models import PackedNaFlexVisionEncoder, pack_naflex_batch
from keras_siglip2.preprocessing import naflex_target_size
from keras_siglip2.testing import random_naflex_batch
from timing import interleaved, markdown_table, median

WIDTHS = {  # hidden_dim, num_layers, num_heads, intermediate_dim
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
}


def grid(height, width, patch_size, max_patches, mode):
    if mode == "naflex":
        h, w = naflex_target_size(height, width, patch_size, max_patches)
        return h // patch_size, w // patch_size
    rows, cols = -(-height // patch_size), -(-width // patch_size)
    while rows * cols > max_patches:  # Shrink (keeping the aspect ratio) only to fit.
        scale = (max_patches / (rows * cols)) ** 0.5
        rows, cols = max(1, int(rows * scale)), max(1, int(cols * scale))
    return rows, cols


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--max-patches", type=int, default=256)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--model", choices=sorted(WIDTHS), default="S")
    parser.add_argument("--grids", choices=["native", "naflex"], nargs="+",
                        default=["native", "naflex"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    hidden, layers, heads, mlp = WIDTHS[args.model]
    keras.utils.set_random_seed(0)
    encoder = SigLIP2NaFlexVisionEncoder(args.patch_size, hidden, layers, heads, mlp)
    packed_encoder = PackedNaFlexVisionEncoder(encoder)
    rng = np.random.default_rng(0)
    sides = rng.integers(IMAGE_SIDE_RANGE[0], IMAGE_SIDE_RANGE[1] + 1, (args.images, 2))
    rows = []
    for mode in args.grids:
        shapes = [grid(h, w, args.patch_size, args.max_patches, mode) for h, w in sides]
        batch = random_naflex_batch(shapes, args.max_patches, args.patch_size)
        start = time.perf_counter()
        packed = pack_naflex_batch(batch, args.max_patches)
        pack_ms = (time.perf_counter() - start) * 1e3
        times = interleaved({
            "padded": lambda b=batch: encoder.predict_on_batch(b)["pooled_output"],
            "packed": lambda p=packed: packed_encoder.predict_on_batch(p),
        }, args.repeats)
        error = np.abs(encoder.predict_on_batch(batch)["pooled_output"]
                       - packed_encoder.predict_on_batch(packed)).max()
        real = batch["patch_mask"].sum()
        for name, tokens in (("padded", batch["patch_mask"].size),
                             ("packed", packed["segment_ids"].size)):
            s = median(times[name])
            rows.append([
                mode, name, str(tokens // args.max_patches), f"{1 - real / tokens:.0%}",
                f"{args.images / s:.2f}", f"{median(times['padded']) / s:.2f}",
                f"{pack_ms:.1f}" if name == "packed" else "–",
                f"{error:.1e}" if name == "packed" else "–",
            ])
    print(f"backend {keras.config.backend()}, {args.model}/{args.patch_size} NaFlex tower, "
          f"{args.images} images, {args.max_patches} patches per row\n")
    print(markdown_table(
        ["grids", "batch", "rows", "padding", "images/s", "speed-up", "packing ms",
         "max |Δ| vs padded"], rows))


if __name__ == "__main__":
    main()
