"""Sigmoid loss value + gradient: dense vs chunked, peak memory and time (JAX, jit).

    KERAS_BACKEND=jax python benchmarks/sigmoid_loss.py [--batches 4096 16384 65536]

Memory is XLA's own account of the compiled program (arguments + outputs + temporaries),
so it is exact and needs no allocation; the time is the median of `--repeats` runs, and a
configuration is only run when its memory fits in `--max-gib`.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import numpy as np
from keras import ops

from keras_siglip2.losses import chunked_sigmoid_loss, sigmoid_loss


def dense(x, y, t, b):
    return ops.mean(sigmoid_loss(ops.exp(t) * ops.matmul(x, ops.transpose(y)) + b))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-gib", type=float, default=20.0)
    args = parser.parse_args()

    print(f"{'batch':>7} {'loss':>8} {'peak GiB':>9} {'seconds':>8} {'value':>12}")
    for batch in args.batches:
        key = jax.random.PRNGKey(batch)
        x, y = jax.random.normal(key, (2, batch, args.width), "float32")
        x = x / jax.numpy.linalg.norm(x, axis=-1, keepdims=True)
        y = y / jax.numpy.linalg.norm(y, axis=-1, keepdims=True)
        inputs = (x, y, np.float32(np.log(10.0)), np.float32(-10.0))
        for name, fn in (
            ("dense", dense),
            ("chunked", lambda *a: chunked_sigmoid_loss(*a, chunk_size=args.chunk)),
        ):
            step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 3)))
            compiled = step.lower(*inputs).compile()
            memory = compiled.memory_analysis()
            peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                    + memory.temp_size_in_bytes) / 2**30
            if peak > args.max_gib:
                print(f"{batch:>7} {name:>8} {peak:>9.2f} {'skipped':>8} {'-':>12}")
                continue
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                value, grads = compiled(*inputs)
                jax.block_until_ready(grads)
                times.append(time.perf_counter() - start)
            seconds = np.median(times)
            print(f"{batch:>7} {name:>8} {peak:>9.2f} {seconds:>8.2f} {float(value):>12.6f}")


if __name__ == "__main__":
    main()
