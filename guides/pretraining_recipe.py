"""
Title: Pretraining SigLIP 2 with the whole recipe
Author: keras_siglip2 developers
Description: Every loss term of SigLIP 2 in one `model.fit` on the embedded dataset, with a
loss curve per term.
Accelerator: GPU recommended (runs on a laptop CPU at a small size)
"""

"""
## Setup

The project has no public release yet: put a checkout of keras_siglip2 on the machine at
`./keras_siglip2` (in Colab, upload a zip of it in the Files pane and run
`!unzip -q keras_siglip2.zip`), then install it (the notebook's first cell does):
`!pip install ./keras_siglip2`

`GUIDE_STEPS` (default: the main job's `MainJobConfig.steps`) sets the training length; the
test suite runs this guide with a handful of steps and a tiny model. Pick the backend with
`KERAS_BACKEND` (jax, tensorflow or torch). The same run, with evaluation, is
`python -m keras_siglip2 train`.
"""

import os
import pathlib
import tempfile

from PIL import Image

from keras_siglip2.callbacks import AuxiliaryLossSchedule, StepLog, TrainingBackup
from keras_siglip2.datasets import scenes
from keras_siglip2.main_job import MainJobConfig, build_trainer, language_mix, locca_tasks
from keras_siglip2.pipelines import training_batches
from keras_siglip2.plots import plot_curves
from keras_siglip2.preprocessing import LocalViews, NaFlexImageConverter

TINY = "GUIDE_STEPS" in os.environ
STEPS = int(os.environ.get("GUIDE_STEPS", MainJobConfig.steps))
OUTPUT = os.environ.get("GUIDE_OUTPUT", "loss_curves.png")
WORK = pathlib.Path(tempfile.mkdtemp())

"""
## The recipe, as a configuration

SigLIP 2 trains one model with four loss terms:

- **sigmoid**: every image of the batch against every caption, matching pairs positive
  (SigLIP);
- **LocCa**: a small decoder cross-attending to the image patches learns captioning,
  referring expression → box and box → referring expression;
- **self-distillation** (SILC): the image tower on small local crops matches an EMA teacher
  on the whole image;
- **masked prediction** (TIPS): with half of its patches masked, the image tower predicts
  the teacher's per-patch outputs there.

The last two are switched on for the last 20% of training, as in the paper.
`MainJobConfig` holds every setting of the package's main job (a NaFlex image tower, the
decoder, the heads, the optimizer); the defaults are the README's run. The test suite
shrinks it.
"""

config = MainJobConfig(steps=STEPS, epochs=min(10, STEPS))
if TINY:
    config = MainJobConfig(
        steps=STEPS, epochs=2, batch_size=8, max_num_patches=16, width=32, depth=1,
        num_heads=2, text_depth=1, text_length=32, decoder_depth=1, decoder_length=36,
        local_view_patches=4, distillation_dim=32,
        # Every term from the first step: one compiled train step instead of two (the
        # steps without the self-supervised terms are a separate, smaller program).
        auxiliary_start_fraction=0.0,
    )
print(config.to_json())

"""
## The data

`keras_siglip2.datasets.scenes` is embedded in the package: pictures of 1–4 coloured shapes
drawn on the fly, at aspect ratios from 1:2 to 2:1, each with a caption (in one of five
languages), a box and a referring expression per object. Its SentencePiece vocabulary
ships with it: `scenes.tokenizer()`. Training draws English for 90 % of the captions and
the other four languages for the rest (`config.english_fraction`), as SigLIP 2 does on WebLI.
"""

tokenizer = scenes.tokenizer(sequence_length=config.text_length)
example = scenes.example("train", 0)
print(example["image"].shape, example["caption"])
print(example["referring_expressions"], example["boxes"].round(2).tolist())

