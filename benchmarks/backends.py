"""The public `encode_images` / `encode_text` on each Keras backend, in one sitting: ratios to JAX.

    python benchmarks/backends.py [--batches 1 8] [--repeats 5] [--towers image text]

A backend is fixed per process, so one worker process per backend builds our B/16 backbone as
`inference.py` does (float32, random weights, seed 0; image tower at 224 px, text at 64
tokens) and waits for requests; the parent times one call per candidate per round, in a
shuffled order (`timing.interleaved`), so every backend sees the same load. Candidates: the
public call as a user makes it (`compiled=True`) on JAX, TensorFlow and PyTorch, and on
PyTorch also `compiled="max"` (the exported program compiled with `torch.compile`) and
`compiled=False` under `torch.no_grad` (Keras's layer-by-layer call). "first call" is each
candidate's first call of the shape (the compilation included). "× JAX" is the candidate's
speed over JAX's public call (target for PyTorch: ≥ 0.85).
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import time

import numpy as np

from timing import interleaved, markdown_table, median

CANDIDATES = {"jax": [True], "tensorflow": [True], "torch": [True, "max", False]}


def worker():
    """Serves requests (JSON lines on stdin: tower, batch, compiled) with one call each."""
    import keras

    from inference import Models  # the backbone `inference.py` times, alone

    backbone = Models(towers=[], vocabulary_size=32_000).backbone
    rng = np.random.default_rng(0)
    inputs = {}
    print("ready", flush=True)
    for line in sys.stdin:
        tower, batch, compiled = json.loads(line)
        if (tower, batch) not in inputs:
            inputs[tower, batch] = (
                rng.uniform(-1, 1, (batch, 224, 224, 3)).astype("float32") if tower == "image"
                else rng.integers(1, 32_000, (batch, 64)).astype("int32")
            )
        encode = backbone.encode_images if tower == "image" else backbone.encode_text
        if compiled is False:  # what the public call was on torch before 2026-12-07
            import torch

            with torch.no_grad():
                keras.ops.convert_to_numpy(encode(inputs[tower, batch], compiled=False))
        else:
            np.asarray(encode(inputs[tower, batch], compiled=compiled))
        print("done", flush=True)


class Worker:
    def __init__(self, backend):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "KERAS_BACKEND": backend},
        )
        self._expect("ready")

    def _expect(self, word):
        while (line := self.process.stdout.readline()) and line.strip() != word:
            pass
        if not line:
            raise RuntimeError(f"A benchmark worker exited (rc {self.process.wait()}).")

    def call(self, tower, batch, compiled):
        self.process.stdin.write(json.dumps([tower, batch, compiled]) + "\n")
        self.process.stdin.flush()
        self._expect("done")

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--towers", nargs="+", default=["image", "text"])
    parser.add_argument("--backends", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()
    workers = {backend: Worker(backend) for backend in args.backends}
    rows = []
    for tower in args.towers:
        for batch in args.batches:
            candidates, first = {}, {}
            for backend in args.backends:
                for compiled in CANDIDATES[backend]:
                    name = f"{backend}, compiled={compiled!r}"
                    call = functools.partial(workers[backend].call, tower, batch, compiled)
                    start = time.perf_counter()
                    call()
                    first[name] = time.perf_counter() - start
                    candidates[name] = call
            times = interleaved(candidates, args.repeats)
            reference = median(times["jax, compiled=True"]) if "jax" in workers else None
            for name, seconds in times.items():
                s = median(seconds)
                ratio = f"{reference / s:.2f}" if reference else "–"
                rows.append([tower, str(batch), name, f"{batch / s:.2f}", ratio,
                             f"{first[name]:.1f}"])
    for w in workers.values():
        w.close()
    print(markdown_table(
        ["tower", "batch", "backend, public call", "examples/s", "× JAX", "first call (s)"],
        rows))


if __name__ == "__main__":
    main()
