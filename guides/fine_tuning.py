"""
Title: Fine-tuning SigLIP 2 with model.fit
Author: keras_siglip2 developers
Description: Adapt a released checkpoint to a small image-text dataset with the sigmoid loss,
and measure zero-shot accuracy and retrieval before and after.
Accelerator: GPU recommended
"""

"""
## Setup

The project has no public release yet: put a checkout of keras_siglip2 on the machine at
`./keras_siglip2` (in Colab, upload a zip of it in the Files pane and run
`!unzip -q keras_siglip2.zip`), then install it (the notebook's first cell does):
`!pip install ./keras_siglip2`

The guide fine-tunes `siglip2_base_patch16_224` (a download of about 1.5 GB) for
`GUIDE_STEPS` steps (default 300). The test suite sets `GUIDE_STEPS` to a handful: then a
tiny random model, written as a local checkpoint with the dataset's own tokenizer, stands in
for the released one (no download), and its accuracies are those of chance. Pick the backend
with `KERAS_BACKEND` (jax, tensorflow or torch).
"""

import os
import pathlib
import tempfile

import keras
from PIL import Image

from keras_siglip2 import (
    SigLIP2Backbone,
    SigLIP2ImageConverter,
    SigLIP2Tokenizer,
    SigLIP2Trainer,
    evaluation,
)
from keras_siglip2.callbacks import StepLog
from keras_siglip2.testing import save_tiny_random_checkpoint
from keras_siglip2.datasets import scenes
from keras_siglip2.pipelines import training_batches
from keras_siglip2.plots import plot_curves

TINY = "GUIDE_STEPS" in os.environ
STEPS = int(os.environ.get("GUIDE_STEPS", 300))
OUTPUT = pathlib.Path(os.environ.get("GUIDE_OUTPUT", "fine_tuning.png"))
WORK = pathlib.Path(tempfile.mkdtemp())
BATCH_SIZE = 16 if TINY else 32
NUM_TEST = 16 if TINY else 256
if TINY:
    PRESET = save_tiny_random_checkpoint(WORK / "tiny")
    print("GUIDE_STEPS is set: a tiny RANDOM model stands in for the released checkpoint.")
else:
    PRESET = "siglip2_base_patch16_224"
keras.utils.set_random_seed(0)

"""
## The checkpoint and its pipelines

Fine-tuning keeps the checkpoint's text and image pipelines: the tokenizer and image
converter come from the same preset as the weights.
"""

backbone = SigLIP2Backbone.from_preset(PRESET)
tokenizer = SigLIP2Tokenizer.from_preset(PRESET)
converter = SigLIP2ImageConverter.from_preset(PRESET)

"""
## The dataset

`keras_siglip2.datasets.scenes` is embedded in the package: pictures of coloured shapes with
captions, drawn on the fly (`scenes.load` gives a `tf.data.Dataset`, endless for the train
split). Eight (colour, shape) pairs never occur in train and appear in test, so the test
split also measures whether the model composes what it learned.

`pipelines.training_batches` turns examples into what `SigLIP2Trainer.fit` takes: the
converted `images` and the tokenized caption's `token_ids`.
"""

train = training_batches(
    scenes.load("train", language="en"), tokenizer, converter, BATCH_SIZE
).prefetch(2)
print({k: tuple(v.shape) for k, v in next(iter(train)).items()})

"""
## What to measure

Zero-shot classification of the shape and colour of single-object test images (class names
in prompt templates, ensembled: `evaluation.zero_shot_classifier`), and text → image
retrieval over test scenes with their captions (`evaluation.retrieval_recall`). The
evaluators take any iterable of dict batches; here one list of numpy batches.
"""

single = [scenes.example("test", i, language="en", num_objects=1) for i in range(NUM_TEST)]
single_images = {"images": converter([ex["image"] for ex in single])}
captioned = [scenes.example("test", i, language="en") for i in range(NUM_TEST)]
retrieval_batch = {
    "images": converter([ex["image"] for ex in captioned]),
    "token_ids": tokenizer([ex["caption"] for ex in captioned]),
}


def measure():
    results = {}
    for attribute in ("shape", "colour"):
        classifier = evaluation.zero_shot_classifier(
            backbone, tokenizer, scenes.class_names(attribute, "en"),
            scenes.prompt_templates("en", attribute),
        )
        batch = {**single_images, "label": [ex[attribute][0] for ex in single]}
        results[f"{attribute} accuracy"] = evaluation.zero_shot_accuracy(
            backbone, classifier, [batch], top_k=(1,)
        )["top1_accuracy"]
    recall = evaluation.retrieval_recall(backbone, [retrieval_batch], ks=(1,))
    results["text->image recall@1"] = recall["text_to_image_recall@1"]
    return results


before = measure()
print("before:", before)

"""
## Fine-tuning

`SigLIP2Trainer` wraps the backbone for `fit`. Without a decoder or distillation heads it
trains with the sigmoid loss alone: every image against every caption of the batch, the
matching pairs as positives. A small learning rate with warm-up keeps the released
weights' knowledge. `StepLog` writes every step's loss to a CSV file (`fit`'s history keeps
one value per epoch); a callback re-measures at the end of each epoch.
"""

trainer = SigLIP2Trainer(backbone)
learning_rate = 1e-3 if TINY else 1e-5  # a random model learns only from a large rate
warmup = max(1, STEPS // 10)
trainer.compile(optimizer=keras.optimizers.AdamW(
    keras.optimizers.schedules.CosineDecay(
        0.0, STEPS - warmup, warmup_target=learning_rate, warmup_steps=warmup
    ),
    weight_decay=1e-4,
))

epochs = 2 if TINY else 5
history = [before]
trainer.fit(
    train, epochs=epochs, steps_per_epoch=max(1, STEPS // epochs), verbose=2,
    callbacks=[
        StepLog(WORK / "steps.csv"),
        keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: history.append(measure())),
    ],
)
after = history[-1]
for name in before:
    print(f"{name:22s} before {before[name]:.3f}  after {after[name]:.3f}")

"""
## The curves

The sigmoid loss after every step, and the three measures before training and after every
epoch. The fine-tuned backbone is the same object as `trainer.backbone`: save it with
`keras_siglip2.checkpoint.save_checkpoint(directory, backbone, tokenizer, converter)` and
load it back as a preset.
"""

log = StepLog.read(WORK / "steps.csv")
curves = {"sigmoid loss per step": log["sigmoid_loss"]}
for name in before:
    curves[f"{name} (before, then per epoch)"] = [h[name] for h in history]
plot_curves(curves, OUTPUT)
print("saved", OUTPUT)
Image.open(OUTPUT)  # a notebook shows the figure here
