"""NaFlex preprocessing against an independent transcription of big_vision's `ops_naflex.py`."""

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

import keras

from conftest import TINY_NAFLEX
from keras_siglip2 import SigLIP2NaFlexVisionEncoder
from keras_siglip2.preprocessing import NaFlexImageConverter, naflex_target_size
from keras_siglip2.preprocessing.naflex import _tf_target_size

KEYS = {"patches", "patch_coords", "patch_mask", "spatial_shapes"}
PRIMES = [2, 3, 5, 7, 13, 31, 97, 127, 251, 509, 1021, 2039, 7919]
SIZES = [(1, 1), (1, 1000), (1000, 1), (7, 13), (224, 224), (4000, 3000), (3000, 4000),
         (480, 640), (1, 2), (17, 4093), (3, 15), (6, 15), (9, 333), (17, 51), (30, 3)]
SIZES += [(p, q) for p in PRIMES[::2] for q in PRIMES[1::2]]
CONFIGS = [(16, 256), (14, 1024), (16, 128), (16, 1024), (4, 16), (32, 1), (8, 7)]


# Transcription of big_vision's resize_to_sequence / patchify / pad_to_shape, run eagerly as
# the SigLIP 2 demo runs it (in a tf.function grappler turns x / P into x * (1 / P), which
# changes the float32 rounding on rare sizes). The search runs on many sizes at once: tf.cond
# becomes tf.where on the still-active entries, with the same elementwise float32 ops.
def bv_target_sizes(sizes, patch_size, max_sequence_len, eps=1e-5):
    image_hw = tf.constant(sizes, tf.int32)

    def prepare_target_hw(ratio):
        target_hw = tf.cast(image_hw, tf.float32) * ratio[:, None]
        target_hw = patch_size * tf.math.ceil(target_hw / patch_size)
        target_hw = tf.maximum(target_hw, patch_size)
        return tf.cast(target_hw, tf.int32)

    def is_feasible(ratio):
        num_patches = prepare_target_hw(ratio) / patch_size
        return tf.math.reduce_prod(num_patches, axis=-1) <= max_sequence_len

    lb = tf.fill([len(sizes)], tf.constant(eps / 10.0))
    rb = tf.fill([len(sizes)], tf.constant(100.0))
    while True:
        active = (rb - lb) >= eps
        if not tf.reduce_any(active):
            break
        mid = (lb + rb) / 2
        feasible = is_feasible(mid)
        lb = tf.where(active & feasible, mid, lb)
        rb = tf.where(active & ~feasible, mid, rb)
    assert bool(tf.reduce_all(lb > eps)) and bool(tf.reduce_all(lb < 100.0))
    return [tuple(int(v) for v in hw) for hw in prepare_target_hw(lb).numpy()]


def bv_naflex(image, patch_size, max_num_patches):
    x = tf.cast(image, tf.float32)
    x = -1.0 + (x - 0.0) / (255.0 - 0.0) * 2.0  # value_range(-1, 1)
    hw = bv_target_sizes([image.shape[:2]], patch_size, max_num_patches)[0]
    x = tf.image.resize(x, hw, preserve_aspect_ratio=False, antialias=True)
    p = tf.image.extract_patches(x[None], sizes=[1, patch_size, patch_size, 1],
                                 strides=[1, patch_size, patch_size, 1], rates=[1, 1, 1, 1],
                                 padding="VALID")[0]
    nh, nw, d = p.shape
    gy, gx = np.meshgrid(np.arange(nh), np.arange(nw), indexing="ij")
    pad = max_num_patches - nh * nw
    return {
        "patches": np.pad(np.reshape(p, (nh * nw, d)), [(0, pad), (0, 0)]),
        "yidx": np.pad(gy.ravel(), (0, pad)),
        "xidx": np.pad(gx.ravel(), (0, pad)),
        "type": np.pad(np.ones(nh * nw, "int32"), (0, pad)),
        "hw": (nh, nw),
    }


@pytest.mark.parametrize("patch_size,max_num_patches", CONFIGS)
def test_target_size_matches_big_vision_search(patch_size, max_num_patches):
    rng = np.random.default_rng(patch_size * max_num_patches)
    sizes = SIZES + [tuple(s) for s in rng.integers(1, 3000, (200, 2)).tolist()]
    expected = bv_target_sizes(sizes, patch_size, max_num_patches)
    for (h, w), bv in zip(sizes, expected):
        ours = naflex_target_size(h, w, patch_size, max_num_patches)
        assert ours == bv, (h, w)
        rows, cols = ours[0] // patch_size, ours[1] // patch_size
        assert ours == (rows * patch_size, cols * patch_size)
        assert rows >= 1 and cols >= 1 and rows * cols <= max_num_patches, (h, w, ours)


