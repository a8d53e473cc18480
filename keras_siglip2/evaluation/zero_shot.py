"""Zero-shot classification: prompt-ensembled class embeddings and top-k accuracy.

As CLIP and big_vision's `discriminative_classifier`: each class embedding is the L2-normalised
mean over the templates of the (L2-normalised) text embeddings of "template(class name)"; an
image's class scores are its cosine similarities to the class embeddings.
"""

import keras
import numpy as np

from keras_siglip2.evaluation.batches import (
    class_labels,
    encode_image_batch,
    encode_text_batch,
    numpy_batches,
)


def zero_shot_classifier(backbone, tokenizer, class_names, templates, batch_size=256):
    """(C, E) float32 L2-normalised class embeddings from prompt ensembling.

    Args:
        backbone: a `SigLIP2Backbone`.
        tokenizer: a callable mapping a list of texts to (N, L) token ids (e.g.
            `SigLIP2Tokenizer`).
        class_names: C class names.
        templates: prompt templates, each with one `{}` for the class name
            (e.g. `"a photo of a {}."`).
        batch_size: texts per text-tower call.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone()
    >>> tokenizer = lambda texts: np.array([[len(t) + 2, 1, 0, 0] for t in texts])
    >>> classifier = zero_shot_classifier(backbone, tokenizer, ["cat", "dog", "bird"],
    ...                                   ["a {}", "a photo of a {}"])
    >>> classifier.shape, np.linalg.norm(classifier, axis=1).round(5).tolist()
    ((3, 8), [1.0, 1.0, 1.0])
    """
    class_names, templates = list(class_names), list(templates)
    if not class_names or not templates:
        raise ValueError("Need at least one class name and one template.")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(
                f"Each template must be a str with exactly one '{{}}' for the class name; "
                f"got {template!r}."
            )
    texts = [template.format(name) for name in class_names for template in templates]
    embeddings = encode_text_batch(backbone, np.asarray(tokenizer(texts)), batch_size)
    mean = embeddings.reshape(len(class_names), len(templates), -1).mean(axis=1)
    return (mean / (np.linalg.norm(mean, axis=-1, keepdims=True) + 1e-8)).astype("float32")


def zero_shot_accuracy(backbone, classifier, dataset, label_key="label", top_k=(1, 5)):
    """Top-k accuracies of zero-shot classification over `dataset`.

    Batches carry the image inputs (`images`, or the NaFlex keys) and an int class index under
    `label_key`. An image counts as correct at k when fewer than k other classes score at least
    as high as its true class (ties count against it).

    Args:
        backbone: a `SigLIP2Backbone`.
        classifier: (C, E) class embeddings (`zero_shot_classifier`).
        dataset: a `tf.data.Dataset` or iterable of such batches.
        label_key: the batch key of the labels.
        top_k: the k values, each ≤ C.

    Returns:
        dict with `top{k}_accuracy` for each k and `num_examples`.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone()
    >>> images = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 3)).astype("float32")
    >>> classifier = encode_image_batch(backbone, {"images": images})["embeddings"]  # c: image c
    >>> zero_shot_accuracy(backbone, classifier, [{"images": images, "label": [0, 1, 2]}],
    ...                    top_k=(1, 3))
    {'top1_accuracy': 1.0, 'top3_accuracy': 1.0, 'num_examples': 3}
    """
    classifier = keras.ops.convert_to_numpy(classifier).astype("float32")
    num_classes = len(classifier)
    top_k = tuple(int(k) for k in top_k)
    if not top_k or min(top_k) < 1 or max(top_k) > num_classes:
        raise ValueError(f"top_k must be in [1, {num_classes}] (the classes); got {top_k}.")
    hits, total = np.zeros(len(top_k), "int64"), 0
    for batch in numpy_batches(dataset):
        labels = class_labels(batch, label_key, num_classes)
        scores = encode_image_batch(backbone, batch)["embeddings"] @ classifier.T
        true = np.take_along_axis(scores, labels[:, None], axis=1)
        others_at_least = (scores >= true).sum(axis=1) - 1
        hits += (others_at_least[:, None] < np.array(top_k)[None]).sum(axis=0)
        total += len(labels)
    if total == 0:
        raise ValueError("The dataset gave no examples.")
    return {
        **{f"top{k}_accuracy": float(h / total) for k, h in zip(top_k, hits)},
        "num_examples": total,
    }
