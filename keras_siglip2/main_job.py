"""The main job: a small SigLIP 2 trained with the whole recipe on the embedded dataset.

`python -m keras_siglip2 train` runs `train(MainJobConfig(), workdir)`: a NaFlex image
tower, a text tower, a LocCa decoder (captioning, referring expressions, grounded
captioning), SILC self-distillation and TIPS masked prediction (switched on for the last
part of training, as in the paper), all fitted on `keras_siglip2.datasets.scenes` with
`SigLIP2Trainer.fit`; then the evaluators on the test split.
"""

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import shutil

import keras

from keras_siglip2 import evaluation
from keras_siglip2.callbacks import (
    AuxiliaryLossSchedule,
    StepLog,
    TrainingBackup,
    ValidationEvaluation,
)
from keras_siglip2.callbacks.step_log import StepProgress
from keras_siglip2.checkpoint import load_checkpoint, save_checkpoint
from keras_siglip2.datasets import scenes
from keras_siglip2.locca_targets import LocCaVocabulary, check_task_weights
from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.models.locca_decoder import LocCaDecoder
from keras_siglip2.models.naflex_vision_encoder import SigLIP2NaFlexVisionEncoder
from keras_siglip2.models.text_encoder import SigLIP2TextEncoder
from keras_siglip2.models.trainer import SigLIP2Trainer
from keras_siglip2.pipelines import dense_batches, referring_batches, training_batches
from keras_siglip2.plots import plot_losses, plot_validation
from keras_siglip2.preprocessing import LocalViews, NaFlexImageConverter
from keras_siglip2.scene_evaluation import (
    attribute_batches,
    attribute_classifiers,
    caption_batches,
)
from keras_siglip2.scene_pool import ScenePool


