"""Fuzz tests (hypothesis) of the image and text pipelines.

Every example must give either a correct output of the documented shape, dtype and range, or
the documented error: a ValueError with a message eagerly, an InvalidArgumentError inside a
graph. Nothing else, and no hang. The examples are derandomized (the same on every run) and
few, so that the file runs in well under a minute on two slow cores.
"""

import functools
import io
import string

import numpy as np
import PIL.features
import PIL.Image
import pytest
import sentencepiece
import tensorflow as tf
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siglip2.preprocessing import NaFlexImageConverter, SigLIP2ImageConverter, load_image
from keras_siglip2.tokenizer import SigLIP2Tokenizer
from spm_model import train_tiny_spm


def fuzz(max_examples):
    return settings(
        max_examples=max_examples, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


SIZE = 8  # fixed-resolution output side
PATCH, MAX_PATCHES = 4, 16
FIXED = SigLIP2ImageConverter(SIZE)
NAFLEX = NaFlexImageConverter(PATCH, MAX_PATCHES)
PIXEL_BUDGET = 1 << 16  # large sizes keep their pixel count modest (4096 x 16 at most)
EPS = 1e-5

ACCEPTED_MODES = ["1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV", "LA", "La", "PA",
                  "RGBA", "RGBa", "I;16", "I;16L", "I;16B", "I;16N"]
REJECTED_MODES = ["I", "F", "LAB"]


def check_fixed(out):
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == (SIZE, SIZE, 3)
    assert np.isfinite(out).all() and out.min() >= -1 - EPS and out.max() <= 1 + EPS


def check_naflex(out):
    assert set(out) == {"patches", "patch_coords", "patch_mask", "spatial_shapes"}
    patches, coords, mask, grid = (out[k] for k in
                                   ("patches", "patch_coords", "patch_mask", "spatial_shapes"))
    assert patches.shape == (MAX_PATCHES, PATCH * PATCH * 3) and patches.dtype == np.float32
    assert coords.shape == (MAX_PATCHES, 2) and coords.dtype == np.int32
    assert mask.shape == (MAX_PATCHES,) and mask.dtype == np.int32
    assert grid.shape == (2,) and grid.dtype == np.int32
    rows, cols = (int(v) for v in grid)
    n = rows * cols
    assert rows >= 1 and cols >= 1 and n <= MAX_PATCHES
    np.testing.assert_array_equal(mask, np.arange(MAX_PATCHES) < n)
    np.testing.assert_array_equal(coords[:n], np.stack(np.divmod(np.arange(n), cols), -1))
    assert not patches[n:].any() and not coords[n:].any()
    assert np.isfinite(patches).all() and np.abs(patches).max() <= 1 + EPS


def check_both(image):
    """Runs both converters on `image`: outputs checked, or the same ValueError from both."""
    try:
        fixed = FIXED(image)
    except ValueError as e:
        assert str(e)
        with pytest.raises(ValueError):
            NAFLEX(image)
        return None
    check_fixed(fixed)
    check_naflex(NAFLEX(image))
    return fixed


@st.composite
def image_sizes(draw):
    """(height, width): 1 to 4096 a side, extreme aspect ratios, modest pixel counts."""
    long_side = draw(st.integers(1, 4096))
    short_side = draw(st.integers(1, max(1, min(4096, PIXEL_BUDGET // long_side))))
    return (long_side, short_side) if draw(st.booleans()) else (short_side, long_side)


def random_pil(mode, size, seed):
    """A `mode` image of `size` (h, w) with random content (and, for P, a random palette)."""
    height, width = size
    rng = np.random.default_rng(seed)
    if mode == "1":
        n = (width + 7) // 8 * height
    else:
        n = len(PIL.Image.new(mode, (1, 1)).tobytes()) * width * height
    image = PIL.Image.frombytes(mode, (width, height), rng.bytes(n))
    if mode == "P":
        image.putpalette(rng.integers(0, 256, 768).astype("uint8").tobytes())
        if rng.random() < 0.5:
            image.info["transparency"] = int(rng.integers(0, 256))
    return image


# --- Image converters.


@fuzz(100)
@given(mode=st.sampled_from(ACCEPTED_MODES + REJECTED_MODES), size=image_sizes(),
       seed=st.integers(0, 2**32 - 1))
@example(mode="RGB", size=(1, 4096), seed=0)
@example(mode="RGB", size=(4096, 1), seed=0)
@example(mode="L", size=(1, 1), seed=0)
@example(mode="I;16", size=(4096, 16), seed=0)
def test_pil_images_of_every_mode_and_size(mode, size, seed):
    event("a side >= 1024" if max(size) >= 1024 else "both sides < 1024")
    image = random_pil(mode, size, seed)
    if mode in REJECTED_MODES:
        for converter in (FIXED, NAFLEX):
            with pytest.raises(ValueError, match=f"PIL (image )?mode '{mode}'"):
                converter(image)
        return
    assert check_both(image) is not None
    rgb = load_image(image)
    assert rgb.shape == (*size, 3) and rgb.dtype in (np.uint8, np.float32)
    assert rgb.min() >= 0 and rgb.max() <= 255


@fuzz(25)
@given(mode=st.sampled_from(["L", "RGB", "RGBA", "LA", "I;16", "1"]), size=image_sizes(),
       value=st.integers(0, 255))
def test_constant_images_give_the_documented_value(mode, size, value):
    # A constant image stays constant through both resizes: the output is its value in
    # [-1, 1], with alpha composited onto white and 16-bit data rescaled (x / 257).
    colour = {"L": value, "RGB": (value, 0, 255), "RGBA": (value, 0, 255, 128),
              "LA": (value, 128), "I;16": value * 257, "1": value & 1}[mode]
    expected = {"L": [value] * 3, "RGB": [value, 0, 255], "I;16": [value] * 3,
                "1": [255 * (value & 1)] * 3}.get(mode)
    if mode in ("RGBA", "LA"):
        rgb = np.array(colour[:3] if mode == "RGBA" else [colour[0]] * 3, np.float32)
        expected = np.round(rgb * 128 / 255 + 127)
    image = PIL.Image.new(mode, size[::-1], colour)
    want = np.asarray(expected, np.float32) / 127.5 - 1
    np.testing.assert_allclose(FIXED(image), np.broadcast_to(want, (SIZE, SIZE, 3)), atol=1e-5)
    out = NAFLEX(image)
    n = int(out["patch_mask"].sum())
    np.testing.assert_allclose(out["patches"][:n].reshape(n, -1, 3),
                               np.broadcast_to(want, (n, PATCH * PATCH, 3)), atol=1e-5)


FLOAT_DTYPES = st.sampled_from([np.float16, np.float32, np.float64])


@st.composite
def float_images(draw):
    dtype = draw(FLOAT_DTYPES)
    shape = (draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.sampled_from([1, 3, 4])))
    inside = st.floats(0, 255, width=np.finfo(dtype).bits)
    anything = st.floats(width=np.finfo(dtype).bits, allow_nan=True, allow_infinity=True)
    elements = draw(st.sampled_from([inside, anything, st.floats(-2, 300, width=16)]))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@functools.cache
def graph_converter(converter, dtype, channels):
    spec = tf.TensorSpec([None, None, channels], tf.as_dtype(dtype))
    return tf.function(lambda x: converter(x), input_signature=[spec])


@fuzz(60)
@given(image=float_images())
@example(image=np.full((1, 1, 3), 255.0, np.float32))
@example(image=np.full((1, 1, 3), np.nextafter(np.float32(255), np.float32(256))))
@example(image=np.full((2, 2, 1), -0.0))
def test_float_images_inside_and_outside_the_range(image):
    in_range = bool(np.isfinite(image).all() and image.min() >= 0 and image.max() <= 255)
    event("in range" if in_range else "out of range")
    fixed = check_both(image)
    assert (fixed is not None) == in_range, (image.min(), image.max())
    if not in_range:
        with pytest.raises(ValueError, match="NaN or infinite|must lie in \\[0, 255\\]"):
            load_image(image)


@fuzz(20)
@given(image=float_images())
@example(image=np.full((3, 5, 3), 256.0, np.float32))
def test_float_images_in_a_graph_follow_the_same_rule(image):
    in_range = bool(np.isfinite(image).all() and image.min() >= 0 and image.max() <= 255)
    for converter, check in ((FIXED, check_fixed), (NAFLEX, check_naflex)):
        fn = graph_converter(converter, image.dtype, image.shape[-1])
        if in_range:
            graph = tf.nest.map_structure(lambda t: t.numpy(), fn(tf.constant(image)))
            check(graph)
            tf.nest.map_structure(
                lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), graph,
                converter(image))
        else:
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match="Float image must be finite with values in"):
                fn(tf.constant(image))


FILE_FORMATS = {  # format: modes it writes
    "PNG": ["1", "L", "P", "RGB", "RGBA", "LA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["L", "P"],
    "BMP": ["1", "L", "P", "RGB"],
    "TIFF": ["1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "LAB", "YCbCr"],
    "PPM": ["1", "L", "RGB", "I"],
    "TGA": ["L", "P", "RGB", "RGBA"],
    "WEBP": ["RGB", "RGBA"],
}
FILE_FORMATS = {k: v for k, v in FILE_FORMATS.items() if k != "WEBP" or PIL.features.check("webp")}
FORMAT_MODES = [(f, m) for f, modes in FILE_FORMATS.items() for m in modes]


@fuzz(120)
@given(format_mode=st.sampled_from(FORMAT_MODES), size=image_sizes(),
       seed=st.integers(0, 2**32 - 1),
       damage=st.sampled_from(["none", "truncate", "flip"]), where=st.floats(0, 1))
def test_files_intact_truncated_or_corrupted(tmp_path_factory, format_mode, size, seed, damage,
                                             where):
    fmt, mode = format_mode
    image = random_pil(mode, size if max(size) <= 512 else (min(size[0], 64), min(size[1], 64)),
                       seed)
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt)
    except (OSError, ValueError):  # a few mode/size combinations a writer refuses
        return
    data = bytearray(buffer.getvalue())
    if damage == "truncate":
        data = data[: int(len(data) * where)]
    elif damage == "flip":
        i = min(int(len(data) * where), len(data) - 1)
        data[i] ^= 1 + seed % 255
    path = tmp_path_factory.mktemp("fuzz") / f"image.{fmt.lower()}"
    path.write_bytes(bytes(data))
    try:
        rgb = load_image(path)
    except ValueError as e:
        event(f"{damage}: ValueError")
        assert f"image.{fmt.lower()}" in str(e)
        if damage == "none":  # an intact file fails only by the documented mode rules
            assert mode in REJECTED_MODES or (mode == "I" and fmt != "PPM"), str(e)
        return
    event(f"{damage}: decoded")
    assert rgb.ndim == 3 and rgb.shape[-1] == 3 and rgb.shape[0] * rgb.shape[1] >= 1
    assert rgb.dtype in (np.uint8, np.float32) and rgb.min() >= 0 and rgb.max() <= 255
    if damage == "truncate" and len(data) < len(buffer.getvalue()):
        # A file cut short decodes only if the cut spared every pixel (e.g. a trailer).
        np.testing.assert_array_equal(rgb, load_image(buffer.getvalue()))
    check_both(path)


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
         b"P6\n", b"P5\n7 7\n255\n", b"\x00\x00\x01\x00", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
         b"qoif", b"\x00\x00\x00\x0cjP  \r\n\x87\n"]


@fuzz(150)
@given(magic=st.sampled_from(MAGIC), body=st.binary(max_size=600))
def test_random_bytes_as_files(tmp_path_factory, magic, body):
    path = tmp_path_factory.mktemp("bytes") / "random.img"
    path.write_bytes(magic + body)
    for source in (path, magic + body):
        try:
            rgb = load_image(source, max_pixels=1 << 20)
        except ValueError as e:
            event("ValueError")
            assert "random.img" in str(e) or "the given bytes" in str(e)
            continue
        event("decoded")
        assert rgb.ndim == 3 and rgb.shape[-1] == 3 and rgb.min() >= 0 and rgb.max() <= 255


# --- Tokenizer.

L = 12


@pytest.fixture(scope="module")
def spm_proto(tmp_path_factory):
    return train_tiny_spm(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="module")
def tokenizers(spm_proto):
    tokenizer = SigLIP2Tokenizer(spm_proto, sequence_length=L)
    graph = tf.function(lambda x: tokenizer(x), input_signature=[tf.TensorSpec([None], tf.string)])
    return tokenizer, graph, sentencepiece.SentencePieceProcessor(model_file=spm_proto)


def check_ids(ids, n, vocabulary_size):
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int32 and ids.shape == (n, L)
    assert ((ids >= 0) & (ids < vocabulary_size)).all()
    for row in ids:
        eos = np.flatnonzero(row == 1)
        assert len(eos) == 1 and not row[eos[0] + 1:].any()  # one EOS, then padding


def reference(sp, texts):
    rows = []
    for text in texts:
        tokens = sp.encode(text.translate(str.maketrans(string.ascii_uppercase,
                                                         string.ascii_lowercase)))
        tokens = tokens[: L - 1] + [sp.eos_id()]
        rows.append(tokens + [0] * (L - len(tokens)))
    return np.array(rows, np.int32).reshape(len(texts), L)


@fuzz(80)
@given(texts=st.lists(st.text(), max_size=4))
@example(texts=["\x00", "\ufffd", "\U0010ffff", "A" * 200, " ", "\u0130\u03a3"])
def test_tokenizer_on_arbitrary_unicode(tokenizers, texts):
    tokenizer, graph, sp = tokenizers
    ids = tokenizer(texts)
    check_ids(ids, len(texts), sp.vocab_size())
    np.testing.assert_array_equal(ids, reference(sp, texts))
    np.testing.assert_array_equal(graph(tf.constant(texts, tf.string)).numpy(), ids)


@fuzz(80)
@given(items=st.lists(st.one_of(st.binary(max_size=40), st.text(max_size=20).map(str.encode)),
                      max_size=4))
@example(items=[b"ok", b"caf\xe9"])
@example(items=[b"\xed\xa0\x80"])  # an encoded surrogate
@example(items=[b"\xc0\xaf"])  # an overlong encoding
def test_tokenizer_on_arbitrary_bytes(tokenizers, items):
    tokenizer, graph, sp = tokenizers
    bad = []
    for i, item in enumerate(items):
        try:
            item.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
    event("valid UTF-8" if not bad else "not UTF-8")
    if not bad:
        ids = tokenizer(items)
        check_ids(ids, len(items), sp.vocab_size())
        np.testing.assert_array_equal(ids, reference(sp, [t.decode() for t in items]))
        np.testing.assert_array_equal(graph(tf.constant(items, tf.string)).numpy(), ids)
        return
    with pytest.raises(ValueError, match=f"text {bad[0]} is not valid UTF-8"):
        tokenizer(items)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not valid UTF-8"):
        graph(tf.constant(items, tf.string))

