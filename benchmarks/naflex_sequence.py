"""Images/s of the NaFlex B/16 image tower against sequence length, and against a
fixed-resolution tower at the same 256 patches.

    KERAS_BACKEND=jax python benchmarks/naflex_sequence.py [--batch 8] [--repeats 3]
        [--lengths 128 256 576 1024]

Float32, random weights, `predict_on_batch`. At 256 patches the NaFlex tower (a full 16 × 16
grid, no padding) runs against `SigLIP2VisionEncoder` at 256 px (16 × 16 patches of 16 px):
the same matmuls, plus NaFlex's per-token position-embedding resize and key mask. The sweep
gives each length's images/s and its share of the matmul rate (the faster of a float32 2048³
product in numpy and in the Keras backend, timed in the same interleaved rounds), each length
filled by the squarest grid that fits it.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

from keras_siglip2 import SigLIP2NaFlexVisionEncoder, SigLIP2VisionEncoder
from keras_siglip2.testing import random_naflex_batch
from timing import interleaved_with_matmul, markdown_table, median, vit_flops

B16 = dict(hidden_dim=768, num_layers=12, num_heads=12, intermediate_dim=3072)


def squarest_grid(length):
    """(rows, cols) with rows × cols ≤ `length`, as square as possible.

    >>> squarest_grid(256), squarest_grid(128), squarest_grid(576)
    ((16, 16), (11, 11), (24, 24))
    """
    rows = int(length**0.5)
    return rows, length // rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 576, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    naflex = SigLIP2NaFlexVisionEncoder(patch_size=16, position_grid_size=16, **B16)
    fixed = SigLIP2VisionEncoder(image_size=256, patch_size=16, **B16)
    print(f"backend {keras.config.backend()}, batch {args.batch}\n")

    batches = {n: random_naflex_batch([squarest_grid(n)] * args.batch, n, 16)
               for n in args.lengths}
    images = rng.uniform(-1, 1, (args.batch, 256, 256, 3)).astype("float32")
    candidates, tokens = {}, {}  # tokens: name → (sequence length, real patches)
    for n, b in batches.items():
        candidates[f"naflex {n}"] = lambda b=b: naflex.predict_on_batch(b)["pooled_output"]
        tokens[f"naflex {n}"] = (n, int(b["patch_mask"][0].sum()))
    if 256 in batches:
        candidates["fixed 256 px"] = lambda: fixed.predict_on_batch(images)["pooled_output"]
        tokens["fixed 256 px"] = (256, 256)
    times, rate, fastest = interleaved_with_matmul(candidates, args.repeats)

    rows = []
    for name, seconds in times.items():
        length, real = tokens[name]
        flops = vit_flops(length, 768, 12, 3072, input_dim=16 * 16 * 3, map_head=True)
        s = median(seconds)
        rows.append([name, str(length), str(real), f"{args.batch / s:.2f}",
                     f"{args.batch * flops / s / rate:.0%}"])
    if "fixed 256 px" in times:
        ratio = median(times["fixed 256 px"]) / median(times["naflex 256"])
        print(f"NaFlex at 256 patches runs at {ratio:.3f}× the fixed 256-patch tower's speed")
    print(f"matmul rate (fastest probe, {fastest}): {rate / 1e9:.0f} GFLOP/s in the same rounds\n")
    print(markdown_table(
        ["model", "tokens", "real patches", "images/s", "of matmul"], rows))


if __name__ == "__main__":
    main()