@dataclasses.dataclass
class MainJobConfig:
    """Every setting of the main job; the defaults are the README's run.

    Example:
    >>> config = MainJobConfig(steps=10)
    >>> config.steps, config.batch_size
    (10, 64)
    """

    # A narrow, shallow model for many steps: per step, width 64 / depth 2 learns as fast as
    # 128 / 4 at under a third of the step time, and shape, the slowest to learn, needs steps.
    # 3,600 steps fill about 12 of the 15 minutes (2,400 until the LocCa length groups made
    # the step faster; 1,600 before huge pages, keras_siglip2/huge_pages.py).
    steps: int = 3600
    # Backups (resumption points) per run: at most this many, the largest divisor of `steps`.
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    # Share of English captions in training, the others' split evenly: SigLIP 2 trains on
    # WebLI at 90 % English, 10 % other languages. The evaluation is in English.
    english_fraction: float = 0.9
    # Image tower (NaFlex): patches of `patch_size` px, at most `max_num_patches` per image.
    patch_size: int = 8
    max_num_patches: int = 64
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    text_depth: int = 2
    text_length: int = 48
    # LocCa decoder; `locca` / `self_distillation` switch terms off (benchmarks/ablation.py).
    locca: bool = True
    decoder_depth: int = 2
    decoder_length: int = 48
    location_bins: int = 32
    # The decoder adds sine-cosine codes of each patch's place to the image tokens: without
    # them it did not learn where objects are from this small tower (docs/findings.md).
    locca_position_codes: bool = True
    # Every scene trains all three LocCa tasks each step (three decoder examples on one pass
    # of the tower) instead of one drawn task: about twice the step time, past the 15-minute
    # budget, for boxes hardly better than the task mix below gives (docs/findings.md).
    locca_all_tasks: bool = False
    # The drawn task's odds, CAP / AREF / GCAP, for scenes with objects: three fifths of the
    # draws referring expression -> box raised the decoder's box IoU by 0.077 +- 0.031 over
    # 1 : 2 : 1 (which had raised it over a third each) at the same cost; zero-shot shape,
    # near chance either way, fell by 0.013 +- 0.010 (docs/findings.md).
    locca_task_weights: tuple = (1.0, 3.0, 1.0)
    # The share of LocCa examples in the causal (teacher-forced) layout, the rest predicted
    # in parallel from [MASK] inputs. The paper's half left this small decoder's greedy boxes
    # (decoded causally) far below what all-causal examples teach it (docs/findings.md).
    locca_causal_probability: float = 1.0
    # The tasks drawn by batch (a fixed number of captioning rows, `caption_rows`) so the
    # decoder runs the other rows cut to the longest referring example (28 ids, not 48): a
    # sixth of the sigmoid + LocCa step was the decoder on padding (docs/performance.md).
    # Applies where the tasks are drawn one per image from the pool (not with pool_size 0 or
    # locca_all_tasks).
    locca_length_groups: bool = True
    # SILC / TIPS: local views of at most `local_view_patches` patches, DINO heads.
    self_distillation: bool = True
    local_views: int = 2
    local_view_patches: int = 16
    distillation_dim: int = 256
    auxiliary_start_fraction: float = 0.8
    ema_decay: float = 0.99
    # Training scenes drawn and converted once and reused, each pass in a new order with fresh
    # languages, LocCa tasks and local views (`ScenePool`): at most this many (0: draw every
    # example anew in the input pipeline, as before 2026-12-06).
    pool_size: int = 8192
    # Validation scenes measured after every epoch (`ValidationEvaluation`: zero-shot colour
    # and shape, text→image recall@1, LocCa box IoU) into `validation.csv`, `evaluation.png`
    # and the epoch logs; 0: none. It does not change the training (a resumed run may change it).
    validation_scenes: int = 256
    seed: int = 0
    # "none", "data_parallel" (JAX: keras.distribution over every local device),
    # "mirrored" or "tpu" (TensorFlow: tf.distribute, TPU `tpu`: "local" on a TPU VM, a
    # TPU name or grpc:// address).
    distribution: str = "none"
    tpu: str = "local"

    def __post_init__(self):
        """Checks every setting, so a bad one fails before anything is built or written."""
        positive = ("steps", "epochs", "batch_size", "patch_size", "max_num_patches", "width",
                    "depth", "num_heads", "text_depth", "text_length", "decoder_depth",
                    "decoder_length", "location_bins", "local_views", "local_view_patches",
                    "distillation_dim")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}.")
        for name in ("seed", "pool_size", "validation_scenes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0; got {value!r}.")
        ranges = {"learning_rate": (0, math.inf, False), "weight_decay": (0, math.inf, True),
                  "warmup_fraction": (0, 1, True), "english_fraction": (0, 1, True),
                  "auxiliary_start_fraction": (0, 1, True), "ema_decay": (0, 1, True),
                  "locca_causal_probability": (0, 1, True)}
        for name, (low, high, low_ok) in ranges.items():
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or not (
                low <= value <= high if low_ok else low < value <= high
            ):
                side = "[" if low_ok else "("
                raise ValueError(f"{name} must be a finite number in {side}{low}, {high}]; "
                                 f"got {value!r}.")
        if self.width % self.num_heads:
            raise ValueError(f"width ({self.width}) must be a multiple of num_heads "
                             f"({self.num_heads}).")
        if self.locca_position_codes and self.width % 4:
            raise ValueError(f"locca_position_codes needs a width divisible by 4; got "
                             f"{self.width}: change width or set locca_position_codes=False.")
        if self.width < 2:
            raise ValueError(f"width must be >= 2 (the DINO heads' bottleneck is width // 2); "
                             f"got {self.width}.")
        self.locca_task_weights = check_task_weights(self.locca_task_weights,
                                                     "locca_task_weights")
        if self.distribution not in ("none", "data_parallel", "mirrored", "tpu"):
            raise ValueError(f"Unknown distribution {self.distribution!r}: use 'none', "
                             "'data_parallel', 'mirrored' or 'tpu'.")

    @property
    def num_epochs(self):
        """The epochs `train` runs: the largest divisor of `steps` that is at most `epochs`.

        Example:
        >>> MainJobConfig(steps=1600).num_epochs, MainJobConfig(steps=15).num_epochs
        (10, 5)
        """
        return max(d for d in range(1, min(self.epochs, self.steps) + 1) if self.steps % d == 0)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1)


