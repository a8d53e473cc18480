"""Fixed-resolution converter (big_vision `resize|value_range`) and image loading."""

import io

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

import keras
import keras_hub

from keras_siglip2.preprocessing import NaFlexImageConverter, SigLIP2ImageConverter, load_image


def bv_fixed(image, size):
    """big_vision `resize(size)|value_range(-1, 1)`: resize, clip, cast back, rescale."""
    x = tf.image.resize(image, (size, size), method="bilinear", antialias=False).numpy()
    if image.dtype == np.uint8:
        x = np.floor(np.clip(x, 0, 255))  # tf.cast(float -> uint8) truncates
    return -1.0 + x.astype(np.float32) / 255.0 * 2.0


@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 1), (7, 13), (64, 48), (33, 33)])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_pixels_match_big_vision(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, (*shape, 3)).astype(dtype)
    if dtype == "float32":
        image += rng.uniform(0, 0.99, image.shape).astype(dtype)
    out = SigLIP2ImageConverter(16)(image)
    assert out.shape == (16, 16, 3) and out.dtype == np.float32 and isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, bv_fixed(image, 16), atol=1e-6)
    assert -1.0 <= out.min() and out.max() <= 1.0 + 1e-6


def test_uint8_resize_truncates_like_big_vision():
    # Bilinear from [0, 255] (1x2) to 4 columns gives 0, 63.75, 191.25, 255: big_vision casts
    # back to uint8 (truncating) before value_range; a float image keeps the fractions.
    image = np.array([[[0] * 3, [255] * 3]], "uint8")
    row = SigLIP2ImageConverter(4)(image)[0, :, 0]
    np.testing.assert_allclose(row, np.array([0, 63, 191, 255]) / 127.5 - 1, atol=1e-7)
    row = SigLIP2ImageConverter(4)(image.astype("float32"))[0, :, 0]
    np.testing.assert_allclose(row, np.array([0, 63.75, 191.25, 255]) / 127.5 - 1, atol=1e-6)


def test_batches_and_tf_data():
    rng = np.random.default_rng(1)
    shapes = [(5, 7, 3), (40, 3, 3), (9, 9, 1), (6, 2, 4)]
    images = [rng.integers(0, 256, s).astype("uint8") for s in shapes]
    conv = SigLIP2ImageConverter(8)
    batch = conv(images)
    assert batch.shape == (4, 8, 8, 3)
    for i, image in enumerate(images):
        np.testing.assert_array_equal(batch[i], conv(image))
    np.testing.assert_array_equal(conv(np.stack([images[0]] * 2))[1], batch[0])

    def gen():
        for image in images:
            yield load_image(image)

    ds = tf.data.Dataset.from_generator(
        gen, output_signature=tf.TensorSpec((None, None, 3), tf.uint8)).map(conv).batch(2)
    assert ds.element_spec.shape.as_list() == [None, 8, 8, 3]
    assert ds.element_spec.dtype == tf.float32
    np.testing.assert_array_equal(np.concatenate(list(ds.as_numpy_iterator())), batch)
    # Grey and RGBA tensors are converted in the graph as `load_image` does eagerly.
    for image in images[2:]:
        graph = next(iter(tf.data.Dataset.from_tensors(image).map(conv))).numpy()
        np.testing.assert_array_equal(graph, conv(image))


def test_config_presets_and_keras_hub():
    conv = SigLIP2ImageConverter(image_size=224, name="fixed")
    assert isinstance(conv, keras_hub.layers.ImageConverter)
    clone = SigLIP2ImageConverter.from_config(conv.get_config())
    assert (clone.image_size, clone.name) == ((224, 224), "fixed")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(conv))
    assert isinstance(restored, SigLIP2ImageConverter) and restored.image_size == (224, 224)
    assert SigLIP2ImageConverter((12, 20))(np.zeros((3, 3), "uint8")).shape == (12, 20, 3)
    assert SigLIP2ImageConverter.from_preset("siglip2_so400m_patch14_384").image_size == (384, 384)
    assert SigLIP2ImageConverter.from_preset("siglip2_base_patch16_224", image_size=256)(
        np.zeros((2, 2), "uint8")).shape == (256, 256, 3)
    with pytest.raises(ValueError, match="NaFlexImageConverter.from_preset"):
        SigLIP2ImageConverter.from_preset("siglip2_base_patch16_naflex")
    with pytest.raises(ValueError, match="neither a preset name"):
        SigLIP2ImageConverter.from_preset("no_such_preset_or_path")
    with pytest.raises(ValueError, match="image_size must be"):
        SigLIP2ImageConverter(0)


# --- load_image: every input kind, with a known pixel value each.


def _pil(mode, size, color):
    return PIL.Image.new(mode, size, color)