def test_target_size_in_tf_data_equals_eager():
    # Sizes where a float32 search done with x * (1 / P) (grappler) or in float64
    # (transformers) ends elsewhere: the graph path must still give big_vision's eager result.
    cases = [(3, 15, 14, 1024), (6, 15, 16, 1024), (17, 51, 16, 1024), (9, 333, 16, 1024),
             (480, 640, 16, 256), (1, 1, 16, 256), (4000, 3000, 16, 128)]
    for h, w, p, n in cases:
        ds = tf.data.Dataset.from_tensors(tf.constant([h, w])).map(
            lambda hw, p=p, n=n: _tf_target_size(hw, p, n))
        graph = tuple(int(v) for v in next(iter(ds)).numpy())
        assert graph == naflex_target_size(h, w, p, n) == bv_target_sizes([(h, w)], p, n)[0]
    assert naflex_target_size(3, 15, 14, 1024) == (196, 994)  # 14 x 71 patches


def test_target_size_properties():
    # Fills the budget for a common photo, keeps aspect ratio, and is symmetric.
    assert naflex_target_size(480, 640, 16, 256) == (224, 288)  # 14 x 18 = 252 patches
    assert naflex_target_size(640, 480, 16, 256) == (288, 224)
    assert naflex_target_size(256, 256, 16, 256) == (256, 256)
    assert naflex_target_size(1, 1000, 16, 256) == (16, 4096)  # one row of 256 patches
    # A 1x1 image: the search tops out at scale 100 -> 7x7 patches, not the full budget.
    assert naflex_target_size(1, 1, 16, 256) == (112, 112)
    with pytest.raises(ValueError, match="max_num_patches >= 1"):
        naflex_target_size(10, 10, 16, 0)
    with pytest.raises(ValueError, match="height, width"):
        naflex_target_size(0, 10, 16, 256)


@pytest.mark.parametrize("shape", [(1, 1), (1, 200), (200, 1), (7, 13), (37, 29), (64, 48)])
@pytest.mark.parametrize("patch_size,max_num_patches", [(4, 16), (8, 32), (16, 8)])
def test_pixels_match_big_vision(shape, patch_size, max_num_patches):
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3)).astype("uint8")
    ref = bv_naflex(image, patch_size, max_num_patches)
    out = NaFlexImageConverter(patch_size, max_num_patches)(image)
    assert set(out) == KEYS
    n = int(np.prod(ref["hw"]))
    np.testing.assert_allclose(out["patches"], ref["patches"], atol=1e-6)
    assert np.abs(out["patches"][:n]).max() <= 1.0 + 1e-6
    np.testing.assert_array_equal(out["patch_coords"], np.stack([ref["yidx"], ref["xidx"]], -1))
    np.testing.assert_array_equal(out["patch_mask"], ref["type"])
    np.testing.assert_array_equal(out["spatial_shapes"], ref["hw"])
    assert out["patches"].shape == (max_num_patches, patch_size**2 * 3)
    assert (out["patches"].dtype, out["patch_coords"].dtype) == (np.float32, np.int32)
    assert (out["patch_mask"].dtype, out["spatial_shapes"].dtype) == (np.int32, np.int32)
    assert not out["patches"][n:].any() and not out["patch_coords"][n:].any()


def test_patch_layout_is_row_major_pp3():
    # A 8x12 image with P=4 must not be resized (2x3 patches = max): patch (r, c) holds
    # image[4r:4r+4, 4c:4c+4, :] flattened in (row, col, channel) order.
    image = np.random.default_rng(1).integers(0, 256, (8, 12, 3)).astype("uint8")
    out = NaFlexImageConverter(4, 6)(image)
    scaled = image.astype("float32") / 127.5 - 1
    for i, (r, c) in enumerate(out["patch_coords"]):
        expected = scaled[4 * r:4 * r + 4, 4 * c:4 * c + 4].reshape(-1)
        np.testing.assert_allclose(out["patches"][i], expected, atol=1e-6)
    np.testing.assert_array_equal(out["patch_coords"][:, 0], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(out["patch_coords"][:, 1], [0, 1, 2, 0, 1, 2])


def test_eager_batches():
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, s).astype("uint8") for s in [(5, 7, 3), (40, 3, 3), (9, 9)]]
    conv = NaFlexImageConverter(4, 16)
    batch = conv(images)
    assert {k: v.shape for k, v in batch.items()} == {
        "patches": (3, 16, 48), "patch_coords": (3, 16, 2), "patch_mask": (3, 16),
        "spatial_shapes": (3, 2)}
    for i, image in enumerate(images):
        for k, v in conv(image).items():
            np.testing.assert_array_equal(batch[k][i], v)
    dense = conv(np.stack([images[0]] * 2))  # a (B, H, W, C) array is a batch too
    np.testing.assert_array_equal(dense["patches"][1], batch["patches"][0])
    assert all(isinstance(v, np.ndarray) for v in batch.values())