def language_mix(english_fraction):
    """`scenes.load`'s language weights: English at `english_fraction`, the rest even.

    Example:
    >>> language_mix(0.6)
    {'en': 0.6, 'de': 0.1, 'es': 0.1, 'ru': 0.1, 'zh': 0.1}
    """
    if not 0 <= english_fraction <= 1:
        raise ValueError(f"english_fraction must be in [0, 1]; got {english_fraction!r}.")
    others = [code for code in scenes.LANGUAGES if code != "en"]
    return {"en": english_fraction, **{code: (1 - english_fraction) / len(others)
                                        for code in others}}


def build_trainer(config, text_vocabulary_size):
    """The backbone, LocCa vocabulary and `SigLIP2Trainer` of `config`, compiled.

    Example:
    >>> trainer, vocab = build_trainer(
    ...     MainJobConfig(width=16, depth=1, num_heads=2, text_depth=1, decoder_depth=1,
    ...                   distillation_dim=8), text_vocabulary_size=50)
    >>> trainer.terms
    ['sigmoid_loss', 'locca_loss', 'self_distillation_loss', 'masked_prediction_loss']
    """
    keras.utils.set_random_seed(config.seed)
    width, mlp = config.width, 4 * config.width
    vision = SigLIP2NaFlexVisionEncoder(
        patch_size=config.patch_size, hidden_dim=width, num_layers=config.depth,
        num_heads=config.num_heads, intermediate_dim=mlp,
        position_grid_size=round(config.max_num_patches**0.5),
    )
    text = SigLIP2TextEncoder(
        vocabulary_size=text_vocabulary_size, sequence_length=config.text_length,
        hidden_dim=width, num_layers=config.text_depth, num_heads=config.num_heads,
        intermediate_dim=mlp, embedding_dim=width,
    )
    vocab = LocCaVocabulary(text_vocabulary_size, num_location_bins=config.location_bins)
    decoder = LocCaDecoder(
        vocabulary_size=vocab.size, sequence_length=config.decoder_length, hidden_dim=width,
        num_layers=config.decoder_depth, num_heads=config.num_heads, intermediate_dim=mlp,
        image_position_codes=config.locca_position_codes,
    ) if config.locca else None
    trainer = SigLIP2Trainer(
        SigLIP2Backbone(vision, text), decoder=decoder,
        distillation_dim=config.distillation_dim if config.self_distillation else None,
        head_hidden_dim=2 * width,
        head_bottleneck_dim=width // 2, seed=config.seed,
        ema_decay=config.ema_decay if config.self_distillation else None,
    )
    warmup = max(1, int(config.warmup_fraction * config.steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(1, config.steps - warmup), warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )
    trainer.compile(optimizer=keras.optimizers.AdamW(
        schedule, weight_decay=config.weight_decay, global_clipnorm=1.0,
    ))
    return trainer, vocab


def image_converters(config):
    """The `NaFlexImageConverter` of the global view and the `LocalViews` (None without SILC)
    of `config`.

    Example:
    >>> converter, views = image_converters(MainJobConfig())
    >>> converter.max_num_patches, views.num_views, views.image_converter.max_num_patches
    (64, 2, 16)
    """
    converter = NaFlexImageConverter(config.patch_size, config.max_num_patches)
    views = LocalViews(
        NaFlexImageConverter(config.patch_size, config.local_view_patches), config.local_views
    ) if config.self_distillation else None
    return converter, views


def scene_pool(config, tokenizer):
    """The `ScenePool` `train` streams from: `config.pool_size` scenes, or fewer when the run
    sees fewer examples."""
    size = min(config.pool_size, config.steps * config.batch_size)
    return ScenePool(size, tokenizer, *image_converters(config), seed=config.seed)


def locca_tasks(config):
    """The LocCa task arguments of `training_batches` / `ScenePool.training_batches`.

    Example:
    >>> tasks = locca_tasks(MainJobConfig())
    >>> tasks["all_locca_tasks"], tasks["locca_task_weights"], tasks["locca_causal_probability"]
    (False, (1.0, 3.0, 1.0), 1.0)
    """
    weights = None if config.locca_all_tasks else config.locca_task_weights
    return {"all_locca_tasks": config.locca_all_tasks, "locca_task_weights": weights,
            "locca_causal_probability": config.locca_causal_probability}


def pool_locca_tasks(config):
    """`locca_tasks` and the batch-task arguments of `ScenePool.training_batches`: the
    length groups on one device, the same batches as one array per key over several.

    Example:
    >>> pool_locca_tasks(MainJobConfig(distribution="data_parallel"))["locca_length_groups"]
    False
    """
    on = config.locca_length_groups and config.locca and not config.locca_all_tasks
    return {**locca_tasks(config), "locca_batch_tasks": on,
            "locca_length_groups": on and config.distribution == "none"}


def _distribution_scope(config):
    """The context to build the trainer in for `config.distribution` (fails fast)."""
    from keras_siglip2.distribution import strategy

    if config.distribution == "none":
        return contextlib.nullcontext()
    if config.distribution == "data_parallel":
        if keras.config.backend() != "jax":
            raise ValueError(
                "distribution='data_parallel' uses keras.distribution, which drives JAX: set "
                "KERAS_BACKEND=jax, or use 'mirrored' / 'tpu' on TensorFlow."
            )
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        return contextlib.nullcontext()
    if config.distribution in ("mirrored", "tpu"):
        return strategy(config.distribution, tpu=config.tpu).scope()
    raise ValueError(
        f"Unknown distribution {config.distribution!r}: use 'none', 'data_parallel', "
        "'mirrored' or 'tpu'."
    )


# Settings that may change when a run resumes: where it runs and what is measured on the
# side, not what it computes. A config.json from before a setting existed reads as None,
# or as the value that ran before it, for these:
_PLACEMENT = ("distribution", "tpu", "validation_scenes")
_BEFORE = {"locca_position_codes": False, "locca_all_tasks": False,
           "locca_task_weights": [1.0, 1.0, 1.0], "locca_causal_probability": 0.5,
           "locca_length_groups": False}
_RUN_FILES = ("checkpoint", "checkpoint.partial", "backup", "config.json", "steps.csv",
              "losses.png", "validation.csv", "evaluation.png", "tensorboard", "gallery.png",
              "results.json")


def train(config, workdir, verbose=1, restart=False, callbacks=(), tensorboard=False):
    """Trains the main job's model into `workdir`; resumes a run that was interrupted there.

    Writes `workdir/config.json`, `workdir/steps.csv` (every step's loss terms),
    `workdir/losses.png` (their curves, `plots.plot_losses`), and the trained model to
    `workdir/checkpoint` (see `keras_siglip2.checkpoint`); returns that checkpoint's path.
    With `config.validation_scenes`, the `ValidationEvaluation` of every epoch goes into
    the epoch logs, `workdir/validation.csv` and `workdir/evaluation.png`
    (`plots.plot_validation`). `tensorboard=True` writes TensorBoard logs of every epoch
    (the loss terms, the validation measures) to `workdir/tensorboard`.

    A run is never lost: `workdir/backup` holds the whole training state after every epoch
    (`TrainingBackup`), and the same call on the same `workdir` after a kill at any moment
    continues from it, data stream included, to the weights an uninterrupted run reaches.
    The checkpoint appears only once complete; a `workdir` that holds one is finished and
    is not trained again. A loss or weight that goes non-finite raises
    `keras_siglip2.callbacks.TrainingDiverged`; the backup of the last good state is kept
    and no checkpoint is written. `restart=True` deletes the run's files in `workdir`
    first. `callbacks` are added to `fit`'s. `verbose`: 0 prints nothing while training,
    anything else one line per epoch with steps/s and the time left (`StepProgress`).
    """
    workdir = pathlib.Path(workdir)
    languages = language_mix(config.english_fraction)
    if restart:
        for name in _RUN_FILES:
            _remove(workdir / name)
    _check_same_run(workdir, config)
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise RuntimeError("TensorBoard logs need the `tensorboard` package: pip install "
                           "tensorboard, or train without --tensorboard.")
    checkpoint = workdir / "checkpoint"
    if checkpoint.is_dir():
        _remove(workdir / "backup")  # left by a kill after the checkpoint was committed
        print(f"{workdir} holds a finished run; pass --restart (restart=True) to train again.")
        return checkpoint
    scope = _distribution_scope(config)
    workdir.mkdir(parents=True, exist_ok=True)
    _write_atomically(workdir / "config.json", config.to_json())
    tokenizer = scenes.tokenizer(sequence_length=config.text_length)
    with scope:
        trainer, vocab = build_trainer(config, tokenizer.vocabulary_size())
    backup = TrainingBackup(workdir / "backup", delete_on_finish=False)
    epochs = config.num_epochs
    steps_per_epoch = config.steps // epochs
    initial_epoch = backup.restore(trainer)
    step = int(keras.ops.convert_to_numpy(trainer.optimizer.iterations))
    if step != initial_epoch * steps_per_epoch:
        raise ValueError(
            f"The backup in {workdir / 'backup'} is at step {step}, which is not the end of "
            f"epoch {initial_epoch} of this run: it belongs to another run; pass --restart "
            "or use another --workdir."
        )
    converter, views = image_converters(config)
    first = step * config.batch_size  # the stream continues where the backup stopped
    locca = (vocab, config.decoder_length) if config.locca else (None, None)
    if config.pool_size:
        pool = scene_pool(config, tokenizer)
        batches = pool.training_batches(config.batch_size, languages, *locca, start=first,
                                        **pool_locca_tasks(config))
    else:
        batches = training_batches(
            scenes.load("train", seed=config.seed, language=languages, start=first),
            tokenizer, converter, config.batch_size, *locca, views, seed=config.seed,
            start=first, **locca_tasks(config),
        )
    batches = batches.prefetch(2)
    step_log, validation_log = workdir / "steps.csv", workdir / "validation.csv"
    validation = ValidationEvaluation(
        tokenizer, converter, config.validation_scenes, vocab, validation_log, seed=config.seed,
    ) if config.validation_scenes else None
    trainer.fit(
        batches, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
        verbose=0, shuffle=False,  # the endless stream is drawn at random already
        callbacks=[
            backup,
            *([AuxiliaryLossSchedule(start_fraction=config.auxiliary_start_fraction)]
              if config.self_distillation else []),
            StepLog(step_log),
            # After the backup (it measures accepted weights only), before the callbacks
            # that read its logs.
            *([validation] if validation else []),
            *([keras.callbacks.TensorBoard(str(workdir / "tensorboard"), write_graph=False)]
              if tensorboard else []),
            *([StepProgress()] if verbose else []),
            *callbacks,
        ],
    )
    partial = workdir / "checkpoint.partial"
    _remove(partial)
    save_checkpoint(partial, trainer.backbone, tokenizer, converter, trainer.decoder, vocab)
    os.replace(partial, checkpoint)
    _remove(workdir / "backup")
    switch_on = AuxiliaryLossSchedule(
        start_fraction=config.auxiliary_start_fraction, total_steps=config.steps
    ).start_step if config.self_distillation else None
    label = "SILC + TIPS on after step"
    plot_losses(StepLog.read(step_log), workdir / "losses.png", switch_on, label)
    if validation_log.is_file():
        plot_validation(
            ValidationEvaluation.read(validation_log), workdir / "evaluation.png", switch_on,
            label, title=f"Validation after every epoch ({config.validation_scenes} scenes)",
        )
    return checkpoint


def _check_same_run(workdir, config):
    """Fails if `workdir` holds a run (backup or checkpoint) of other settings."""
    path = workdir / "config.json"
    if not path.is_file() or not any((workdir / n).exists() for n in ("backup", "checkpoint")):
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} cannot be read ({e}); pass --restart to start the run in "
                         f"{workdir} over.") from e
    ours = json.loads(config.to_json())  # tuples as the saved lists
    saved = {**_BEFORE, **saved}
    changed = [f"{k}: {saved.get(k)!r} there, {v!r} now" for k, v in ours.items()
               if k not in _PLACEMENT and saved.get(k) != v]
    if changed:
        raise ValueError(
            f"{workdir} holds a run with other settings ({'; '.join(changed[:3])}): rerun "
            "with its settings to resume it, pass --restart to discard it, or use another "
            "--workdir."
        )


