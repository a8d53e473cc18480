"""The recipe ablation at small scale: the same budget with the sigmoid loss alone, + LocCa,
and + LocCa + SILC/TIPS, each evaluated on the embedded dataset's test split.

    KERAS_BACKEND=jax python benchmarks/ablation.py [--steps 500] [--workdir ablation]
        [--recipes sigmoid "+ LocCa" "+ LocCa + SILC/TIPS"]

Prints one row per recipe: zero-shot colour / shape accuracy, text→image R@1, referring box
IoU (LocCa rows only: the others have no decoder) and the dense probe's mIoU. The paper's claim
at scale: the added terms improve localisation and dense features without hurting zero-shot.
"""

import argparse
import dataclasses
import pathlib
import time

from keras_siglip2.main_job import MainJobConfig, evaluate, train

RECIPES = {
    "sigmoid": dict(locca=False, self_distillation=False),
    "+ LocCa": dict(locca=True, self_distillation=False),
    "+ LocCa + SILC/TIPS": dict(locca=True, self_distillation=True),
}
COLUMNS = {
    "zero-shot colour accuracy": "colour", "zero-shot shape accuracy": "shape",
    "text to image recall@1": "T→I R@1", "referring box IoU": "box IoU",
    "dense probe mIoU": "probe mIoU",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=MainJobConfig.steps)
    parser.add_argument("--batch-size", type=int, default=MainJobConfig.batch_size)
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument("--workdir", default="ablation")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES),
                        help="the rows to run (default: all)")
    args = parser.parse_args()
    rows = {}
    for name in args.recipes:
        switches = RECIPES[name]
        config = dataclasses.replace(
            MainJobConfig(steps=args.steps, batch_size=args.batch_size), **switches
        )
        workdir = pathlib.Path(args.workdir) / name.replace(" ", "").replace("/", "_")
        start = time.perf_counter()
        train(config, workdir, verbose=0)
        trained = time.perf_counter()
        results = evaluate(workdir / "checkpoint", num_examples=args.eval_examples,
                           probe_examples=max(1, args.eval_examples // 2))
        minutes = ((trained - start) / 60, (time.perf_counter() - trained) / 60)
        rows[name] = (results, minutes)
        print(f"{name}: trained {args.steps} steps in {minutes[0]:.1f} min, evaluated in "
              f"{minutes[1]:.1f} min: {results}", flush=True)
    print(f"| recipe | {' | '.join(COLUMNS.values())} | train min | eval min |")
    print("|" + "---|" * (len(COLUMNS) + 3))
    for name, (results, minutes) in rows.items():
        cells = [f"{results[k]:.3f}" if k in results else "–" for k in COLUMNS]
        print(f"| {name} | {' | '.join(cells)} | {minutes[0]:.1f} | {minutes[1]:.1f} |")


if __name__ == "__main__":
    main()
