"""Multi-resolution NaFlex batches: several sequence lengths, one static shape per batch."""

from keras_siglip2.preprocessing.naflex import NaFlexImageConverter


def naflex_multi_length_batches(
    dataset, patch_size, sequence_lengths, batch_size, image_key="image", seed=0
):
    """Batches `dataset` at several NaFlex sequence lengths, as SigLIP 2 trains.

    Each example is assigned to one length (round-robin over its position,
    so every image is seen once per epoch), converted with a
    `NaFlexImageConverter` of that `max_num_patches`, and batched with
    `drop_remainder`; batches of the different lengths are interleaved in a
    seeded random order. Every batch therefore has one static shape, and a
    compiled train step is traced once per length.

    `dataset` yields dicts whose `image_key` holds a uint8 (H, W, 3) image;
    the image is replaced by the NaFlex keys, other keys pass through.

    Example:
    >>> import tensorflow as tf
    >>> images = tf.data.Dataset.from_tensor_slices(
    ...     {"image": tf.zeros((8, 24, 40, 3), tf.uint8)})
    >>> batches = naflex_multi_length_batches(images, 8, [4, 16], batch_size=2)
    >>> sorted({int(b["patches"].shape[1]) for b in batches})
    [4, 16]
    """
    import tensorflow as tf

    lengths = list(sequence_lengths)

    def convert(converter):
        def fn(example):
            example = dict(example)
            image = example.pop(image_key)  # before unpacking: the image must not pass through
            return {**example, **converter(image)}

        return fn

    per_length = [
        dataset.shard(len(lengths), i)
        .map(convert(NaFlexImageConverter(patch_size, n)), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
        for i, n in enumerate(lengths)
    ]
    choice = tf.data.Dataset.random(seed).map(lambda r: tf.cast(r % len(lengths), tf.int64))
    return tf.data.Dataset.choose_from_datasets(
        per_length, choice, stop_on_empty_dataset=False
    )

