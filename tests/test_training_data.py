"""Training inputs built in tf.data: SILC local views, multi-length NaFlex batches."""

import numpy as np
import tensorflow as tf

from keras_siglip2.preprocessing import (
    LocalViews,
    NaFlexImageConverter,
    SigLIP2ImageConverter,
    naflex_multi_length_batches,
)


def _image(h=48, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype("uint8")


def test_local_views_are_crops_within_the_area_range_and_reproducible():
    image = _image()
    views = LocalViews(NaFlexImageConverter(4, 32), num_views=8, scale=(0.05, 0.4))
    crops = views.crops(tf.constant(image), seed=tf.constant([3, 4]))
    areas = np.array([c.shape[0] * c.shape[1] for c in crops]) / (48 * 80)
    assert np.all(areas >= 0.04) and np.all(areas <= 0.41), areas
    # A crop is a window of the image.
    crop = crops[0].numpy()
    windows = np.lib.stride_tricks.sliding_window_view(image, crop.shape)
    assert np.any(np.all(windows == crop, axis=(-3, -2, -1)))
    out = views(tf.constant(image), seed=tf.constant([3, 4]))
    assert out["patches"].shape == (8, 32, 48)
    again = views(tf.constant(image), seed=tf.constant([3, 4]))
    np.testing.assert_array_equal(out["patches"].numpy(), again["patches"].numpy())
    other = views(tf.constant(image), seed=tf.constant([3, 5]))
    assert not np.array_equal(out["patches"].numpy(), other["patches"].numpy())


def test_local_views_in_a_pipeline_have_static_shapes():
    views = LocalViews(SigLIP2ImageConverter(16), num_views=2)
    images = tf.data.Dataset.from_generator(
        lambda: (_image(20 + 7 * i, 30 + 3 * i, i) for i in range(4)),
        output_signature=tf.TensorSpec((None, None, 3), tf.uint8),
    )
    batches = images.enumerate().map(
        lambda i, im: views(im, seed=tf.stack([tf.constant(0, tf.int64), i]))
    ).batch(2)
    shapes = [tuple(b.shape) for b in batches]
    assert shapes == [(2, 2, 16, 16, 3)] * 2
    assert batches.element_spec.shape.as_list() == [None, 2, 16, 16, 3]


def test_multi_length_batches_have_one_shape_each_and_see_every_image_once():
    n, lengths = 24, [4, 8, 16]
    ds = tf.data.Dataset.from_tensor_slices({
        "image": np.stack([_image(24, 40, i) for i in range(n)]),
        "index": np.arange(n),
    })
    batches = list(naflex_multi_length_batches(ds, 8, lengths, batch_size=4, seed=1))
    seen = sorted(int(i) for b in batches for i in b["index"])
    assert seen == list(range(n))
    by_length = {}
    for b in batches:
        length = b["patches"].shape[1]
        assert b["patch_mask"].shape == (4, length) and length in lengths
        assert "image" not in b  # replaced by the NaFlex keys
        assert int(tf.reduce_max(tf.reduce_sum(b["patch_mask"], -1))) <= length
        by_length[length] = by_length.get(length, 0) + 1
    assert by_length == {4: 2, 8: 2, 16: 2}
    order = [b["patches"].shape[1] for b in batches]
    again = [b["patches"].shape[1]
             for b in naflex_multi_length_batches(ds, 8, lengths, batch_size=4, seed=1)]
    assert order == again
