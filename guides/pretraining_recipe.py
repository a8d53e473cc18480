"""
Title: Pretraining SigLIP 2 with the whole recipe
Author: keras_siglip2 developers
Description: Every loss term of SigLIP 2 in one `model.fit`, with a loss curve per term.
Accelerator: None (runs on a laptop CPU)
"""

"""
## Setup

In Colab, install the package first:
`!pip install git+https://github.com/keras-siglip2/keras_siglip2`

`GUIDE_STEPS` (default 120) sets the training length; the test suite runs this guide with a
handful of steps. Pick the backend with `KERAS_BACKEND` (jax, tensorflow or torch).
"""

import os

import keras
import numpy as np
from PIL import Image

from keras_siglip2 import (
    LocCaDecoder,
    SigLIP2Backbone,
    SigLIP2TextEncoder,
    SigLIP2Trainer,
    SigLIP2VisionEncoder,
)
from keras_siglip2.callbacks import AuxiliaryLossSchedule, EMATeacher, TerminateOnNaN
from keras_siglip2.locca_targets import LocCaVocabulary, make_locca_example
from keras_siglip2.plots import plot_curves

STEPS = int(os.environ.get("GUIDE_STEPS", 120))
OUTPUT = os.environ.get("GUIDE_OUTPUT", "loss_curves.png")
keras.utils.set_random_seed(0)

"""
## A toy image-text dataset

Each image is one coloured square on a grey background; its caption names the colour and
the position, and its box is the square's (y0, x0, y1, x1) in [0, 1]. Words get ids from a
closed vocabulary (a real run uses `SigLIP2Tokenizer`): 0 is padding, 1 the end of text.
"""

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220),
           "yellow": (230, 210, 40)}
WORDS = ["<pad>", "<eos>", "a", "square", "left", "right", "top", "bottom", *COLOURS]
IDS = {w: i for i, w in enumerate(WORDS)}
SIZE, PATCH, TEXT_LENGTH, DECODER_LENGTH, VIEWS = 32, 8, 8, 12, 2


def encode(words):
    ids = [IDS[w] for w in words.split()] + [IDS["<eos>"]]
    return np.array(ids + [0] * (TEXT_LENGTH - len(ids)), "int32")


def example(rng):
    colour = rng.choice(list(COLOURS))
    side = int(rng.integers(10, 16))
    y, x = (int(v) for v in rng.integers(0, SIZE - side, 2))
    image = np.full((SIZE, SIZE, 3), 128, "uint8")
    image[y:y + side, x:x + side] = COLOURS[colour]
    where = ("top" if y + side / 2 < SIZE / 2 else "bottom",
             "left" if x + side / 2 < SIZE / 2 else "right")
    caption = f"a {colour} square {where[0]} {where[1]}"
    box = np.array([y, x, y + side, x + side], "float32") / SIZE
    return image, caption, box, f"{colour} square"


def local_views(image, rng):
    """SILC's local views: random crops (here 40–70% of each side) resized to full size."""
    views = []
    for _ in range(VIEWS):
        h, w = (int(SIZE * rng.uniform(0.4, 0.7)) for _ in range(2))
        y, x = rng.integers(0, SIZE - h + 1), rng.integers(0, SIZE - w + 1)
        crop = Image.fromarray(image[y:y + h, x:x + w]).resize((SIZE, SIZE), Image.BILINEAR)
        views.append(np.asarray(crop))
    return np.stack(views)


vocab = LocCaVocabulary(text_vocabulary_size=len(WORDS), num_location_bins=16)
rng = np.random.default_rng(0)
n = 256
data = {k: [] for k in ("images", "token_ids", "local_views", "decoder_input_ids",
                        "decoder_target_ids", "decoder_loss_mask", "decoder_causal")}
for i in range(n):
    image, caption, box, region = example(rng)
    data["images"].append(image)
    data["token_ids"].append(encode(caption))
    data["local_views"].append(local_views(image, rng))
    task = ("cap", "aref", "gcap")[i % 3]
    locca = make_locca_example(
        task, encode(caption)[: len(caption.split())], box,
        encode(region)[: len(region.split())], i % 2 == 0, vocab, DECODER_LENGTH,
    )
    for key in ("decoder_input_ids", "decoder_target_ids", "decoder_loss_mask",
                "decoder_causal"):
        data[key].append(locca[key])
data = {k: np.stack(v) for k, v in data.items()}
for key in ("images", "local_views"):  # big_vision's value range: [0, 255] → [-1, 1]
    data[key] = data[key].astype("float32") / 127.5 - 1.0
print({k: v.shape for k, v in data.items()})

"""
## The model and the recipe

A tiny SigLIP 2: both towers, a LocCa decoder, and the self-distillation heads. The
trainer computes four terms; the self-supervised ones are switched on for the last 20% of
training by `AuxiliaryLossSchedule`, and `EMATeacher` moves the teacher after each step.
"""

backbone = SigLIP2Backbone(
    SigLIP2VisionEncoder(image_size=SIZE, patch_size=PATCH, hidden_dim=32, num_layers=2,
                         num_heads=2, intermediate_dim=64),
    SigLIP2TextEncoder(vocabulary_size=len(WORDS), sequence_length=TEXT_LENGTH,
                       hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64,
                       embedding_dim=32),
)
trainer = SigLIP2Trainer(
    backbone,
    decoder=LocCaDecoder(vocabulary_size=vocab.size, sequence_length=DECODER_LENGTH,
                         hidden_dim=32, num_layers=1, num_heads=2, intermediate_dim=64),
    distillation_dim=64, head_hidden_dim=64, head_bottleneck_dim=16, seed=0,
)
trainer.compile(optimizer=keras.optimizers.AdamW(3e-3, weight_decay=1e-4))


class PerStep(keras.callbacks.Callback):
    """Keeps the logs after every step (fit's history has one value per epoch)."""

    def on_train_begin(self, logs=None):
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append({k: float(v) for k, v in logs.items()})


batch_size = 32
steps_per_epoch = n // batch_size
per_step = PerStep()
trainer.fit(
    data, batch_size=batch_size, epochs=max(1, STEPS // steps_per_epoch), verbose=2,
    callbacks=[EMATeacher(0.99), AuxiliaryLossSchedule(start_fraction=0.8), TerminateOnNaN(),
               per_step],
)

"""
## One curve per term

Keras logs each term as a running mean over the current epoch; `PerStep` recorded it after
every step. `plot_curves` draws one panel per term with PIL.
"""

TERMS = trainer.terms
curves = {t: [s[t] for s in per_step.steps] for t in TERMS}
for term, values in curves.items():
    print(f"{term:24s} first {values[0]:8.4f}  last {values[-1]:8.4f}")


plot_curves(curves, OUTPUT)
print("saved", OUTPUT)

"""
The sigmoid and LocCa losses fall from the start. The self-distillation and
masked-prediction terms are zero until 80% of training, then join the total: the curves
show each one at the moment it is switched on.
"""
