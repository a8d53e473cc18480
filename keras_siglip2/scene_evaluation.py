"""Evaluation batches of the embedded `scenes` dataset and its zero-shot classifiers.

Shared by `main_job.evaluate` (the test split after training), the per-epoch
`keras_siglip2.callbacks.ValidationEvaluation` and the prediction gallery
(`keras_siglip2.gallery`), so that all three measure the same thing.
"""

import tensorflow as tf

from keras_siglip2 import evaluation
from keras_siglip2.datasets import scenes
from keras_siglip2.pipelines import converted_image

ATTRIBUTES = ("colour", "shape")


def converted_batches(examples, image_converter, batch_size, **extra):
    """Images through `image_converter`, plus `extra` features computed from each example.

    Example:
    >>> from keras_siglip2.preprocessing import NaFlexImageConverter
    >>> batches = converted_batches(scenes.load("test", 3), NaFlexImageConverter(8, 16), 2,
    ...                             count=lambda ex: tf.shape(ex["boxes"])[0])
    >>> [tuple(b["patches"].shape) for b in batches], sorted(next(iter(batches)))[0]
    ([(2, 16, 192), (1, 16, 192)], 'count')
    """

    def fn(example):
        image = converted_image(image_converter, example["image"])
        return {**image, **{k: f(example) for k, f in extra.items()}}

    return examples.map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)


def attribute_batches(split, num_examples, image_converter, batch_size, seed=0):
    """Single-object scenes of `split`: the image inputs and the object's `colour`, `shape`
    (class indices into `scenes.class_names`) and `held_out` (its pair is held out of train).

    Example:
    >>> from keras_siglip2.preprocessing import NaFlexImageConverter
    >>> batch = next(iter(attribute_batches("validation", 2, NaFlexImageConverter(8, 16), 2)))
    >>> sorted(k for k in batch if "patch" not in k and k != "spatial_shapes")
    ['colour', 'held_out', 'shape']
    """
    labels = {a: lambda ex, a=a: ex[a][0] for a in (*ATTRIBUTES, "held_out")}
    examples = scenes.load(split, num_examples, seed=seed, language="en", num_objects=(1, 1))
    return converted_batches(examples, image_converter, batch_size, **labels)


def caption_batches(examples, tokenizer, image_converter, batch_size):
    """`examples` with their caption's `token_ids`, for `evaluation.retrieval_recall`.

    Example:
    >>> from keras_siglip2.preprocessing import NaFlexImageConverter
    >>> batch = next(iter(caption_batches(scenes.load("test", 2, language="en"),
    ...     scenes.tokenizer(sequence_length=16), NaFlexImageConverter(8, 16), 2)))
    >>> tuple(batch["token_ids"].shape)
    (2, 16)
    """
    return converted_batches(examples, image_converter, batch_size,
                             token_ids=lambda ex: tokenizer(ex["caption"]))


def attribute_classifiers(backbone, tokenizer, language="en"):
    """`{attribute: (C, E) class embeddings}` for colour and shape: `scenes.class_names`
    ensembled over `scenes.prompt_templates` (`evaluation.zero_shot_classifier`)."""
    return {
        attribute: evaluation.zero_shot_classifier(
            backbone, tokenizer, scenes.class_names(attribute, language),
            scenes.prompt_templates(language, attribute),
        )
        for attribute in ATTRIBUTES
    }