"""
`pipelines.training_batches` maps the `tf.data` examples to the trainer's inputs:

- the image as a NaFlex patch sequence (`NaFlexImageConverter`: native aspect ratio, at
  most `max_num_patches` patches) and the caption's `token_ids`;
- one LocCa task per example (its decoder inputs, targets and loss mask), drawn from the
  caption, the boxes and the referring expressions with the `LocCaVocabulary` (the text
  vocabulary plus location bins and task tokens) that `build_trainer` returns. Images with
  objects draw captioning, referring expression → box and box → referring expression at
  `config.locca_task_weights` (1 : 3 : 1); with `config.locca_all_tasks`, all three tasks of
  every image, read from one pass of the image tower. Each is in the causal layout with
  probability `config.locca_causal_probability` (1 here; the paper's 0.5 predicts the rest
  in parallel), and `locca_tasks(config)` gives the pipeline these settings;
- SILC's `local_views`: random crops, each as a short NaFlex sequence.

Every random draw is seeded by the example's index, so the pipeline is reproducible, and a
resumed run can start it where it stopped: `TrainingBackup.restore` loads the newest backup
(model, EMA teacher, DINO centres, optimizer) and returns its epoch, and the stream starts at
that step's first example. A killed run restarted this way ends with the weights of an
uninterrupted one.
"""

trainer, vocab = build_trainer(config, tokenizer.vocabulary_size())
epochs = config.num_epochs
steps_per_epoch = config.steps // epochs
backup = TrainingBackup(WORK / "backup")
initial_epoch = backup.restore(trainer)  # 0 here: nothing to resume yet
first = initial_epoch * steps_per_epoch * config.batch_size
converter = NaFlexImageConverter(config.patch_size, config.max_num_patches)
views = LocalViews(
    NaFlexImageConverter(config.patch_size, config.local_view_patches), config.local_views
)
batches = training_batches(
    scenes.load("train", seed=config.seed, language=language_mix(config.english_fraction),
                start=first),
    tokenizer, converter, config.batch_size, vocab, config.decoder_length, views,
    seed=config.seed, start=first, **locca_tasks(config),
).prefetch(2)
batch = next(iter(batches))
for key, value in batch.items():
    shapes = {k: tuple(v.shape) for k, v in value.items()} if isinstance(value, dict) else (
        tuple(value.shape))
    print(f"{key:20s} {shapes}")

"""
## The model and the training run

`build_trainer` builds the NaFlex image tower, the text tower, the LocCa decoder and the
DINO heads of SILC / TIPS into one compiled `SigLIP2Trainer` (AdamW, warm-up then cosine
decay). The teacher moves towards the student inside each compiled train step (the
trainer's `ema_decay`). Callbacks complete the recipe: `AuxiliaryLossSchedule` switches the
self-supervised terms on at 80% of training; `TrainingBackup` (first in the list) backs the
whole state up after every epoch, atomically, and on a non-finite loss puts the model back to
its last good state and raises `TrainingDiverged` naming the term and the step. `StepLog`
writes every step's terms to a CSV file.
"""

print(trainer.terms)
trainer.fit(
    batches, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
    verbose=2,
    callbacks=[
        backup,
        AuxiliaryLossSchedule(start_fraction=config.auxiliary_start_fraction),
        StepLog(WORK / "steps.csv"),
    ],
)

"""
## One curve per term

Keras logs each term as a running mean over the current epoch; `StepLog` recovered each
step's own value. `plot_curves` draws one panel per term with matplotlib (`plot_losses`
draws them on one log-scale axis, smoothed, as `python -m keras_siglip2 train` does).
"""

log = StepLog.read(WORK / "steps.csv")
curves = {term: log[term] for term in ["loss", *trainer.terms]}
for term, values in curves.items():
    print(f"{term:24s} first {values[0]:8.4f}  last {values[-1]:8.4f}")
plot_curves(curves, OUTPUT)
print("saved", OUTPUT)
Image.open(OUTPUT)  # a notebook shows the figure here

"""
The sigmoid and LocCa losses fall from the start. The self-distillation and
masked-prediction terms are zero until 80% of training, then join the total: the curves
show each one at the moment it is switched on. To keep the model, save it with
`keras_siglip2.checkpoint.save_checkpoint(directory, trainer.backbone, tokenizer, converter,
trainer.decoder, vocab)`; `python -m keras_siglip2 train` does all of this and then runs the
evaluators.
"""
