"""Fixed-resolution converter (big_vision `resize|value_range`) and image loading."""

import io
import math
import struct
import warnings
import zlib

import numpy as np
import PIL.features
import PIL.Image
import PIL.ImageFile
import pytest
import tensorflow as tf

import keras
import keras_hub

from keras_siglip2.preprocessing import NaFlexImageConverter, SigLIP2ImageConverter, load_image
from keras_siglip2.preprocessing import image_io


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
    if dtype == "float32":  # fractional values, within the documented [0, 255]
        image = np.minimum(image + rng.uniform(0, 0.99, image.shape).astype(dtype), 255)
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
        (_pil("I;16L", (3, 2), 514), [2.0, 2.0, 2.0]),
        (_pil("I;16N", (3, 2), 514), [2.0, 2.0, 2.0]),
        (_pil("HSV", (3, 2), (0, 255, 255)), [255, 0, 0]),
        (_pil("YCbCr", (3, 2), (128, 128, 128)), [128, 128, 128]),
        (_pil("RGBX", (3, 2), (1, 2, 3, 4)), [1, 2, 3]),
        (_pil("PA", (3, 2), (0, 0)), [255, 255, 255]),
        (_pil("RGBa", (3, 2), (0, 0, 0, 0)), [255, 255, 255]),
        (np.full((2, 3, 3), 255.0, "float16"), [255, 255, 255]),
        (np.full((2, 3, 3), 0.0, "float64"), [0, 0, 0]),
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
        (PIL.Image.fromarray(np.full((2, 2), 70000, "int32")), "mode 'I' .*no fixed value"),
        (_pil("I", (2, 2), 200), "PIL mode 'I' \\(32-bit signed integer\\) in the PIL image"),
        (_pil("F", (2, 2), 0.5), "PIL mode 'F' \\(32-bit float\\).*float array in \\[0, 255\\]"),
        (np.full((2, 2, 3), 255.5, "float32"), "values in \\[255.5, 255.5\\]; float images must"),
        (np.array([[0.0, -0.5]]), "values in \\[-0.5, 0\\].*\\[-1, 1\\] data: pass \\(x \\+ 1\\)"),
        (np.array([[-3.0, 260.0]], "float16"), "\\[-3, 260\\].*np.clip"),
        (np.full((2, 2), np.nan, "float16"), "NaN or infinite"),
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


# --- The value rules: the same for both converters, eagerly and inside tf.data.

CONVERTERS = [SigLIP2ImageConverter(8), NaFlexImageConverter(4, 8)]


def in_tf_data(converter, image):
    out = next(iter(tf.data.Dataset.from_tensors(image).map(converter)))
    return keras.tree.map_structure(lambda t: t.numpy(), out)


@pytest.mark.parametrize("converter", CONVERTERS, ids=["fixed", "naflex"])
def test_value_rules_are_the_same_eagerly_and_in_tf_data(converter):
    good = [
        np.full((5, 6, 3), 255, "float32"), np.full((5, 6, 3), 200, "int32"),
        np.full((5, 6, 3), 0.5, "float16"), np.full((5, 6, 1), 7, "int64"),
        np.full((5, 6, 1), 7, "uint32"),
        np.linspace(0, 255, 90).reshape(5, 6, 3), np.full((5, 6, 4), [9, 8, 7, 128], "int16"),
        np.full((5, 6, 3), 40000, "uint16"), np.ones((5, 6, 3), bool),
    ]
    for image in good:
        eager, graph = converter(image), in_tf_data(converter, image)
        keras.tree.map_structure(
            lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), eager, graph
        )
    bad = [
        (np.full((5, 6, 3), 256.0, "float32"), "Float image"),
        (np.full((5, 6, 3), -1.0), "Float image"),
        (np.full((5, 6, 3), np.nan, "float32"), "Float image"),
        (np.full((5, 6, 3), np.inf, "float16"), "Float image"),
        (np.full((5, 6, 3), 300, "int32"), "Integer image"),
        (np.full((5, 6, 1), -1, "int8"), "Integer image"),
    ]
    for image, what in bad:
        with pytest.raises(ValueError, match="finite|must lie in|expected \\[0, 255\\]"):
            converter(image)
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=f"{what} must be finite with values in \\[0, 255\\]"):
            in_tf_data(converter, image)


def test_bfloat16_and_tensor_inputs():
    import ml_dtypes

    image = np.full((2, 3, 3), 128, ml_dtypes.bfloat16)
    np.testing.assert_array_equal(load_image(image), np.full((2, 3, 3), 128, "float32"))
    with pytest.raises(ValueError, match="values in \\[300, 300\\]"):
        load_image(np.full((2, 3, 3), 300, ml_dtypes.bfloat16))
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(load_image(torch.full((2, 3, 3), 128.0).bfloat16()), 128.0)


