"""The main job: a small SigLIP 2 trained with the whole recipe on the embedded dataset.

`python -m keras_siglip2 train` runs `train(MainJobConfig(), workdir)`: a NaFlex image
tower, a text tower, a LocCa decoder (captioning, referring expressions, grounded
captioning), SILC self-distillation and TIPS masked prediction (switched on for the last
part of training, as in the paper), all fitted on `keras_siglip2.datasets.scenes` with
`SigLIP2Trainer.fit`; then the evaluators on the test split.
"""

import contextlib
import dataclasses
import json
import pathlib

import keras

from keras_siglip2.callbacks import AuxiliaryLossSchedule, EMATeacher, StepLog, TerminateOnNaN
from keras_siglip2.checkpoint import save_checkpoint
from keras_siglip2.datasets import scenes
from keras_siglip2.locca_targets import LocCaVocabulary
from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.models.locca_decoder import LocCaDecoder
from keras_siglip2.models.naflex_vision_encoder import SigLIP2NaFlexVisionEncoder
from keras_siglip2.models.text_encoder import SigLIP2TextEncoder
from keras_siglip2.models.trainer import SigLIP2Trainer
from keras_siglip2.pipelines import converted_image, training_batches
from keras_siglip2.plots import plot_curves
from keras_siglip2.preprocessing import LocalViews, NaFlexImageConverter


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
    steps: int = 1600
    epochs: int = 10  # checkpoints (and resumption points) per run
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
    # SILC / TIPS: local views of at most `local_view_patches` patches, DINO heads.
    self_distillation: bool = True
    local_views: int = 2
    local_view_patches: int = 16
    distillation_dim: int = 256
    auxiliary_start_fraction: float = 0.8
    ema_decay: float = 0.99
    seed: int = 0
    # "none", "data_parallel" (JAX: keras.distribution over every local device),
    # "mirrored" or "tpu" (TensorFlow: tf.distribute, TPU `tpu`: "local" on a TPU VM, a
    # TPU name or grpc:// address).
    distribution: str = "none"
    tpu: str = "local"

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
    ) if config.locca else None
    trainer = SigLIP2Trainer(
        SigLIP2Backbone(vision, text), decoder=decoder,
        distillation_dim=config.distillation_dim if config.self_distillation else None,
        head_hidden_dim=2 * width,
        head_bottleneck_dim=width // 2, seed=config.seed,
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


def train(config, workdir, verbose=1):
    """Trains the main job's model into `workdir`; resumes a run that was interrupted there.

    Writes `workdir/config.json`, `workdir/steps.csv` (every step's loss terms),
    `workdir/losses.png`, and the trained model to `workdir/checkpoint` (see
    `keras_siglip2.checkpoint`); `workdir/backup` holds the resumption state until the run
    completes. Returns the trainer.
    """
    workdir = pathlib.Path(workdir)
    languages = language_mix(config.english_fraction)
    scope = _distribution_scope(config)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json())
    tokenizer = scenes.tokenizer(sequence_length=config.text_length)
    with scope:
        trainer, vocab = build_trainer(config, tokenizer.vocabulary_size())
    converter = NaFlexImageConverter(config.patch_size, config.max_num_patches)
    views = LocalViews(
        NaFlexImageConverter(config.patch_size, config.local_view_patches), config.local_views
    ) if config.self_distillation else None
    batches = training_batches(
        scenes.load("train", seed=config.seed, language=languages), tokenizer, converter,
        config.batch_size, vocab if config.locca else None, config.decoder_length, views,
        seed=config.seed,
    ).prefetch(2)
    epochs = max(1, min(config.epochs, config.steps))
    step_log = workdir / "steps.csv"
    trainer.fit(
        batches, epochs=epochs, steps_per_epoch=config.steps // epochs, verbose=verbose,
        shuffle=False,  # the endless stream is drawn at random already
        callbacks=[
            keras.callbacks.BackupAndRestore(str(workdir / "backup")),
            *([EMATeacher(config.ema_decay),
               AuxiliaryLossSchedule(start_fraction=config.auxiliary_start_fraction)]
              if config.self_distillation else []),
            TerminateOnNaN(),
            StepLog(step_log),
        ],
    )
    save_checkpoint(
        workdir / "checkpoint", trainer.backbone, tokenizer, converter, trainer.decoder, vocab
    )
    log = StepLog.read(step_log)
    plot_curves({k: v for k, v in log.items() if k != "step"}, workdir / "losses.png")
    return trainer


def _converted_batches(examples, image_converter, batch_size, **extra):
    """Images through `image_converter`, plus `extra` features computed from each example."""
    import tensorflow as tf

    def fn(example):
        image = converted_image(image_converter, example["image"])
        return {**image, **{k: f(example) for k, f in extra.items()}}

    return examples.map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)


def evaluate(checkpoint, num_examples=1000, probe_examples=500, seed=0, batch_size=64):
    """The evaluators on the embedded dataset's test split: a dict of metric → value.

    Zero-shot colour and shape accuracy on single-object images (English prompts, class
    names ensembled over the templates), overall and on the held-out (colour, shape) pairs,
    and a linear probe's on the same image embeddings (fitted on as many single-object
    validation images), which tells an attribute the image tower has not learnt from one the
    text tower does not name;
    image↔text retrieval recall on `num_examples` scenes with English captions; referring
    expression box IoU from the LocCa decoder; the dense linear probe's mIoU (fitted on
    `probe_examples` validation images, measured on as many test images).
    `checkpoint` is a directory written by `train` (or a dict from `load_checkpoint`).
    """
    from keras_siglip2 import evaluation
    from keras_siglip2.checkpoint import load_checkpoint
    from keras_siglip2.pipelines import dense_batches, referring_batches

    model = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    backbone, tokenizer, converter = (
        model["backbone"], model["tokenizer"], model["image_converter"]
    )
    patch_size = getattr(backbone.vision_encoder, "patch_size", None)
    results = {}
    # Both attributes' labels ride along, so each set of scenes is drawn and converted once.
    labels = {a: lambda ex, a=a: ex[a][0] for a in ("colour", "shape")}
    single = _converted_batches(
        scenes.load("test", num_examples, seed=seed, language="en", num_objects=(1, 1)),
        converter, batch_size, held_out=lambda ex: ex["held_out"][0], **labels,
    ).cache()
    test_sets = {"": single, " (held-out pairs)": single.unbatch().filter(
        lambda ex: ex["held_out"]).batch(batch_size)}
    probe_train = _converted_batches(
        scenes.load("validation", num_examples, seed=seed, num_objects=(1, 1)), converter,
        batch_size, **labels,
    ).cache()
    for attribute in labels:
        classifier = evaluation.zero_shot_classifier(
            backbone, tokenizer, scenes.class_names(attribute, "en"),
            scenes.prompt_templates("en", attribute),
        )
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
    recall = evaluation.retrieval_recall(backbone, _converted_batches(
        scenes_en, converter, batch_size, token_ids=lambda ex: tokenizer(ex["caption"])
    ))
    for key in ("text_to_image_recall@1", "image_to_text_recall@1", "text_to_image_recall@5"):
        results[key.replace("_", " ")] = recall[key]
    if model["decoder"] is not None:
        boxes = evaluation.referring_box_iou(
            backbone, model["decoder"], model["vocabulary"],
            referring_batches(scenes.load("test", probe_examples, seed=seed), tokenizer,
                              converter, batch_size),
        )
        results["referring box IoU"] = boxes["mean_iou"]
        results["referring accuracy@0.5"] = boxes["accuracy@0.5"]
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
