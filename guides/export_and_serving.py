"""
Title: Exporting SigLIP 2 for serving: TF SavedModel, ONNX and LiteRT
Author: keras_siglip2 developers
Description: The image and text encoders as stand-alone artefacts, served without Keras.
Accelerator: None (runs on a laptop CPU)
"""

"""
## Setup

The project has no public release yet: put a checkout of keras_siglip2 on the machine at
`./keras_siglip2` (in Colab, upload a zip of it in the Files pane and run
`!unzip -q keras_siglip2.zip`), then install it with the exporters and runtimes (the
notebook's first cell does):
`!pip install ./keras_siglip2 tf2onnx onnx onnxscript onnxruntime ai-edge-litert`

`GUIDE_PRESET` picks the checkpoint (default `siglip2_base_patch16_224`, a download of about
1.5 GB). The test suite runs this guide with `GUIDE_STEPS` set, which swaps in a tiny random
model saved as a local preset (no download). Pick the backend with `KERAS_BACKEND`: every
backend exports every format (see below).
"""

import json
import os
import pathlib

import keras
import numpy as np
import sentencepiece
import tensorflow as tf
from PIL import Image, ImageDraw

from keras_siglip2 import (
    NaFlexImageConverter,
    SigLIP2Backbone,
    SigLIP2ImageConverter,
    SigLIP2NaFlexVisionEncoder,
    SigLIP2TextEncoder,
    SigLIP2Tokenizer,
    SigLIP2VisionEncoder,
)
from keras_siglip2.export import (
    FORMATS,
    export_encoders,
    image_encoder_model,
    export_backend,
    load_exported,
)

TINY = "GUIDE_STEPS" in os.environ
OUTPUT = os.environ.get("GUIDE_OUTPUT", "export_agreement.png")
WORK = pathlib.Path("siglip2_export")
keras.utils.set_random_seed(0)

"""
## A checkpoint

`export_encoders` takes a `SigLIP2Backbone` or any handle `SigLIP2Backbone.from_preset`
takes; with a handle it also finds the tokenizer and, for NaFlex, the sequence length. Here
the tiny stand-in is a random backbone and a SentencePiece vocabulary trained on a few
captions, written with `save_to_preset` like a converted checkpoint.
"""

CAPTIONS = ["a red circle", "a blue square", "a green triangle"]


def tiny_preset(directory):
    proto = directory / "spm.model"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CAPTIONS * 4 + ["A photo of shapes on a white background."]),
        model_prefix=str(proto.with_suffix("")), vocab_size=40, hard_vocab_limit=False,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, minloglevel=2,
    )
    tokenizer = SigLIP2Tokenizer(proto=str(proto), sequence_length=16)
    backbone = SigLIP2Backbone(
        SigLIP2VisionEncoder(image_size=64, patch_size=16, hidden_dim=32, num_layers=2,
                             num_heads=2, intermediate_dim=64),
        SigLIP2TextEncoder(vocabulary_size=tokenizer.vocabulary_size(), sequence_length=16,
                           hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64,
                           embedding_dim=32),
    )
    backbone.save_to_preset(str(directory / "preset"))
    tokenizer.save_to_preset(str(directory / "preset"))
    return str(directory / "preset")


WORK.mkdir(exist_ok=True)
PRESET = os.environ.get("GUIDE_PRESET") or (
    tiny_preset(WORK) if TINY else "siglip2_base_patch16_224"
)
backbone = SigLIP2Backbone.from_preset(PRESET)
tokenizer = SigLIP2Tokenizer.from_preset(PRESET)

"""
## Every format from this backend

Keras writes each format natively from some backends only. The weights do not depend on
the backend, so `export_encoders` writes the other pairs by saving the model and exporting
it in a TensorFlow child process (one line on stderr says so), with the same artefacts:

| format           | tensorflow | jax   | torch |
|------------------|------------|-------|-------|
| `tf_saved_model` | yes        | yes   | child |
| `onnx`           | yes        | child | yes   |
| `litert`         | yes        | child | child |
"""