def test_tf_data_feeds_the_naflex_encoder():
    shapes = [(5, 7), (40, 3), (1, 1), (3, 40), (16, 16), (9, 23)]
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (*s, 3)).astype("uint8") for s in shapes]
    conv = NaFlexImageConverter(TINY_NAFLEX["patch_size"], 12)
    ds = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec((None, None, 3), tf.uint8))
    ds = ds.map(conv).batch(3)
    spec = ds.element_spec
    assert spec["patches"].shape.as_list() == [None, 12, 48]
    assert spec["patch_coords"].shape.as_list() == [None, 12, 2]
    assert spec["patch_mask"].shape.as_list() == [None, 12]
    assert spec["spatial_shapes"].shape.as_list() == [None, 2]
    assert [spec[k].dtype for k in sorted(KEYS)] == [tf.int32, tf.int32, tf.float32, tf.int32]
    batches = list(ds.as_numpy_iterator())
    eager = conv(images)
    for k in KEYS:
        np.testing.assert_array_equal(np.concatenate([b[k] for b in batches]), eager[k])
    keras.utils.set_random_seed(0)
    encoder = SigLIP2NaFlexVisionEncoder(**TINY_NAFLEX)
    for batch in batches:
        out = encoder(batch)
        assert tuple(out["pooled_output"].shape) == (3, TINY_NAFLEX["hidden_dim"])
        assert np.isfinite(keras.ops.convert_to_numpy(out["pooled_output"])).all()


def test_tf_data_batched_and_ragged_inputs():
    rng = np.random.default_rng(4)
    conv = NaFlexImageConverter(4, 16)
    dense = rng.integers(0, 256, (4, 10, 12, 3)).astype("uint8")
    out = next(iter(tf.data.Dataset.from_tensor_slices(dense).batch(4).map(conv)))
    np.testing.assert_array_equal(out["patches"].numpy(), conv(dense)["patches"])
    images = [rng.integers(0, 256, (*s, 3)).astype("uint8") for s in [(5, 7), (9, 3)]]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec((None, None, 3), tf.uint8))
    out = next(iter(ds.ragged_batch(2).map(conv)))
    np.testing.assert_array_equal(out["spatial_shapes"].numpy(), conv(images)["spatial_shapes"])


def test_config_and_presets():
    conv = NaFlexImageConverter(patch_size=4, max_num_patches=16, name="nf")
    clone = NaFlexImageConverter.from_config(conv.get_config())
    assert (clone.patch_size, clone.max_num_patches, clone.name) == (4, 16, "nf")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(conv))
    assert isinstance(restored, NaFlexImageConverter) and restored.max_num_patches == 16
    preset = NaFlexImageConverter.from_preset("siglip2_base_patch16_naflex")
    assert (preset.patch_size, preset.max_num_patches) == (16, 256)
    bigger = NaFlexImageConverter.from_preset("siglip2_base_patch16_naflex", max_num_patches=1024)
    assert bigger.max_num_patches == 1024
    with pytest.raises(ValueError, match="SigLIP2ImageConverter.from_preset"):
        NaFlexImageConverter.from_preset("siglip2_base_patch16_224")
    with pytest.raises(ValueError, match="'nope' is neither a preset name"):
        NaFlexImageConverter.from_preset("nope")
    with pytest.raises(ValueError, match="must be >= 1"):
        NaFlexImageConverter(16, 0)


def test_input_rules_are_the_loaders(tmp_path):
    # NaFlex reads images with the same rules as SigLIP2ImageConverter (image_io); the full
    # set is tested in test_image_converter.py. One of each kind here.
    conv = NaFlexImageConverter(4, 16)
    with pytest.raises(ValueError, match="Float image has values in \\[0, 256\\]"):
        conv(np.linspace(0, 256, 27).reshape(3, 3, 3))
    with pytest.raises(ValueError, match="PIL mode 'F'"):
        conv(PIL.Image.new("F", (5, 5), 0.5))
    uint16 = conv(np.full((5, 5, 3), 65535, "uint16"))["patches"]
    np.testing.assert_allclose(uint16[: int(conv(np.zeros((5, 5, 3), "uint8"))["patch_mask"]
                                            .sum())], 1.0, atol=1e-6)
    path = tmp_path / "short.png"
    image = PIL.Image.new("RGB", (40, 30), (9, 9, 9))
    image.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="Image 1 of 2: Could not decode an image from the file"):
        conv([np.zeros((5, 5), "uint8"), path])
    image_nan = tf.data.Dataset.from_tensors(tf.fill((5, 5, 3), float("nan"))).map(conv)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Float image must be finite"):
        next(iter(image_nan))
