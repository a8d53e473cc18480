"""
Title: Zero-shot classification and retrieval with SigLIP 2
Author: keras_siglip2 developers
Description: Score images against any texts with a released checkpoint, at a fixed resolution
and with NaFlex at each image's native aspect ratio.
Accelerator: GPU recommended (runs on a CPU, slowly)
"""

"""
## Setup

The project has no public release yet: put a checkout of keras_siglip2 on the machine at
`./keras_siglip2` (in Colab, upload a zip of it in the Files pane and run
`!unzip -q keras_siglip2.zip`), then install it (the notebook's first cell does):
`!pip install ./keras_siglip2`

The guide loads two released checkpoints, `siglip2_base_patch16_224` (square 224 px images)
and `siglip2_base_patch16_naflex` (native aspect ratio), about 1.5 GB each. The test suite
runs it with `GUIDE_STEPS` set: then tiny random models written as local checkpoints stand
in for them (no download), and every score below is meaningless. Pick the backend with
`KERAS_BACKEND` (jax, tensorflow or torch).
"""

import os
import pathlib
import tempfile

import keras
from PIL import Image, ImageDraw

from keras_siglip2 import (
    NaFlexImageConverter,
    SigLIP2Backbone,
    SigLIP2ImageConverter,
    SigLIP2Tokenizer,
    evaluation,
)
from keras_siglip2.testing import save_tiny_random_checkpoint
from keras_siglip2.datasets import scenes
from keras_siglip2.evaluation.batches import encode_image_batch, encode_text_batch

TINY = "GUIDE_STEPS" in os.environ
OUTPUT = pathlib.Path(os.environ.get("GUIDE_OUTPUT", "zero_shot.png"))
NUM_IMAGES = 8 if TINY else 64  # images scored for accuracy and retrieval

if TINY:
    work = pathlib.Path(tempfile.mkdtemp())
    FIXED = save_tiny_random_checkpoint(work / "fixed")
    NAFLEX = save_tiny_random_checkpoint(work / "naflex", naflex=True)
    print("GUIDE_STEPS is set: tiny RANDOM models stand in for the released checkpoints, "
          "so every score and accuracy below is meaningless.")
else:
    FIXED, NAFLEX = "siglip2_base_patch16_224", "siglip2_base_patch16_naflex"

"""
## A checkpoint is three objects

`SigLIP2Backbone.from_preset` gives the two towers and the logit head,
`SigLIP2Tokenizer.from_preset` the text pipeline (lower-case, Gemma SentencePiece, EOS, pad to
64 tokens) and `SigLIP2ImageConverter.from_preset` the image pipeline (resize to a square,
scale to [-1, 1]), both exactly as the checkpoint was trained.
"""

backbone = SigLIP2Backbone.from_preset(FIXED)
tokenizer = SigLIP2Tokenizer.from_preset(FIXED)
converter = SigLIP2ImageConverter.from_preset(FIXED)
print("image size", converter.image_size, "text length", tokenizer.sequence_length)

"""
## Images

The package embeds a procedurally drawn dataset, `keras_siglip2.datasets.scenes`: coloured
shapes on plain, gradient or noisy backgrounds, 64–160 px per side, aspect ratios from 1:2
to 2:1, with captions. The test split holds one object per image here, so each image has
one true shape and colour.
"""

examples = [scenes.example("test", i, language="en", num_objects=1) for i in range(NUM_IMAGES)]
pictures = [ex["image"] for ex in examples]
print([p.shape[:2] for p in pictures[:4]])

"""
## Zero-shot classification

Any list of texts is a classifier. SigLIP scores each image-text pair on its own:
sigmoid(exp(t) · cos + b) is the probability that the text describes the image, so the
probabilities of one image need not sum to 1 (none of them may be high, or several).
`encode_image_batch` and `encode_text_batch` return L2-normalised embeddings as numpy, from
`backbone.encode_images` / `encode_text`, which run compiled (`compiled=False` runs them
op by op, for debugging; on PyTorch, `compiled="max"` adds `torch.compile`, worth its
first call of about 30 s when one shape is encoded many times); `backbone.logits_head`
holds t and b.
"""

SHAPES = scenes.class_names("shape", "en")
prompts = [f"a photo of a {shape}." for shape in SHAPES]


def probabilities(model, image_inputs, texts, text_tokenizer):
    """(images, texts) sigmoid probabilities; `image_inputs` as `encode_image_batch` takes."""
    image_embeddings = encode_image_batch(model, image_inputs)["embeddings"]
    text_embeddings = encode_text_batch(model, text_tokenizer(texts))
    logits = model.logits_head(image_embeddings, text_embeddings)
    return keras.ops.convert_to_numpy(keras.ops.sigmoid(logits))


fixed_inputs = {"images": converter(pictures)}
fixed_probs = probabilities(backbone, fixed_inputs, prompts, tokenizer)
for ex, row in zip(examples[:4], fixed_probs):
    truth = SHAPES[ex["shape"][0]]
    print(f"{truth:9s} best: {SHAPES[row.argmax()]:9s} p = {row.max():.3f}")

"""
A single prompt is noisy. The standard remedy is prompt ensembling:
`evaluation.zero_shot_classifier` embeds every class name in several templates and
averages; `evaluation.zero_shot_accuracy` then scores batches of images (dicts of the image
inputs and a `label`) against these class embeddings. `scenes` has templates for its
attributes in five languages; SigLIP 2's text tower is multilingual, so the same images can
be classified from German prompts.
"""

