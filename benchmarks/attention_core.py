"""Attention core on XLA:CPU: `keras.ops.dot_product_attention` against the heads-major
matmuls our `MultiHeadAttention` uses on JAX and TensorFlow CPUs, forward and forward +
backward, under `jax.jit`.

    KERAS_BACKEND=jax python benchmarks/attention_core.py [--repeats 15]

Float32, a key mask that drops a fifth of the keys, at the main job's shape (batch 64 × 64
tokens, 4 heads of 16), the B/16 image tower's (8 × 197, 12 heads of 64) and a long NaFlex
sequence (8 × 1,024). On JAX's CPU backend `ops.dot_product_attention` is
`jax.nn.dot_product_attention(implementation="xla")`, a 5-D einsum over (batch, tokens, key
heads, query groups, head dim); `_heads_major_attention` moves the heads next to the batch
first, so that both products are plain batched matmuls.
"""

import argparse
import os

os.environ["KERAS_BACKEND"] = "jax"

import jax
import numpy as np
from keras import ops

from keras_siglip2.layers.attention import _heads_major_attention
from timing import interleaved, markdown_table, median

SHAPES = {  # batch, tokens, heads, head dim
    "main job": (64, 64, 4, 16), "B/16 image": (8, 197, 12, 64), "NaFlex 1024": (8, 1024, 12, 64),
}
CORES = ("ops.dot_product_attention", "heads-major matmuls")
PASSES = ("forward", "forward + backward")


def candidates(batch, tokens, heads, head_dim):
    rng = np.random.default_rng(0)
    q, k, v = (jax.numpy.asarray(rng.normal(size=(batch, tokens, heads, head_dim)), "float32")
               for _ in range(3))
    keep = jax.numpy.asarray(rng.random((batch, 1, 1, tokens)) > 0.2)
    cores = dict(zip(CORES, (
        lambda q, k, v: ops.dot_product_attention(q, k, v, mask=keep, scale=head_dim**-0.5),
        lambda q, k, v: _heads_major_attention(q, k, v, keep, head_dim**-0.5),
    )))
    out = {}
    for name, core in cores.items():
        forward = jax.jit(core)
        backward = jax.jit(jax.grad(lambda q, k, v, core=core: (core(q, k, v) ** 2).sum(),
                                    (0, 1, 2)))
        out[f"{name}|{PASSES[0]}"] = lambda f=forward: jax.block_until_ready(f(q, k, v))
        out[f"{name}|{PASSES[1]}"] = lambda f=backward: jax.block_until_ready(f(q, k, v))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rows = []
    for label, shape in SHAPES.items():
        times = interleaved(candidates(*shape), args.repeats, pause=0.02)
        for pass_ in PASSES:
            reference = median(times[f"{CORES[0]}|{pass_}"])
            for core in CORES:
                seconds = median(times[f"{core}|{pass_}"])
                rows.append([label, pass_, core, f"{seconds * 1e3:.2f}",
                             f"{reference / seconds:.2f}"])
    print(markdown_table(["shape", "pass", "core", "ms (median)", "speed-up"], rows))


if __name__ == "__main__":
    main()
