"""Linear probe of the image embedding: how much of a label the image tower has learnt.

Zero-shot accuracy needs the image tower to hold the label and the text tower to name it; a
linear classifier fitted on the same image embeddings (`fit_ridge_classifier`) needs only the
first. A label that the probe reads well but zero-shot misses is an alignment problem; one that
the probe cannot read either is not linearly readable from the image embedding at all.
"""

from keras_siglip2.evaluation.batches import class_labels, encode_image_batch, numpy_batches
from keras_siglip2.evaluation.ridge import fit_ridge_classifier


def _embeddings(backbone, dataset, num_classes, label_key):
    """Yields (embeddings (B, E), labels (B,)) of each batch."""
    for batch in numpy_batches(dataset):
        labels = class_labels(batch, label_key, num_classes)
        yield encode_image_batch(backbone, batch)["embeddings"], labels


def linear_probe_accuracy(backbone, train_dataset, test_dataset, num_classes, label_key="label",
                          l2_regularization=1e-3):
    """Test accuracy of a ridge-regression classifier on the L2-normalised image embeddings.

    Batches carry the image inputs (`images`, or the NaFlex keys) and an int class index under
    `label_key`; the classifier is fitted on `train_dataset` and scored on `test_dataset`.

    Returns:
        dict with `accuracy`, `num_train_examples` and `num_test_examples`.

    Example:
    >>> import numpy as np
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone()
    >>> images = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3))
    >>> batch = {"images": images, "label": np.array([0, 1, 0, 1])}
    >>> result = linear_probe_accuracy(backbone, [batch], [batch], num_classes=2)
    >>> result["num_train_examples"], 0 <= result["accuracy"] <= 1
    (4, True)
    """
    weights, bias, count = fit_ridge_classifier(
        _embeddings(backbone, train_dataset, num_classes, label_key), num_classes,
        l2_regularization,
    )
    hits = total = 0
    for embeddings, labels in _embeddings(backbone, test_dataset, num_classes, label_key):
        hits += int(((embeddings @ weights + bias).argmax(axis=1) == labels).sum())
        total += len(labels)
    if total == 0:
        raise ValueError("The test set gave no examples.")
    return {"accuracy": hits / total, "num_train_examples": count, "num_test_examples": total}
