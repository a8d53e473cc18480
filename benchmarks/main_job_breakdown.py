"""Where the main job's training time goes: data, step, callbacks (one process, one table).

    KERAS_BACKEND=jax python benchmarks/main_job_breakdown.py [--steps 40] [--repeats 3]

For each phase of the default run (before the self-supervised terms switch on, and after),
with the default `MainJobConfig`:
- "data: drawn anew": the input pipeline the main job used until 2026-12-06
  (`training_batches`: every example drawn, converted and tokenised), alone, the step idle —
  its CPU time competes with the step's on the same cores;
- "data: ScenePool": the main job's pipeline now (`ScenePool.training_batches`), alone;
- "pool build": building the `ScenePool` (`MainJobConfig.pool_size` scenes), spread over
  the default run's steps;
- "step": `fit` on one cached batch repeated, no callbacks (the compiled step and `fit`'s
  loop);
- "+ per-step callbacks": the same with the main job's per-step callbacks
  (`AuxiliaryLossSchedule`, `StepLog`, and `TerminateOnNaN`, the check `TrainingBackup`
  makes after each step): their host work and syncs;
- "+ EMATeacher callback": the per-step callbacks plus the teacher moved by the `EMATeacher`
  callback instead of inside the step (the main job until 2026-12-06);
- "backup write": one `TrainingBackup` write (model, teacher, optimizer) per step of an
  epoch of the default run (3,600 steps / 10 epochs);
- "fit, data drawn anew" / "fit, ScenePool": the main job's `fit` as it runs (the
  pipeline and the per-step callbacks), with each pipeline.
Seconds per step are medians over `--repeats` calls of `--steps` steps, after a warm-up call.
"""

import argparse
import os
import tempfile
import time

import keras

from keras_siglip2.callbacks import (
    AuxiliaryLossSchedule,
    EMATeacher,
    StepLog,
    TerminateOnNaN,
    TrainingBackup,
)
from keras_siglip2 import huge_pages
from keras_siglip2.datasets import scenes
from keras_siglip2.main_job import (
    MainJobConfig,
    build_trainer,
    image_converters,
    language_mix,
    locca_tasks,
    pool_locca_tasks,
    scene_pool,
)
from keras_siglip2.pipelines import training_batches
from timing import markdown_table, median


def pipelines(config, tokenizer, vocab, pool):
    """{name: the training stream}: drawn anew, and from `pool`."""
    converter, views = image_converters(config)
    languages = language_mix(config.english_fraction)
    anew = training_batches(
        scenes.load("train", seed=config.seed, language=languages), tokenizer, converter,
        config.batch_size, vocab, config.decoder_length, views, seed=config.seed,
        **locca_tasks(config),
    )
    pooled = pool.training_batches(config.batch_size, languages, vocab, config.decoder_length,
                                   **pool_locca_tasks(config))
    return {"drawn anew": anew.prefetch(2), "ScenePool": pooled.prefetch(2)}


def measure(config, tokenizer, start, steps, repeats, pool):
    """{what runs: [seconds per step]} for one phase (`start`: the aux terms' start)."""
    trainer, vocab = build_trainer(config, tokenizer.vocabulary_size())
    streams = pipelines(config, tokenizer, vocab, pool)
    cached = streams["ScenePool"].take(1).cache().repeat()

    def callbacks():
        return [TerminateOnNaN(),
                AuxiliaryLossSchedule(start_fraction=start,
                                      total_steps=10**9 if start == 1.0 else 1),
                StepLog(os.path.join(tempfile.mkdtemp(), "steps.csv"))]

    def fit(data, extra=None):
        trainer.fit(data, epochs=1, steps_per_epoch=steps, verbose=0,
                    callbacks=[] if extra is None else [*callbacks(), *extra])

    def fit_with_ema_callback():
        trainer.ema_decay = None  # the step leaves the teacher alone; the callback moves it
        trainer.make_train_function(force=True)
        fit(cached, [EMATeacher(config.ema_decay)])
        trainer.ema_decay = config.ema_decay
        trainer.make_train_function(force=True)

    def draw(stream):
        for _ in stream.take(steps):
            pass

    backup = TrainingBackup(tempfile.mkdtemp())
    per_epoch = config.steps // config.num_epochs

    def write():  # as many writes as steps: the time per write, divided by per_epoch below
        for epoch in range(steps):
            backup._write(trainer, epoch)

    runs = {**{f"data: {name}": lambda s=stream: draw(s) for name, stream in streams.items()},
            "step": lambda: fit(cached), "+ per-step callbacks":
            lambda: fit(cached, []), "+ EMATeacher callback": fit_with_ema_callback,
            "backup write": write,
            **{f"fit, {name}": lambda s=stream: fit(s, []) for name, stream in streams.items()}}
    fit(cached, [])  # compiles the phase's step (the schedule sets the skipped terms)
    fit_with_ema_callback()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            begin = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - begin) / steps)
    times["backup write"] = [t / per_epoch for t in times["backup write"]]
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = MainJobConfig()
    tokenizer = scenes.tokenizer(sequence_length=config.text_length)
    begin = time.perf_counter()
    pool = scene_pool(config, tokenizer)
    build = (time.perf_counter() - begin) / config.steps
    rows = [["both", "pool build", f"{build * 1e3:.0f}", "–"]]
    for phase, start in (("sigmoid + LocCa", 1.0), ("all four terms", 0.0)):
        times = measure(config, tokenizer, start, args.steps, args.repeats, pool)
        for name, seconds in times.items():
            rows.append([phase, name, f"{median(seconds) * 1e3:.0f}",
                         f"{config.batch_size / median(seconds):.0f}"])
    print(f"{keras.config.backend()}, MainJobConfig() defaults (batch {config.batch_size}, "
          f"width {config.width}, {config.max_num_patches} patches), {args.steps} steps per "
          f"call, median of {args.repeats}\n")
    print(markdown_table(["phase", "what runs", "ms per step", "examples/s"], rows))


if __name__ == "__main__":
    huge_pages.restart_with_huge_pages()  # as `train` does (keras_siglip2/huge_pages.py)
    main()