BACKEND = keras.config.backend()
formats = list(FORMATS)
print({f: export_backend(f, BACKEND) for f in formats})

"""
## Export

One directory per format, each with `image_encoder<ext>`, `text_encoder<ext>`,
`tokenizer.model` and `export.json` (inputs, outputs, image and text pipelines, and the
logit scale and bias). Every artefact takes a batch of any size and returns `embeddings`
(L2-normalised), `pooled_output` and `sequence_output`. The command line does the same:
`python -m keras_siglip2 export --preset siglip2_base_patch16_224 --format onnx DST`.
"""

for format in formats:
    export_encoders(backbone, WORK / format, format, tokenizer=tokenizer)
    print(format, sorted(p.name for p in (WORK / format).iterdir()))
config = json.loads((WORK / formats[0] / "export.json").read_text())
print(json.dumps(config["image_encoder"]["inputs"]), json.dumps(config["tokenizer"]))

"""
## Inputs, prepared without Keras

A server needs the image pipeline (resize to `image_size`, scale to [-1, 1]) and the text
pipeline. `export.json` and `tokenizer.model` are all it takes to tokenize with plain
`sentencepiece`: lower-case (`lowercase`: A-Z only, or all of Unicode), no BOS, keep the
first `sequence_length - 1` pieces, append EOS, pad. The TF SavedModel also has a
`serve_text` endpoint that does this inside the graph.
"""


