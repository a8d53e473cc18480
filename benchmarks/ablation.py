"""The recipe ablation at small scale, with spreads: the main job's model trained at one budget
with the sigmoid loss alone, + LocCa, and + LocCa + SILC/TIPS, at several seeds, next to the
same model untrained, every row measured by the same evaluators.

    KERAS_BACKEND=jax python benchmarks/ablation.py [--steps 3600] [--seeds 0 1 2]
        [--workdir ablation] [--rows untrained sigmoid "+ LocCa" "+ LocCa + SILC/TIPS"]
    KERAS_BACKEND=jax python benchmarks/ablation.py --long    # 4x the steps, for the trend

Columns: zero-shot colour / shape accuracy, text→image R@1, and the probes on frozen features,
fitted identically for every row: the linear shape probe on the image embedding, the
referring-box probe on the patch tokens and the expression's text embedding
(`referring_probe_iou`) and the dense linear probe (mIoU). The LocCa decoder's own box IoU is
shown for the rows that have a decoder. Each cell is the mean ± the sample standard deviation
over the seeds; below, each row's paired difference to the sigmoid row (mean ± standard
deviation of the per-seed differences, same seed = same initialisation and data order).
Finished runs in `--workdir` are reused (their evaluation is cached in `results.json`), so an
interrupted ablation continues where it stopped.
"""

import argparse
import dataclasses
import json
import pathlib
import time

import numpy as np

from keras_siglip2 import huge_pages
from keras_siglip2.datasets import scenes
from keras_siglip2.main_job import MainJobConfig, build_trainer, evaluate, image_converters, train

ROWS = {
    "untrained": None,
    "sigmoid": dict(locca=False, self_distillation=False),
    "+ LocCa": dict(locca=True, self_distillation=False),
    "+ LocCa + SILC/TIPS": dict(locca=True, self_distillation=True),
}
COLUMNS = {
    "zero-shot colour accuracy": "colour", "zero-shot shape accuracy": "shape",
    "text to image recall@1": "T→I R@1", "linear probe shape accuracy": "shape probe",
    "referring probe box IoU": "box probe", "dense probe mIoU": "dense mIoU",
    "referring box IoU": "LocCa box IoU",
}


def untrained_model(config):
    """The main job's model as initialised at `config.seed`, as `load_checkpoint` returns it."""
    tokenizer = scenes.tokenizer(sequence_length=config.text_length)
    trainer, vocabulary = build_trainer(
        dataclasses.replace(config, locca=False), tokenizer.vocabulary_size()
    )
    return {"backbone": trainer.backbone, "tokenizer": tokenizer,
            "image_converter": image_converters(config)[0], "decoder": None,
            "vocabulary": vocabulary}


def run(name, config, workdir, eval_examples):
    """`evaluate`'s results of one row at one seed, trained (or read back) in `workdir`."""
    cached = workdir / "results.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    start = time.perf_counter()
    if ROWS[name] is None:
        model = untrained_model(config)
    else:
        model = train(dataclasses.replace(config, **ROWS[name]), workdir, verbose=0)
    trained = time.perf_counter()
    results = evaluate(model, num_examples=eval_examples,
                       probe_examples=max(1, eval_examples // 2), seed=0)
    results["train minutes"] = (trained - start) / 60
    results["eval minutes"] = (time.perf_counter() - trained) / 60
    workdir.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(results, indent=1))
    return results


def spread(values):
    """'mean ± sample standard deviation' (just the mean for one value)."""
    values = np.asarray(values, "float64")
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def table(rows, reference="sigmoid"):
    """The markdown tables: per row mean ± spread, then paired differences to `reference`."""
    columns = [k for k in COLUMNS if any(k in r for runs in rows.values() for r in runs)]
    header = f"| row | {' | '.join(COLUMNS[k] for k in columns)} | train min |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for name, runs in rows.items():
        cells = [spread([r[k] for r in runs]) if all(k in r for r in runs) else "–"
                 for k in columns]
        lines.append(f"| {name} | {' | '.join(cells)} | "
                     f"{np.mean([r['train minutes'] for r in runs]):.1f} |")
    if reference in rows:
        lines += ["", f"Paired difference to the {reference} row (same seeds):", "",
                  header.replace(" train min |", ""), "|" + "---|" * (len(columns) + 1)]
        for name, runs in rows.items():
            if name == reference:
                continue
            cells = [spread([r[k] - b[k] for r, b in zip(runs, rows[reference])])
                     if all(k in r for r in runs + rows[reference]) else "–" for k in columns]
            lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=MainJobConfig.steps,
                        help="training steps per run")
    parser.add_argument("--long", action="store_true",
                        help="4x --steps, for the trend (9,600 steps took 33 minutes on 2 "
                        "idle CPU cores)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-examples", type=int, default=1000,
                        help="test scenes per evaluator; the probes fit on half as many")
    parser.add_argument("--workdir", default="ablation")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    args = parser.parse_args()
    steps = args.steps * (4 if args.long else 1)
    rows = {}
    for name in args.rows:
        rows[name] = []
        for seed in args.seeds:
            config = MainJobConfig(steps=steps, seed=seed)
            workdir = (pathlib.Path(args.workdir) / f"{steps}_steps_{args.eval_examples}_eval" /
                       name.replace(" ", "").replace("/", "_").replace("+", "plus_") /
                       f"seed_{seed}")
            results = run(name, config, workdir, args.eval_examples)
            rows[name].append(results)
            print(f"{name}, seed {seed}: trained in {results['train minutes']:.1f} min, "
                  f"evaluated in {results['eval minutes']:.1f} min", flush=True)
    print(f"\n{steps} steps, seeds {args.seeds}, {args.eval_examples} test scenes:\n")
    print(table(rows))


if __name__ == "__main__":
    huge_pages.restart_with_huge_pages()  # as `train` does (keras_siglip2/huge_pages.py)
    main()