TASKS = (("shape", "en"), ("colour", "en"), ("colour", "de"))


def accuracy(model, text_tokenizer, image_inputs, attribute, language):
    classifier = evaluation.zero_shot_classifier(
        model, text_tokenizer, scenes.class_names(attribute, language),
        scenes.prompt_templates(language, attribute),
    )
    batch = {**image_inputs, "label": [ex[attribute][0] for ex in examples]}
    return evaluation.zero_shot_accuracy(model, classifier, [batch], top_k=(1,))["top1_accuracy"]


size = "x".join(map(str, converter.image_size))
results = {
    f"{size} px, {attribute} ({language})": accuracy(
        backbone, tokenizer, fixed_inputs, attribute, language
    )
    for attribute, language in TASKS
}

"""
## NaFlex: the native aspect ratio

A square resize squeezes a 1:2 image to 1:1. The NaFlex checkpoint instead resizes each
image, keeping its aspect ratio, to as many 16 px patches as fit in `max_num_patches` (256 for
this checkpoint), and takes the patch sequence with each patch's (row, column) and a padding
mask. `NaFlexImageConverter` does this; `spatial_shapes` is each image's patch grid.
"""

naflex = SigLIP2Backbone.from_preset(NAFLEX)
naflex_tokenizer = SigLIP2Tokenizer.from_preset(NAFLEX)
naflex_converter = NaFlexImageConverter.from_preset(NAFLEX)
naflex_inputs = naflex_converter(pictures)
for picture, grid in zip(pictures[:4], naflex_inputs["spatial_shapes"]):
    print(f"{picture.shape[0]:3d} x {picture.shape[1]:3d} px -> {grid[0]} x {grid[1]} patches")

naflex_probs = probabilities(naflex, naflex_inputs, prompts, naflex_tokenizer)
for attribute, language in TASKS:
    results[f"NaFlex, {attribute} ({language})"] = accuracy(
        naflex, naflex_tokenizer, naflex_inputs, attribute, language
    )
print(f"zero-shot top-1 accuracy on {NUM_IMAGES} images:")
for name, value in results.items():
    print(f"  {name:28s} {value:.3f}")

"""
## Retrieval

The same embeddings rank captions for an image (image → text) or images for a caption
(text → image). `evaluation.retrieval_recall` takes batches of image inputs with their
captions' `token_ids` and returns recall@k in both directions: the fraction of queries whose
match is among the k best. These scenes have up to four objects, each named in the caption.
"""

scenes_with_captions = [scenes.example("test", i, language="en") for i in range(NUM_IMAGES)]
captions = [ex["caption"] for ex in scenes_with_captions]
images = [ex["image"] for ex in scenes_with_captions]
for name, model, text_tokenizer, inputs in (
    ("fixed", backbone, tokenizer, {"images": converter(images)}),
    ("NaFlex", naflex, naflex_tokenizer, naflex_converter(images)),
):
    recall = evaluation.retrieval_recall(
        model, [{**inputs, "token_ids": text_tokenizer(captions)}], ks=(1, 5)
    )
    print(f"{name:7s}", {k: round(v, 3) for k, v in recall.items() if "recall" in k})
    if name == "NaFlex":
        caption_probs = probabilities(model, inputs, captions, text_tokenizer)

for i, row in enumerate(caption_probs[:2]):
    verdict = "right" if row.argmax() == i else "wrong"
    print(f"image {i}: best caption ({verdict}, p = {row.max():.3f}): {captions[row.argmax()]!r}")

"""
## The picture

Each shown image, then its probability for every shape prompt under the 224 px model (blue)
and the NaFlex model (orange).
"""


def draw_scores(pictures, rows, labels, path, thumb=96, bar=140):
    names = list(rows)
    colours = [(40, 90, 200), (230, 120, 20)]
    line = 12
    height = max(thumb, line * len(labels)) + 16
    width = thumb * 2 + 90 + bar * len(names)
    canvas = Image.new("RGB", (width, 24 + height * len(pictures)), "white")
    pen = ImageDraw.Draw(canvas)
    for k, name in enumerate(names):
        pen.text((thumb * 2 + 90 + bar * k, 6), name, fill=colours[k])
    for i, picture in enumerate(pictures):
        top = 24 + i * height
        image = Image.fromarray(picture)
        image.thumbnail((thumb * 2, thumb))  # keeps the aspect ratio
        canvas.paste(image, (0, top))
        for j, label in enumerate(labels):
            y = top + j * line
            pen.text((thumb * 2 + 8, y), label, fill="black")
            for k, name in enumerate(names):
                x = thumb * 2 + 90 + bar * k
                p = float(rows[name][i, j])
                pen.rectangle((x, y + 2, x + max(1, int(p * (bar - 40))), y + line - 2),
                              fill=colours[k])
                pen.text((x + bar - 36, y), f"{p:.2f}", fill=colours[k])
    canvas.save(path)


draw_scores(pictures[:4], {f"{size} px": fixed_probs, "NaFlex": naflex_probs}, SHAPES, OUTPUT)
print("saved", OUTPUT)
Image.open(OUTPUT)  # a notebook shows the figure here

"""
With the released checkpoints, compare the two models on the elongated images: NaFlex sees
them undistorted, the 224 px model squeezed to a square. For your own images pass file paths,
PIL images or arrays to the converters, and any texts to the tokenizer: nothing else changes.
"""