def test_batch_errors_name_the_image():
    images = [np.zeros((2, 2), "uint8"), np.full((2, 2), 999.0)]
    for converter in CONVERTERS:
        with pytest.raises(ValueError, match="Image 1 of 2: Float image has values in \\[999"):
            converter(images)


def test_palette_with_alpha_is_composited():
    quantized = PIL.Image.new("RGBA", (2, 2), (10, 20, 30, 0)).quantize()
    assert quantized.mode == "P" and quantized.palette.mode == "RGBA"
    np.testing.assert_array_equal(load_image(quantized), np.full((2, 2, 3), 255, "uint8"))


def test_16_bit_files_are_rescaled_and_mode_i_or_f_files_rejected(tmp_path):
    x = np.array([[0, 257, 65535]], np.uint16)
    for suffix in ("png", "tiff", "pgm"):  # PIL opens the 16-bit PGM as mode I
        PIL.Image.fromarray(x).save(tmp_path / f"a.{suffix}")
        np.testing.assert_allclose(load_image(tmp_path / f"a.{suffix}")[..., 0], [[0, 1, 255]])
    PIL.Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "b.tiff")
    with pytest.raises(ValueError, match="PIL mode 'I' .* in the file '.*b.tiff' has no fixed"):
        load_image(tmp_path / "b.tiff")
    PIL.Image.new("F", (2, 2), 0.5).save(tmp_path / "c.tiff")
    with pytest.raises(ValueError, match="PIL mode 'F' .* in the file '.*c.tiff'"):
        SigLIP2ImageConverter(8)(tmp_path / "c.tiff")


# --- Files: strict decoding and the pixel limit.


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(image, rows=None, interlace=False, declared=None):
    """An 8-bit RGB PNG of `image` (H, W, 3) written by hand, with only `rows` rows of data
    (non-interlaced) or, interlaced, without its last Adam7 pass when `rows` is set.
    `declared`: the (height, width) its header states, if not the image's."""
    height, width = declared or image.shape[:2]
    if interlace:
        passes = [image[r::dr, c::dc] for r, c, dr, dc in image_io._ADAM7]
        passes = [p for p in passes if p.size][: -1 if rows is not None else None]
        raw = b"".join(b"\0" + row.tobytes() for p in passes for row in p)
    else:
        raw = b"".join(b"\0" + row.tobytes() for row in image[:rows])
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


def test_truncated_png_declaring_13000_square_is_rejected(tmp_path):
    # The header says 13000x13000; the data holds one row. PIL alone decodes it to black.
    path = tmp_path / "one_row.png"
    path.write_bytes(_png(np.full((1, 13000, 3), 128, "uint8"), declared=(13000, 13000)))
    with pytest.raises(ValueError, match="Image too large: the file '.*one_row.png' declares "
                       "13000x13000 = 169,000,000 pixels, over the limit of 89,478,485"):
        load_image(path)
    with pytest.raises(ValueError, match="Truncated PNG: the image data in the file "
                       "'.*one_row.png' holds 1 of the 13000 rows"):
        load_image(path, max_pixels=math.inf)


@pytest.mark.parametrize("interlace", [False, True])
def test_short_png_data_is_rejected_by_both_converters(tmp_path, interlace):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 23, 3)).astype("uint8")
    image[-1] = 0  # a black last row: the full check runs on the complete file too
    path = tmp_path / "a.png"
    path.write_bytes(_png(image, interlace=interlace))
    np.testing.assert_array_equal(load_image(path), image)
    short = _png(image, rows=20, interlace=interlace)
    path.write_bytes(short)
    for source in (path, str(path), short, PIL.Image.open(path)):
        with pytest.raises(ValueError, match="Truncated PNG"):
            load_image(source)
    for converter in CONVERTERS:
        with pytest.raises(ValueError, match="Truncated PNG: the image data in the file"):
            converter(path)


@pytest.mark.parametrize(
    "mode,options", [("1", {}), ("L", {}), ("P", {"bits": 4}), ("P", {"bits": 2}), ("LA", {}),
                     ("RGB", {}), ("RGBA", {}), ("I;16", {}), ("P", {"transparency": 0})],
)
def test_complete_pngs_of_every_layout_decode_exactly(tmp_path, mode, options):
    # Each image ends in a zero row, so the row count is checked (and must pass).
    rng = np.random.default_rng(1)
    bands = {"LA": 2, "RGB": 3, "RGBA": 4}.get(mode, 1)
    top = 4 if mode == "P" else (2 if mode == "1" else 65536 if mode == "I;16" else 256)
    x = rng.integers(0, top, (9, 13, bands)[: 2 if bands == 1 else 3])
    x[-1] = 0
    dtype = "uint16" if mode == "I;16" else "uint8"
    image = PIL.Image.fromarray(x.astype(dtype)).convert(mode) if mode != "P" else (
        PIL.Image.fromarray(x.astype("uint8"), "L").convert("P"))
    if mode == "1":
        image = PIL.Image.fromarray(x.astype(bool))
    image.save(tmp_path / "a.png", **options)
    decoded_by_pil = PIL.Image.open(tmp_path / "a.png")
    decoded_by_pil.load()
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), load_image(decoded_by_pil))