def _write_atomically(path, text):
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def _remove(path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def evaluate(checkpoint, num_examples=1000, probe_examples=500, seed=0, batch_size=64):
    """The evaluators on the embedded dataset's test split: a dict of metric → value.

    Zero-shot colour and shape accuracy on single-object images (English prompts, class
    names ensembled over the templates), overall and on the held-out (colour, shape) pairs,
    and a linear probe's on the same image embeddings (fitted on as many single-object
    validation images), which tells an attribute the image tower has not learnt from one the
    text tower does not name;
    image↔text retrieval recall on `num_examples` scenes with English captions; referring
    expression box IoU from the LocCa decoder, and from the referring-box probe on the frozen
    features (`referring_probe_iou`, any model); the dense linear probe's mIoU. The probes
    are fitted on `probe_examples` validation images and measured on as many test images.
    `checkpoint` is a directory written by `train` (or a dict from `load_checkpoint`).
    """
    model = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    backbone, tokenizer, converter = (
        model["backbone"], model["tokenizer"], model["image_converter"]
    )
    patch_size = getattr(backbone.vision_encoder, "patch_size", None)
    results = {}
    # Both attributes' labels ride along, so each set of scenes is drawn and converted once.
    single = attribute_batches("test", num_examples, converter, batch_size, seed).cache()
    test_sets = {"": single, " (held-out pairs)": single.unbatch().filter(
        lambda ex: ex["held_out"]).batch(batch_size)}
    probe_train = attribute_batches("validation", num_examples, converter, batch_size,
                                    seed).cache()
    for attribute, classifier in attribute_classifiers(backbone, tokenizer).items():
        for name, batches in test_sets.items():
            accuracy = evaluation.zero_shot_accuracy(
                backbone, classifier, batches, label_key=attribute, top_k=(1,)
            )
            results[f"zero-shot {attribute} accuracy{name}"] = accuracy["top1_accuracy"]
        linear = evaluation.linear_probe_accuracy(
            backbone, probe_train, single, num_classes=len(classifier),
            label_key=attribute,
        )
        results[f"linear probe {attribute} accuracy"] = linear["accuracy"]
    scenes_en = scenes.load("test", num_examples, seed=seed, language="en")
    recall = evaluation.retrieval_recall(
        backbone, caption_batches(scenes_en, tokenizer, converter, batch_size)
    )
    for key in ("text_to_image_recall@1", "image_to_text_recall@1", "text_to_image_recall@5"):
        results[key.replace("_", " ")] = recall[key]
    referring = {split: referring_batches(scenes.load(split, probe_examples, seed=seed),
                                          tokenizer, converter, batch_size).cache()
                 for split in ("validation", "test")}
    if model["decoder"] is not None:
        boxes = evaluation.referring_box_iou(
            backbone, model["decoder"], model["vocabulary"], referring["test"]
        )
        results["referring box IoU"] = boxes["mean_iou"]
        results["referring accuracy@0.5"] = boxes["accuracy@0.5"]
    boxes = evaluation.referring_probe_iou(backbone, referring["validation"], referring["test"])
    results["referring probe box IoU"] = boxes["mean_iou"]
    probe = evaluation.dense_probe_miou(
        backbone,
        dense_batches(scenes.load("validation", probe_examples, seed=seed), converter,
                      batch_size, patch_size),
        dense_batches(scenes.load("test", probe_examples, seed=seed), converter, batch_size,
                      patch_size),
        num_classes=scenes.NUM_SEGMENTATION_CLASSES,
    )
    results["dense probe mIoU"] = probe["miou"]
    return results


def format_results(results):
    """The evaluators' table as text, one metric per row.

    Example:
    >>> print(format_results({"zero-shot colour accuracy": 0.95, "box IoU": 0.5}))
    | metric                    |  value |
    |---------------------------|--------|
    | zero-shot colour accuracy | 0.9500 |
    | box IoU                   | 0.5000 |
    """
    width = max(len("metric"), *map(len, results))
    lines = [f"| {'metric':{width}} |  value |", f"|{'-' * (width + 2)}|--------|"]
    lines += [f"| {name:{width}} | {value:.4f} |" for name, value in results.items()]
    return "\n".join(lines)