def draw(shape, colour, size=128):
    image = Image.new("RGB", (size, size), "white")
    pen = ImageDraw.Draw(image)
    box = (24, 24, size - 24, size - 24)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    else:
        pen.polygon([(size // 2, 20), (size - 20, size - 20), (20, size - 20)], fill=colour)
    return np.asarray(image)


photos = [draw("circle", "red"), draw("square", "blue"), draw("triangle", "green")]
images = np.asarray(SigLIP2ImageConverter.from_preset(PRESET)(photos), "float32")

spm = sentencepiece.SentencePieceProcessor(model_file=str(WORK / formats[0] / "tokenizer.model"))


ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def tokenize(texts, settings):
    lower = {"ascii": lambda t: t.translate(ASCII_LOWER), "unicode": str.lower}.get(
        settings["lowercase"], lambda t: t
    )
    length, ids = settings["sequence_length"], []
    for pieces in spm.encode([lower(t) for t in texts]):
        row = pieces[: length - 1] + [settings["eos_id"]]
        ids.append(row + [settings["pad_id"]] * (length - len(row)))
    return np.asarray(ids, "int32")


token_ids = tokenize(CAPTIONS, config["tokenizer"])
assert (token_ids == tokenizer(CAPTIONS)).all()  # the same ids as SigLIP2Tokenizer

"""
## Serving with each runtime

TF SavedModel with `tf.saved_model.load`, ONNX with onnxruntime, LiteRT with its
interpreter's signature runner: `load_exported(format, path)` wraps each as a function from
a dict of numpy inputs to the same dict of outputs.
"""


def scores(image_embeddings, text_embeddings, settings):
    """exp(t) · cos + b: sigmoid of it is the probability that image i matches text j."""
    cosine = image_embeddings @ text_embeddings.T
    return np.exp(settings["logit_scale"]) * cosine + settings["logit_bias"]


keras_scores = scores(
    keras.ops.convert_to_numpy(backbone.encode_images(images)),
    keras.ops.convert_to_numpy(backbone.encode_text(token_ids)),
    config,
)
exported_scores = {}
for format in formats:
    settings = json.loads((WORK / format / "export.json").read_text())
    image_encoder = load_exported(format, WORK / format / settings["image_encoder"]["path"])
    text_encoder = load_exported(format, WORK / format / settings["text_encoder"]["path"])
    exported_scores[format] = scores(
        image_encoder({"images": images})["embeddings"],
        text_encoder({"token_ids": token_ids})["embeddings"],
        settings,
    )
    gap = np.abs(exported_scores[format] - keras_scores).max()
    print(f"{format:15s} max |score - Keras score| = {gap:.2e}")

text_encoder = tf.saved_model.load(str(WORK / "tf_saved_model" / "text_encoder"))
from_strings = text_encoder.serve_text(tf.constant(CAPTIONS))["embeddings"].numpy()
print("serve_text vs token ids:", np.abs(from_strings - text_encoder.serve(
    {"token_ids": token_ids})["embeddings"].numpy()).max())

# A random model's probabilities are all ~0 (bias -10); a released one picks each shape.
probabilities = 1 / (1 + np.exp(-keras_scores))
for caption, row in zip(CAPTIONS, probabilities.T):
    print(f"{caption:18s}", " ".join(f"{p:6.3f}" for p in row))

"""
## NaFlex: one fixed number of patches per export

A NaFlex tower takes each image at its own aspect ratio as a padded patch sequence. ONNX and
LiteRT graphs are built for fixed shapes, so the number of patches N is fixed when exporting
(`max_num_patches`, the preset's 256 by default); the batch size stays free. Prepare inputs
with `NaFlexImageConverter` at the same N.
"""

if TINY:
    naflex = SigLIP2Backbone(
        SigLIP2NaFlexVisionEncoder(patch_size=16, hidden_dim=32, num_layers=2, num_heads=2,
                                   intermediate_dim=64, position_grid_size=4),
        SigLIP2TextEncoder(vocabulary_size=64, sequence_length=16, hidden_dim=32,
                           num_layers=2, num_heads=2, intermediate_dim=64, embedding_dim=32),
    )
    patches_per_image = 24
else:
    naflex = SigLIP2Backbone.from_preset("siglip2_base_patch16_naflex")
    patches_per_image = 256
paths = export_encoders(
    naflex, WORK / "naflex", formats[0], max_num_patches=patches_per_image, encoders=("image",)
)
converter = NaFlexImageConverter(patch_size=16, max_num_patches=patches_per_image)
wide = np.concatenate([photos[0], photos[1]], axis=1)  # 128 x 256: two patch rows per column
patch_inputs = converter([wide, photos[2]])
naflex_gap = np.abs(
    load_exported(formats[0], paths["image"])(patch_inputs)["embeddings"]
    - keras.ops.convert_to_numpy(image_encoder_model(naflex, patches_per_image)(patch_inputs)[
        "embeddings"])
).max()
print("NaFlex spatial shapes", patch_inputs["spatial_shapes"].tolist(), "max |diff|", naflex_gap)

"""
## Keras against the exported artefacts

Every image-text score, Keras on the x axis, each exported artefact on the y axis: the points
sit on the diagonal.
"""


def plot_agreement(reference, others, path, size=480, margin=50):
    colours = [(30, 90, 200), (220, 120, 20), (40, 160, 60)]
    canvas = Image.new("RGB", (size, size), "white")
    pen = ImageDraw.Draw(canvas)
    values = np.concatenate([reference.ravel()] + [v.ravel() for v in others.values()])
    lo, hi = float(values.min()), float(values.max())
    span = (hi - lo) or 1.0

    def at(x, y):
        scale = size - 2 * margin
        return margin + scale * (x - lo) / span, size - margin - scale * (y - lo) / span

    pen.rectangle((margin, margin, size - margin, size - margin), outline="black")
    pen.line([at(lo, lo), at(hi, hi)], fill=(180, 180, 180), width=1)
    for row, ((name, value), colour) in enumerate(zip(others.items(), colours)):
        for x, y in zip(reference.ravel(), value.ravel()):
            cx, cy = at(x, y)
            pen.ellipse((cx - 4, cy - 4, cx + 4, cy + 4), outline=colour, width=2)
        gap = np.abs(value - reference).max()
        pen.text((margin + 8, margin + 8 + 14 * row), f"{name}: max |diff| {gap:.1e}",
                 fill=colour)
    pen.text((margin, size - margin + 10), f"Keras ({BACKEND}) score  {lo:.2f} .. {hi:.2f}",
             fill="black")
    pen.text((8, margin - 30), "exported score", fill="black")
    canvas.save(path)


plot_agreement(keras_scores, exported_scores, OUTPUT)
print("saved", OUTPUT)