FORMATS = [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("GIF", {}), ("BMP", {}),
           ("WEBP", {}), ("WEBP", {"lossless": True}), ("TIFF", {}),
           ("TIFF", {"compression": "tiff_deflate"}), ("TIFF", {"compression": "tiff_lzw"}),
           ("PPM", {}), ("TGA", {"compression": "tga_rle"}), ("JPEG2000", {}), ("ICO", {})]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("load_truncated", [False, True])
def test_truncated_files_of_every_format_are_rejected(tmp_path, monkeypatch, load_truncated):
    # Whatever PIL's LOAD_TRUNCATED_IMAGES says: it is off while we decode, then restored.
    monkeypatch.setattr(PIL.ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    image = PIL.Image.fromarray(
        np.random.default_rng(2).integers(0, 256, (48, 64, 3)).astype("uint8"))
    for i, (fmt, options) in enumerate(FORMATS):
        if fmt in ("WEBP", "JPEG2000") and not PIL.features.check(fmt.lower().replace(
                "jpeg2000", "jpg_2000")):
            continue
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        data = buffer.getvalue()
        path = tmp_path / f"{i}.{fmt.lower()}"
        path.write_bytes(data)
        assert load_image(path).shape[-1] == 3
        for cut in (0.5, 0.9):
            path.write_bytes(data[: int(len(data) * cut)])
            with pytest.raises(ValueError, match=f"Could not decode an image from the file "
                               f"'.*{path.name}': .*truncated, corrupt"):
                load_image(path)
            with pytest.raises(ValueError, match="Could not decode an image from the given"):
                load_image(data[: int(len(data) * cut)])
        assert PIL.ImageFile.LOAD_TRUNCATED_IMAGES is load_truncated


def test_pixel_limit_is_checked_from_the_header(tmp_path, monkeypatch):
    assert image_io.MAX_IMAGE_PIXELS == 89_478_485  # PIL's default
    path = tmp_path / "a.png"
    PIL.Image.new("RGB", (100, 50), (1, 2, 3)).save(path)
    assert load_image(path, max_pixels=5000).shape == (50, 100, 3)
    with pytest.raises(ValueError, match="Image too large: the file '.*a.png' declares 100x50 = "
                       "5,000 pixels, over the limit of 4,999 pixels.*max_pixels=N.*"
                       "image_io.MAX_IMAGE_PIXELS = N"):
        load_image(path, max_pixels=4999)
    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 4999)  # reaches the converters
    for converter in CONVERTERS:
        with pytest.raises(ValueError, match="Image too large"):
            converter(str(path))
        with pytest.raises(ValueError, match="Image 1 of 2: Image too large: the given bytes"):
            converter([np.zeros((2, 2), "uint8"), path.read_bytes()])
    with pytest.raises(ValueError, match="Image too large: the PIL image of '.*a.png'"):
        load_image(PIL.Image.open(path))  # opened lazily: checked before it is decoded
    # PIL's own limit never decides, above or below ours, and is left as it was.
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL alone would raise DecompressionBombError
        assert load_image(path).shape == (50, 100, 3)
        monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 1000)
        for size in ((50, 30), (100, 50)):  # PIL's warning, then PIL's error range
            PIL.Image.new("RGB", size).save(path)
            with pytest.raises(ValueError, match=f"Image too large: .* {size[0] * size[1]:,} "
                               "pixels, over the limit of 1,000"):
                load_image(path)
    assert PIL.Image.MAX_IMAGE_PIXELS == 1000


def test_random_bytes_and_lazy_pil_images(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(3).bytes(2000))
    with pytest.raises(ValueError, match="Could not decode an image from the file '.*noise.jpg'"):
        SigLIP2ImageConverter(8)(path)
    buffer = io.BytesIO()
    noise = np.random.default_rng(4).integers(0, 256, (48, 64, 3)).astype("uint8")
    PIL.Image.fromarray(noise).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 4 // 5])
    with pytest.raises(ValueError, match="Could not decode the PIL image of '.*cut.jpg'"):
        load_image(PIL.Image.open(tmp_path / "cut.jpg"))
