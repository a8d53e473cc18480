"""Timing shared by the benchmarks: interleaved repetitions, medians, matmul-rate probes.

On a shared machine the load drifts during a run, so every candidate is timed once per round
(in a shuffled order) and the figures are medians over rounds: ratios between candidates of
the same run hold even when the absolute numbers do not.
"""

import time

import keras
import numpy as np


def interleaved(candidates, repeats, warmup=1, pause=0.2):
    """{name: [seconds per call]} for `candidates` {name: zero-argument callable}.

    Each callable is first called `warmup` times (compilation), then once per round for
    `repeats` rounds, in an order shuffled per round (seeded), with `pause` seconds of sleep
    before each call, so that no candidate always runs right after the same one or in its
    wake: a numpy matmul's OpenBLAS threads keep spinning for a moment after it returns,
    which cost the candidate that followed it 20-30 % on torch.

    >>> times = interleaved({"a": lambda: None, "b": lambda: sum(range(100))}, repeats=3,
    ...                     pause=0)
    >>> sorted(times), len(times["a"])
    (['a', 'b'], 3)
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in candidates}
    rng = np.random.default_rng(0)
    for _ in range(repeats):
        for name in rng.permutation(list(candidates)):
            time.sleep(pause)
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(seconds):
    return float(np.median(seconds))


def matmul_probes(shapes=((2048, 2048, 2048),)):
    """{name: (callable, FLOPs)}: a float32 (m, k) @ (k, n) product in numpy and in the current
    Keras backend (`keras.ops.matmul`) for each (m, k, n) of `shapes`, to time as more
    candidates in the same interleaved rounds as the models (so that they see the same load).

    The machine's matmul rate is the fastest of them (`interleaved_with_matmul`): which library
    is fastest, and at which shape, depends on the CPU (on one of our machines numpy's OpenBLAS
    ran a 2048³ product at 205 GFLOP/s and XLA at 300, at a ViT's MLP shape at 207 and 406).

    >>> probes = matmul_probes([(64, 32, 16)])
    >>> sorted(probes), probes["matmul numpy 64×32×16"][1]
    (['matmul keras 64×32×16', 'matmul numpy 64×32×16'], 65536)
    >>> tuple(probes["matmul keras 64×32×16"][0]().shape)
    (64, 16)
    """
    rng = np.random.default_rng(0)
    probes = {}
    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        ta, tb = keras.ops.convert_to_tensor(a), keras.ops.convert_to_tensor(b)
        name, flops = f"{m}×{k}×{n}", 2 * m * k * n
        probes[f"matmul numpy {name}"] = (lambda a=a, b=b: a @ b), flops
        probes[f"matmul keras {name}"] = (lambda a=ta, b=tb: _ready(keras.ops.matmul(a, b))), flops
    return probes


def _ready(x):
    """`x` once computed (JAX dispatches asynchronously; TensorFlow and torch on CPU do not)."""
    return x.block_until_ready() if hasattr(x, "block_until_ready") else x


def interleaved_with_matmul(candidates, repeats, shapes=((2048, 2048, 2048),)):
    """(times, FLOP/s, name): `candidates` timed by `interleaved` in the same rounds as
    `matmul_probes(shapes)`, with the rate and name of the fastest probe (the machine's matmul
    rate); `times` holds the candidates only.

    >>> times, rate, fastest = interleaved_with_matmul({"a": lambda: None}, 2, [(8, 8, 8)])
    >>> sorted(times), rate > 0, fastest.startswith("matmul")
    (['a'], True, True)
    """
    probes = matmul_probes(shapes)
    times = interleaved({**candidates, **{name: fn for name, (fn, _) in probes.items()}}, repeats)
    rates = {name: flops / median(times.pop(name)) for name, (_, flops) in probes.items()}
    fastest = max(rates, key=rates.get)
    return times, rates[fastest], fastest


def vit_flops(tokens, width, depth, mlp_dim, input_dim=0, map_head=False):
    """Forward FLOPs (2 per multiply-add) of a pre-LN ViT/text encoder on one example.

    Matmuls only (embedding of `input_dim`-wide inputs, q/k/v/out, attention scores and
    mixing, MLP; plus a one-query MAP head): norms and activations are noise next to them.

    >>> round(vit_flops(196, 768, 12, 3072, input_dim=768, map_head=True) / 1e9, 1)
    35.4
    """
    per_layer = 2 * tokens * (4 * width**2 + 2 * width * mlp_dim) + 4 * tokens**2 * width
    head = 0
    if map_head:
        head = 2 * (2 * width**2 + 2 * tokens * width**2) + 4 * tokens * width
        head += 2 * 2 * width * mlp_dim
    return 2 * tokens * input_dim * width + depth * per_layer + head


def markdown_table(headers, rows):
    """The rows as a Markdown table (numbers already formatted as strings).

    >>> print(markdown_table(["a", "b"], [["1", "2"]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
