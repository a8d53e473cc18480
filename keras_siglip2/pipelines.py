"""`tf.data` pipelines from grounded image-text examples to trainer and evaluator batches.

An example is a dict with `image` (H, W, 3) uint8, `caption` (a string), and for LocCa and
the localisation evaluators `boxes` (K, 4: y0, x0, y1, x1 in [0, 1]) and
`referring_expressions` (K strings), as `keras_siglip2.datasets.scenes` yields them; other
datasets with these keys go through the same functions. Every random draw is stateless and
seeded by (seed, example index), so a pipeline is reproducible and resumable.
"""

import tensorflow as tf

from keras_siglip2.evaluation import patch_labels
from keras_siglip2.locca_targets import CAUSAL_PROBABILITY, DECODER_KEYS, sample_locca_example
from keras_siglip2.preprocessing import NaFlexImageConverter


def converted_image(image_converter, image):
    """The converter's output as a dict of model inputs: `images`, or the NaFlex keys.

    Example:
    >>> from keras_siglip2.preprocessing import SigLIP2ImageConverter
    >>> out = converted_image(SigLIP2ImageConverter(16), tf.zeros((20, 30, 3), tf.uint8))
    >>> sorted(out), tuple(out["images"].shape)
    (['images'], (16, 16, 3))
    """
    out = image_converter(image)
    return out if isinstance(out, dict) else {"images": out}


def training_batches(
    examples, tokenizer, image_converter, batch_size, vocabulary=None, decoder_length=None,
    local_views=None, seed=0, start=0, all_locca_tasks=False, locca_task_weights=None,
    locca_causal_probability=CAUSAL_PROBABILITY,
):
    """Batches for `SigLIP2Trainer.fit`: images, `token_ids`, and the recipe's extra inputs.

    With a `LocCaVocabulary`, each example gets one LocCa task (captioning, referring
    expression → box, box → referring expression) of `decoder_length` tokens, drawn by
    `sample_locca_example` in proportion to `locca_task_weights` (or all three,
    `all_locca_tasks`: (B, 3, T) decoder inputs), in the causal layout with probability
    `locca_causal_probability` (else the parallel one); with a `LocalViews` layer, SILC's
    `local_views`. Batches drop the remainder so that every step has one static shape. The
    draws of example i are seeded by `(seed, start + i)`: give `examples` that begin at
    example `start` (e.g. `scenes.load(..., start=start)`) to resume a stream.

    Example:
    >>> from keras_siglip2.datasets import scenes
    >>> from keras_siglip2.preprocessing import NaFlexImageConverter
    >>> from keras_siglip2.locca_targets import LocCaVocabulary
    >>> tokenizer = scenes.tokenizer(sequence_length=16)
    >>> vocab = LocCaVocabulary(tokenizer.vocabulary_size(), num_location_bins=32)
    >>> batches = training_batches(scenes.load("train", 4), tokenizer,
    ...     NaFlexImageConverter(8, 16), batch_size=2, vocabulary=vocab, decoder_length=20)
    >>> batch = next(iter(batches))
    >>> sorted(batch)[:3], tuple(batch["patches"].shape), tuple(batch["token_ids"].shape)
    (['decoder_causal', 'decoder_input_ids', 'decoder_loss_mask'], (2, 16, 192), (2, 16))
    """
    if vocabulary is not None and decoder_length is None:
        raise ValueError("Give `decoder_length` (the LocCa sequence length) with `vocabulary`.")

    def fn(index, example):
        example_seed = tf.stack([tf.cast(seed, tf.int32), tf.cast(index, tf.int32)])
        token_ids = tokenizer(example["caption"])
        batch = {"token_ids": token_ids, **converted_image(image_converter, example["image"])}
        if vocabulary is not None:
            locca = sample_locca_example(
                token_ids, example["boxes"], tokenizer(example["referring_expressions"]),
                example_seed, vocabulary, decoder_length, all_tasks=all_locca_tasks,
                task_weights=locca_task_weights, causal_probability=locca_causal_probability,
            )
            batch.update({k: locca[k] for k in DECODER_KEYS})
        if local_views is not None:
            batch["local_views"] = local_views(example["image"], seed=example_seed + 1)
        return batch

    return (
        examples.enumerate(start)
        .map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size, drop_remainder=True)
    )


def referring_batches(examples, tokenizer, image_converter, batch_size):
    """One evaluation example per object: the image, `prompt_ids` (its referring expression
    through `tokenizer`) and `box`, for `keras_siglip2.evaluation.referring_box_iou`.

    Example:
    >>> from keras_siglip2.datasets import scenes
    >>> from keras_siglip2.preprocessing import NaFlexImageConverter
    >>> batches = referring_batches(scenes.load("test", 2, num_objects=(2, 2)),
    ...     scenes.tokenizer(sequence_length=16), NaFlexImageConverter(8, 16), batch_size=8)
    >>> batch = next(iter(batches))
    >>> tuple(batch["prompt_ids"].shape), tuple(batch["box"].shape)
    ((4, 16), (4, 4))
    """

    def per_object(example):
        image = converted_image(image_converter, example["image"])
        count = tf.shape(example["boxes"])[0]
        repeat = lambda x: tf.repeat(x[None], count, axis=0)  # noqa: E731
        return tf.data.Dataset.from_tensor_slices({
            **{k: repeat(v) for k, v in image.items()},
            "prompt_ids": tokenizer(example["referring_expressions"]),
            "box": example["boxes"],
        })

    return examples.flat_map(per_object).batch(batch_size)


def dense_batches(examples, image_converter, batch_size, patch_size=None, ignore_index=-1):
    """Images with `patch_labels` (N,): each patch token's majority `segmentation` label
    (`keras_siglip2.evaluation.patch_labels`), `ignore_index` on padding patches, for
    `keras_siglip2.evaluation.dense_probe_miou`. A fixed-resolution converter needs the
    tower's `patch_size`; a NaFlex converter's output gives the grid.

    Example:
    >>> from keras_siglip2.datasets import scenes
    >>> from keras_siglip2.preprocessing import NaFlexImageConverter
    >>> batch = next(iter(dense_batches(scenes.load("test", 2), NaFlexImageConverter(8, 16), 2)))
    >>> tuple(batch["patch_labels"].shape), int(batch["patch_labels"].numpy().max()) > 0
    ((2, 16), True)
    """
    if patch_size is None and not isinstance(image_converter, NaFlexImageConverter):
        raise ValueError("Give the image tower's `patch_size` with a fixed-resolution converter.")

    def fn(example):
        image = converted_image(image_converter, example["image"])
        if "spatial_shapes" in image:
            grid, length = image["spatial_shapes"], tf.shape(image["patches"])[0]
        else:
            grid = tf.shape(image["images"])[:2] // patch_size
            length = grid[0] * grid[1]
        labels = tf.numpy_function(
            lambda s, g: patch_labels(s, g, ignore_index).reshape(-1),
            [example["segmentation"], grid], tf.int32,
        )
        labels = tf.pad(labels, [[0, length - tf.size(labels)]], constant_values=ignore_index)
        return {**image, "patch_labels": tf.ensure_shape(labels, [None])}

    return examples.map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
