"""Timing shared by the benchmarks: interleaved repetitions, medians, a matmul-rate probe.

On a shared machine the load drifts during a run, so every candidate is timed once per round
(in a shuffled order) and the figures are medians over rounds: ratios between candidates of
the same run hold even when the absolute numbers do not.
"""

import time

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


def matmul_probe(n=2048):
    """(callable, FLOPs): one float32 n³ numpy matmul, to time as one more candidate in the
    same interleaved rounds as the models, so that its rate sees the same load they do.

    >>> probe, flops = matmul_probe(n=64)
    >>> probe().shape, flops
    ((64, 64), 524288)
    """
    a, b = np.random.default_rng(0).standard_normal((2, n, n), dtype=np.float32)
    return (lambda: a @ b), 2 * n**3


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
