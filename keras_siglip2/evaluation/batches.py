"""Reading evaluation batches: numpy dicts, class labels, the image inputs in them, the image
tower's outputs.

Every evaluator runs the towers through `SigLIP2Backbone.encode_images` / `encode_text`
(compiled by Keras on each backend, once per batch shape) and does its bookkeeping in numpy.
"""

import keras
import numpy as np


def numpy_batches(dataset):
    """Yields the batches of a `tf.data.Dataset` or any iterable of dicts as dicts of numpy.

    Example:
    >>> [b["label"].tolist() for b in numpy_batches([{"label": [1, 2]}, {"label": [3]}])]
    [[1, 2], [3]]
    """
    import tensorflow as tf

    batches = dataset.as_numpy_iterator() if isinstance(dataset, tf.data.Dataset) else dataset
    for batch in batches:
        if not isinstance(batch, dict):
            raise TypeError(
                f"Evaluation batches must be dicts of arrays (e.g. {{'images': ..., "
                f"'label': ...}}); got a {type(batch).__name__}."
            )
        yield {key: keras.ops.convert_to_numpy(value) for key, value in batch.items()}


def class_labels(batch, label_key, num_classes):
    """`batch[label_key]` as `class_indices`; a KeyError that lists the keys if it is missing.

    Example:
    >>> class_labels({"label": [[2], [0]]}, "label", 3).tolist()
    [2, 0]
    """
    if label_key not in batch:
        raise KeyError(f"The batch has no {label_key!r} labels; it has {sorted(batch)}.")
    return class_indices(batch[label_key], num_classes)


def class_indices(labels, num_classes):
    """`labels` as (N,) int64, checked to lie in [0, num_classes) (a ValueError if not).

    Example:
    >>> class_indices([1, 0], 2).tolist()
    [1, 0]
    """
    labels = np.asarray(labels).astype("int64").reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Labels must be class indices in [0, {num_classes}); got "
            f"[{labels.min()}, {labels.max()}]."
        )
    return labels


def encode_image_batch(backbone, batch):
    """The image tower on `batch`'s image inputs, as numpy.

    Returns a dict with `embeddings` (B, E) float32 and `tokens` (B, N, D), the un-pooled
    `sequence_output` (what the LocCa decoder attends to), both from one compiled
    `backbone.encode_images(..., return_tokens=True)`, and `token_mask` (B, N) bool, False on
    NaFlex padding patches.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone()
    >>> out = encode_image_batch(backbone, {"images": np.zeros((2, 16, 16, 3), "float32")})
    >>> out["embeddings"].shape, out["tokens"].shape, bool(out["token_mask"].all())
    ((2, 8), (2, 4, 8), True)
    """
    inputs = backbone.image_inputs(batch)
    outputs = backbone.encode_images(inputs, return_tokens=True)
    tokens = np.asarray(outputs["tokens"])
    if backbone.is_naflex:
        token_mask = np.asarray(inputs["patch_mask"]).astype(bool)
    else:
        token_mask = np.ones(tokens.shape[:2], bool)
    return {
        "embeddings": np.asarray(outputs["embeddings"]),
        "tokens": tokens,
        "token_mask": token_mask,
    }


def encode_text_batch(backbone, token_ids, batch_size=256):
    """L2-normalised text embeddings (N, E) float32 of `token_ids` (N, L), as numpy.

    Runs `batch_size` texts at a time, padding the last chunk so every call has one shape.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone()
    >>> encode_text_batch(backbone, np.ones((5, 4), "int32"), batch_size=2).shape
    (5, 8)
    """
    token_ids = np.asarray(token_ids)
    total = len(token_ids)
    size = max(1, min(batch_size, total))
    chunks = []
    for start in range(0, total, size):
        chunk = token_ids[start : start + size]
        padding = np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)
        padded = np.concatenate([chunk, padding])
        chunks.append(np.asarray(backbone.encode_text(padded))[: len(chunk)])
    if not chunks:
        return np.zeros((0, backbone.text_encoder.output["pooled_output"].shape[-1]), "float32")
    return np.concatenate(chunks)