@pytest.mark.parametrize(
    "image,expected",
    [
        (_pil("L", (3, 2), 77), [77, 77, 77]),
        (_pil("1", (3, 2), 1), [255, 255, 255]),
        (_pil("RGB", (3, 2), (10, 20, 30)), [10, 20, 30]),
        (_pil("RGBA", (3, 2), (10, 20, 30, 0)), [255, 255, 255]),  # transparent -> white
        (_pil("RGBA", (3, 2), (10, 20, 30, 255)), [10, 20, 30]),
        (_pil("RGBA", (3, 2), (0, 100, 200, 128)), [127, 177, 227]),  # x·a/255 + 255 - a
        (_pil("LA", (3, 2), (0, 0)), [255, 255, 255]),
        (_pil("LA", (3, 2), (50, 255)), [50, 50, 50]),
        (_pil("CMYK", (3, 2), (0, 255, 0, 0)), [255, 0, 255]),
        (_pil("I;16", (3, 2), 32896), [128.0, 128.0, 128.0]),  # 16-bit scaled (x / 257)
        (_pil("I;16", (3, 2), 65535), [255.0, 255.0, 255.0]),
        (_pil("I;16B", (3, 2), 257), [1.0, 1.0, 1.0]),
        (_pil("I", (3, 2), 40000), [40000 / 257] * 3),
        (_pil("F", (3, 2), 12.5), [12.5, 12.5, 12.5]),
        (np.full((2, 3), 9, "uint8"), [9, 9, 9]),
        (np.full((2, 3, 1), 9, "uint8"), [9, 9, 9]),
        (np.full((2, 3, 3), 9.25, "float64"), [9.25, 9.25, 9.25]),
        (np.full((2, 3, 4), [1, 2, 3, 0], "uint8"), [255, 255, 255]),
        (np.full((2, 3, 4), [1, 2, 3, 255], "float32"), [1, 2, 3]),
        (np.full((2, 3, 3), 200, "int64"), [200, 200, 200]),
        (np.full((2, 3), 514, "uint16"), [2.0, 2.0, 2.0]),
        (np.ones((2, 3), bool), [255, 255, 255]),
        (tf.fill((2, 3, 3), tf.constant(5, tf.uint8)), [5, 5, 5]),
    ],
)
def test_load_image_values(image, expected):
    x = load_image(image)
    assert x.shape == (2, 3, 3) and x.dtype in (np.uint8, np.float32)
    np.testing.assert_allclose(x, np.broadcast_to(np.array(expected, x.dtype), x.shape), atol=1e-4)


def test_load_image_palette_and_path(tmp_path):
    palette = PIL.Image.new("P", (4, 2), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    np.testing.assert_array_equal(load_image(palette)[0, 0], [200, 10, 10])
    palette.info["transparency"] = 1
    np.testing.assert_array_equal(load_image(palette)[0, 0], [255, 255, 255])
    # Files and bytes are decoded with PIL and turned upright by their EXIF orientation.
    rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 3)).astype("uint8")
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    PIL.Image.fromarray(rgb).save(tmp_path / "a.png", exif=exif)
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), np.rot90(rgb, -1))
    np.testing.assert_array_equal(load_image(str(tmp_path / "a.png")), np.rot90(rgb, -1))
    buffer = io.BytesIO()
    PIL.Image.fromarray(rgb).save(buffer, format="PNG")
    np.testing.assert_array_equal(load_image(buffer.getvalue()), rgb)
    # Converters take any of these, single or in a list.
    conv = SigLIP2ImageConverter(4)
    assert conv([tmp_path / "a.png", palette, rgb]).shape == (3, 4, 4, 3)
    np.testing.assert_allclose(conv(palette), 1.0)  # fully transparent -> white -> 1


@pytest.mark.parametrize("shape", [(1, 1), (1, 2000), (2000, 1)])
def test_tiny_and_elongated_images(shape):
    image = np.full((*shape, 3), 255, "uint8")
    np.testing.assert_allclose(SigLIP2ImageConverter(8)(image), 1.0)
    out = NaFlexImageConverter(4, 16)(image)
    rows, cols = out["spatial_shapes"]
    assert rows * cols == out["patch_mask"].sum() <= 16 and min(rows, cols) >= 1
    np.testing.assert_allclose(out["patches"][: rows * cols], 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "image,message",
    [
        (np.zeros((0, 5, 3), "uint8"), "zero size"),
        (np.zeros((4, 0), "uint8"), "zero size"),
        (np.zeros((4, 5, 2), "uint8"), "2 channels .*1 \\(grey\\), 3 \\(RGB\\) or 4"),
        (np.zeros((3, 32, 32), "uint8"), "channels-first: transpose"),
        (np.zeros((5,), "uint8"), "shape \\(H, W\\) or \\(H, W, C\\), got shape \\(5,\\)"),
        (np.zeros((1, 2, 2, 2, 3), "uint8"), "got shape \\(1, 2, 2, 2, 3\\)"),
        (np.full((2, 2, 3), np.nan, "float32"), "NaN or infinite"),
        (np.full((2, 2, 3), np.inf), "NaN or infinite"),
        (np.full((2, 2, 3), 300, "int32"), "values in \\[300, 300\\]; expected \\[0, 255\\]"),
        (np.full((2, 2), -1, "int8"), "expected \\[0, 255\\]"),
        (np.full((2, 2, 3), "a"), "Unsupported image dtype"),
        (PIL.Image.new("LAB", (2, 2)), "Unsupported PIL image mode 'LAB'.*convert"),
        (PIL.Image.fromarray(np.full((2, 2), 70000, "int32")), "mode I is read as 16-bit"),
        ("/no/such/file.png", "No image file at '/no/such/file.png'"),
        (b"not an image", "Could not decode an image from the given bytes"),
        (object(), "Cannot read an image from a object"),
    ],
)
def test_bad_inputs_raise_helpful_errors(image, message):
    with pytest.raises(ValueError, match=message):
        load_image(image)


def test_converters_reject_bad_inputs():
    with pytest.raises(ValueError, match="empty list"):
        SigLIP2ImageConverter(8)([])
    with pytest.raises(ValueError, match="zero size"):
        NaFlexImageConverter(4, 8)([np.zeros((3, 3), "uint8"), np.zeros((0, 3), "uint8")])
    with pytest.raises(ValueError, match="NaN"):
        NaFlexImageConverter(4, 8)(np.full((3, 3), np.nan))
