"""Referring-expression comprehension: decode a box from a region caption (LocCa's AREF task).

The decoder input is built by `locca_targets.make_locca_example("aref", ...)`, the layout it
was trained on: [AREF] + region caption (its first T − 6 tokens), then 4 location tokens decoded
greedily (causal) or in one parallel pass, restricted to the location bins, and read back as
bin centres by `LocCaVocabulary.decode_box`.
"""

import functools

import numpy as np
from keras import ops
import tensorflow as tf

from keras_siglip2.evaluation.batches import encode_image_batch, numpy_batches
from keras_siglip2.evaluation.decoding import greedy_decode, parallel_decode
from keras_siglip2.locca_targets import make_locca_example, strip_text_ids


def box_iou(a, b):
    """Intersection over union of (…, 4) boxes y0, x0, y1, x1 (0 where the union is empty).

    Inverted boxes (y1 < y0 or x1 < x0) have zero area.

    Example:
    >>> box_iou([[0, 0, 0.5, 0.5], [0, 0, 1, 1]], [0.25, 0.25, 0.75, 0.75]).round(4).tolist()
    [0.1429, 0.25]
    """
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    area = lambda box: (  # noqa: E731
        np.maximum(box[..., 2] - box[..., 0], 0) * np.maximum(box[..., 3] - box[..., 1], 0)
    )
    corners = np.concatenate(
        [np.maximum(a[..., :2], b[..., :2]), np.minimum(a[..., 2:], b[..., 2:])], -1
    )
    intersection = area(corners)
    union = area(a) + area(b) - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)


def check_referring_batch(batch):
    """Raises a KeyError naming what a referring batch lacks (`prompt_ids`, `box`)."""
    for key in ("prompt_ids", "box"):
        if key not in batch:
            raise KeyError(
                f"Referring batches need `prompt_ids` (B, L) and `box` (B, 4); this one "
                f"has {sorted(batch)}."
            )


@functools.cache
def _aref_prefix_fn(vocabulary, sequence_length):
    """A `tf.function` (B, L) ids → (B, T) prefixes, traced once instead of eager ops per row."""

    def row(ids):
        region = strip_text_ids(ids, vocabulary.pad_id, vocabulary.eos_id)
        # The parallel layout is [AREF] + prefix + [MASK]s: drop the masks.
        inputs = make_locca_example(
            "aref", None, tf.zeros([4]), region, False, vocabulary, sequence_length
        )["decoder_input_ids"]
        return tf.where(inputs == vocabulary.mask_id, vocabulary.pad_id, inputs)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def batch(ids):
        return tf.map_fn(row, ids, fn_output_signature=tf.TensorSpec([sequence_length], tf.int32))

    return batch


def aref_prefix_ids(prompt_ids, vocabulary, sequence_length):
    """(B, T) [AREF] + region caption ids, pad after, from (B, L) tokenizer outputs.

    Example:
    >>> from keras_siglip2.locca_targets import LocCaVocabulary
    >>> vocab = LocCaVocabulary(text_vocabulary_size=10, num_location_bins=4)
    >>> aref_prefix_ids([[5, 6, 1, 0], [7, 1, 0, 0]], vocab, 8).tolist()
    [[16, 5, 6, 0, 0, 0, 0, 0], [16, 7, 0, 0, 0, 0, 0, 0]]
    """
    ids = np.asarray(prompt_ids, "int32")
    return _aref_prefix_fn(vocabulary, sequence_length)(ids).numpy()


def predict_boxes(backbone, decoder, vocabulary, batch, parallel=False):
    """(B, 4) y0, x0, y1, x1 boxes the LocCa decoder reads from `batch`'s `prompt_ids`.

    `batch` holds the image inputs and `prompt_ids` (B, L) as in `referring_box_iou`, whose
    other arguments these are.
    """
    location_ids = np.arange(vocabulary.num_location_bins) + vocabulary.location_offset
    image = encode_image_batch(backbone, batch)
    prefix = aref_prefix_ids(batch["prompt_ids"], vocabulary, decoder.sequence_length)
    image_mask = image["token_mask"] if backbone.is_naflex else None
    args = (decoder, image["tokens"], image_mask, prefix, 4)
    kwargs = {"pad_id": vocabulary.pad_id}
    if decoder.image_position_codes:
        positions = backbone.vision_encoder.token_positions(backbone.image_inputs(batch))
        kwargs["image_positions"] = ops.convert_to_numpy(positions)
    if parallel:
        tokens = parallel_decode(*args, vocabulary.mask_id, location_ids, **kwargs)
    else:
        tokens = greedy_decode(*args, location_ids, **kwargs)
    return np.asarray(vocabulary.decode_box(tokens))


def referring_box_iou(backbone, decoder, vocabulary, dataset, parallel=False):
    """Mean IoU and accuracy@0.5 of the boxes the LocCa decoder predicts from region captions.

    Batches carry the image inputs (`images`, or the NaFlex keys), `prompt_ids` (B, L)
    tokenizer ids of the referring expression (pad/eos are stripped), and `box` (B, 4) the
    target y0, x0, y1, x1 in [0, 1]. The decoder attends to the image tower's
    `sequence_output` (padding patches masked), as in `SigLIP2Trainer`.

    Args:
        backbone: a `SigLIP2Backbone`.
        decoder: the `LocCaDecoder` trained with it.
        vocabulary: the `LocCaVocabulary` of the decoder.
        dataset: a `tf.data.Dataset` or iterable of such batches.
        parallel: decode the 4 box tokens in one parallel pass from [MASK]s instead of
            greedily (causal).

    Returns:
        dict with `mean_iou`, `accuracy@0.5` (fraction with IoU ≥ 0.5) and `num_examples`.

    Example:
    >>> from keras_siglip2 import LocCaDecoder
    >>> from keras_siglip2.testing import toy_backbone
    >>> from keras_siglip2.locca_targets import LocCaVocabulary
    >>> backbone = toy_backbone()
    >>> vocab = LocCaVocabulary(text_vocabulary_size=32, num_location_bins=10)
    >>> decoder = LocCaDecoder(vocabulary_size=vocab.size, sequence_length=8, hidden_dim=8,
    ...     num_layers=1, num_heads=2, intermediate_dim=16)
    >>> batch = {"images": np.zeros((2, 16, 16, 3), "float32"),
    ...          "prompt_ids": [[5, 6, 1, 0], [7, 1, 0, 0]], "box": [[0, 0, 1, 1]] * 2}
    >>> result = referring_box_iou(backbone, decoder, vocab, [batch])
    >>> sorted(result), result["num_examples"]
    (['accuracy@0.5', 'mean_iou', 'num_examples'], 2)
    """
    ious = []
    for batch in numpy_batches(dataset):
        check_referring_batch(batch)
        boxes = predict_boxes(backbone, decoder, vocabulary, batch, parallel)
        ious.append(box_iou(boxes, batch["box"]))
    if not ious:
        raise ValueError("The dataset gave no batches.")
    ious = np.concatenate(ious)
    return {
        "mean_iou": float(ious.mean()),
        "accuracy@0.5": float((ious >= 0.5).mean()),
        "num_examples": len(ious),
    }
