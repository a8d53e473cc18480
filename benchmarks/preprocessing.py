"""Images/s of the NaFlex preprocessing: our tf.data pipeline vs transformers' Siglip2 processor.

    python benchmarks/preprocessing.py [--images 64] [--batch 16] [--repeats 3]

The same uint8 photo-sized images (random sides in `--sides`, random aspect ratios, noise
pixels), held in memory, go through `dataset.map(NaFlexImageConverter(16, 256), AUTOTUNE)
.batch(B)` and through transformers' `Siglip2ImageProcessorPil` (what `Siglip2ImageProcessor`
is without torchvision) on PIL images, B at a time, both to padded (B, 256, 768) float32
patches. Interleaved rounds, medians. The dataset reads the images from one ragged tensor (a
Python generator would hold the GIL per image and cap the pipeline at its own rate); it is
built once, so tracing its map function is not timed, and iterated once per round (no cache).
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import PIL.Image
import tensorflow as tf
from transformers import Siglip2ImageProcessorPil

from keras_siglip2 import NaFlexImageConverter
from timing import interleaved, markdown_table, median


def tf_data_pipeline(images, converter, batch):
    pixels = tf.RaggedTensor.from_row_lengths(
        np.concatenate([x.ravel() for x in images]), [x.size for x in images])
    shapes = np.array([x.shape for x in images], np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((pixels, shapes)).map(tf.reshape)
    dataset = dataset.map(converter, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch).prefetch(tf.data.AUTOTUNE)

    def run():
        for _ in dataset:
            pass
    return run


def transformers_processor(images, processor, batch):
    pil = [PIL.Image.fromarray(x) for x in images]

    def run():
        for start in range(0, len(pil), batch):
            processor(pil[start:start + batch], return_tensors="np")
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sides", type=int, nargs=2, default=[240, 1024])
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--max-patches", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*rng.integers(*args.sides, 2), 3), dtype=np.uint8)
              for _ in range(args.images)]
    times = interleaved({
        "ours: tf.data + NaFlexImageConverter": tf_data_pipeline(
            images, NaFlexImageConverter(args.patch_size, args.max_patches), args.batch),
        "transformers Siglip2ImageProcessorPil": transformers_processor(
            images, Siglip2ImageProcessorPil(patch_size=args.patch_size,
                                             max_num_patches=args.max_patches), args.batch),
    }, args.repeats)
    reference = median(times["transformers Siglip2ImageProcessorPil"])
    rows = [[name, f"{args.images / median(s):.1f}", f"{reference / median(s):.2f}"]
            for name, s in times.items()]
    print(f"{args.images} images, sides {args.sides[0]}–{args.sides[1]} px, batch {args.batch}, "
          f"patch {args.patch_size}, {args.max_patches} patches\n")
    print(markdown_table(["pipeline", "images/s", "vs transformers"], rows))


if __name__ == "__main__":
    main()
