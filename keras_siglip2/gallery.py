"""A prediction gallery: test scenes with what a trained model makes of them, as a figure.

Each panel is one scene of `scenes.load("test", ...)` at its own aspect ratio, titled with
its caption; under it, the zero-shot top-3 colours and shapes (the model's logits over the
class names ensembled over the prompt templates, `scene_evaluation.attribute_classifiers`,
as a softmax over the classes) and one referring expression, whose ground-truth box is
drawn in green and the box the LocCa decoder reads from it in red (with their IoU; the
ground truth only for a model without a decoder). `python -m keras_siglip2 train` writes
it as `gallery.png`, and `eval CHECKPOINT --gallery` too.
"""

import textwrap

import keras
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from keras_siglip2 import evaluation
from keras_siglip2.datasets import scenes
from keras_siglip2.evaluation.batches import encode_image_batch
from keras_siglip2.scene_evaluation import attribute_classifiers, converted_batches

TRUE_COLOUR, PREDICTED_COLOUR = "lime", "red"


def gallery_predictions(model, num_images=8, seed=0, top=3):
    """What `model` predicts for the first `num_images` test scenes, one dict per scene.

    Args:
        model: a dict as `checkpoint.load_checkpoint` returns (`backbone`, `tokenizer`,
            `image_converter`, `decoder`, `vocabulary`).
        num_images, seed: the scenes (`scenes.load("test", num_images, seed=seed)`).
        top: labels kept per attribute.

    Returns:
        a list of dicts: `image` (H, W, 3) uint8, `caption`, `expression` (the first
        object's referring expression), `true_box` and `predicted_box` (y0, x0, y1, x1 in
        [0, 1]; None without a decoder), `top` (`{attribute: [(class name, probability),
        ...]}`), in English.
    """
    backbone, tokenizer = model["backbone"], model["tokenizer"]
    decoder, vocabulary = model.get("decoder"), model.get("vocabulary")
    examples = scenes.load("test", num_images, seed=seed, language="en")
    batch = next(iter(evaluation.numpy_batches(converted_batches(
        examples, model["image_converter"], num_images,
        prompt_ids=lambda ex: tokenizer(ex["referring_expressions"][:1])[0],
        box=lambda ex: ex["boxes"][0],
    ))))
    embeddings = encode_image_batch(backbone, batch)["embeddings"]
    top_labels = {}
    for attribute, classifier in attribute_classifiers(backbone, tokenizer).items():
        logits = keras.ops.convert_to_numpy(backbone.logits_head(embeddings, classifier))
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        names = scenes.class_names(attribute, "en")
        top_labels[attribute] = [
            [(names[c], float(row[c])) for c in np.argsort(-row)[:top]] for row in probabilities
        ]
    predicted = (evaluation.predict_boxes(backbone, decoder, vocabulary, batch)
                 if decoder is not None and vocabulary is not None else [None] * num_images)
    return [
        {"image": ex["image"], "caption": ex["caption"].decode(),
         "expression": ex["referring_expressions"][0].decode(), "true_box": ex["boxes"][0],
         "predicted_box": predicted[i],
         "top": {attribute: labels[i] for attribute, labels in top_labels.items()}}
        for i, ex in enumerate(examples.as_numpy_iterator())
    ]


def _draw_box(ax, box, shape, colour):
    height, width = shape[:2]
    y0, x0, y1, x1 = (float(v) for v in box)
    ax.add_patch(Rectangle((x0 * width, y0 * height), (x1 - x0) * width, (y1 - y0) * height,
                           fill=False, edgecolor=colour, linewidth=2))


def plot_gallery(predictions, path=None, columns=4, title=None):
    """A grid of `gallery_predictions`' scenes, `columns` wide; saved to `path` if given.

    Example:
    >>> image = np.full((40, 60, 3), 200, np.uint8)
    >>> figure = plot_gallery([{"image": image, "caption": "a red circle",
    ...     "expression": "the red circle", "true_box": [0.1, 0.2, 0.5, 0.6],
    ...     "predicted_box": [0.1, 0.2, 0.4, 0.6],
    ...     "top": {"colour": [("red", 0.9), ("pink", 0.05)]}}], columns=2)
    >>> ax = figure.axes[0]
    >>> ax.get_title(), len(ax.patches), "IoU 0.75" in ax.get_xlabel()
    ('a red circle', 2, True)
    """
    rows = -(-len(predictions) // columns)
    figure = Figure(figsize=(3.3 * columns, 4.6 * rows), layout="constrained")
    figure.suptitle(title or "Predictions on test scenes — boxes: green = ground truth, "
                    "red = LocCa decoder", fontsize=11)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, item in zip(axes, predictions):
        image = np.asarray(item["image"])
        height, width = image.shape[:2]
        ax.imshow(image, extent=(0, width, height, 0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("\n".join(textwrap.wrap(item["caption"], 44)), fontsize=8)
        lines = [f"{attribute}: " + ", ".join(f"{name} {p:.0%}" for name, p in labels)
                 for attribute, labels in item["top"].items()]
        lines.append(f"“{item['expression']}”")
        _draw_box(ax, item["true_box"], image.shape, TRUE_COLOUR)
        if item["predicted_box"] is not None:
            _draw_box(ax, item["predicted_box"], image.shape, PREDICTED_COLOUR)
            iou = float(evaluation.box_iou(item["predicted_box"], item["true_box"]))
            lines[-1] += f"  IoU {iou:.2f}"
        else:
            lines[-1] += "  (no decoder)"
        ax.set_xlabel("\n".join(line for text in lines for line in textwrap.wrap(text, 48)),
                      fontsize=8, loc="left")
    for ax in axes[len(predictions):]:
        ax.set_axis_off()
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


def prediction_gallery(model, path=None, num_images=8, seed=0, columns=4):
    """`plot_gallery(gallery_predictions(model, num_images, seed), path, columns)`."""
    return plot_gallery(gallery_predictions(model, num_images, seed), path, columns)
