"""Turning user images (arrays, PIL images, files) into (H, W, 3) RGB numpy arrays.

One set of rules for every input kind. `load_image` applies them; both converters
(`SigLIP2ImageConverter`, `NaFlexImageConverter`) read their eager inputs with it, and check
the same value rules on tensors inside `tf.data` (`tf_to_rgb`).

Values are in [0, 255] units:
- uint8: taken as it is. bool: False -> 0, True -> 255.
- 16-bit data (uint16 arrays and tensors, PIL modes I;16, I;16L, I;16B, I;16N) is rescaled
  explicitly from [0, 65535] to [0, 255] float32 (x / 257), not clipped.
- Other integer dtypes must hold values in [0, 255]; they are taken as uint8.
- Floats (float16/32/64, bfloat16) must be finite and lie in [0, 255]; they come back
  float32. Anything else is a ValueError giving the range found and what to do (clip, or
  rescale). The range is not guessed: a float image in [0, 1] is in range and comes out
  nearly black, so multiply such data by 255 first.
- Channels last: grey (H, W) or (H, W, 1) is repeated to three channels; (H, W, 4) is RGBA.
  Transparency (RGBA/LA arrays or images, PA/La/RGBa images, palette or tRNS transparency) is
  composited onto a white background, as transformers' `convert_to_rgb` does; uint8 stays
  uint8 (rounded).

PIL image modes:
- 1, L, P, RGB, RGBX, CMYK, YCbCr, HSV (8-bit channels): PIL's own conversion to RGB.
- LA, La, PA, RGBA, RGBa: alpha composited onto white, as above.
- I;16, I;16L, I;16B, I;16N: 16-bit, rescaled as above.
- I (32-bit signed integers) and F (32-bit floats) have no fixed value range: a ValueError
  asks you to convert them yourself (to a uint8 array, a uint16 array, or floats in
  [0, 255]). The one exception is a 16-bit grey PNG or PGM/PPM file that PIL decodes to mode
  I (values 0..65535 by those formats' definition): it is read as 16-bit.
- LAB, and any other mode: a ValueError (convert LAB with `PIL.ImageCms`).

Files and encoded bytes are decoded with PIL (the first frame of an animation) and turned
upright by their EXIF orientation; PIL images passed in are used as they are.
- Decoding is complete and strict: a file PIL cannot decode in full, including truncated
  data and a PNG whose compressed data stops before the last row its header declares (PIL
  would fill the rest with black), is a ValueError naming the file. This does not depend on
  `PIL.ImageFile.LOAD_TRUNCATED_IMAGES`: it is turned off while our reader decodes.
  (Not detected: a JPEG whose scan data is cut short but closed again with an end marker;
  libjpeg only warns about it and fills the missing blocks with grey.)
- Pixel limit: an image whose header declares more than `max_pixels` pixels (width x
  height) is a ValueError raised before anything is decoded (a guard against decompression
  bombs; PIL's own DecompressionBombWarning/Error become this error too). The default is
  the module-level `MAX_IMAGE_PIXELS`, PIL's default of 89,478,485 pixels; raise it for
  one call with `load_image(path, max_pixels=...)`, or for every reader, converters
  included, with `keras_siglip2.preprocessing.image_io.MAX_IMAGE_PIXELS = ...` (None: no
  limit).
"""

import io
import os
import struct
import threading
import warnings
import zlib

import numpy as np
import PIL.Image
import PIL.ImageFile
import PIL.ImageOps

#: Most pixels (width x height) a file may declare; None: no limit. PIL's default.
MAX_IMAGE_PIXELS = 89_478_485

_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_RGB_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV")
_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# Formats whose PIL decoders produce mode I only for 16-bit grey data (0..65535).
_16BIT_MODE_I_FORMATS = ("PNG", "PPM")
# PIL's globals, set aside while a decode needs other values (see `_decode`).
_PIL_GLOBALS_LOCK = threading.Lock()


class _PixelLimitExceeded(Exception):
    """PIL's decompression-bomb check fired; `_decode` re-reads the header for the size."""


def load_image(image, max_pixels=None):
    """Returns `image` as an (H, W, 3) uint8 or float32 RGB numpy array (see module doc).

    `image` is a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (channels last),
    anything with `__array__` or `.numpy()` (tf, torch, jax tensors), a `PIL.Image.Image`, a
    file path or the encoded bytes of an image file. `max_pixels`: the pixel limit for files
    and bytes (default: the module's `MAX_IMAGE_PIXELS`, PIL's 89,478,485; `math.inf`: none).
    Raises ValueError, with a message saying what to do, for anything the rules above reject.

    >>> tuple(load_image(np.zeros((2, 5), "uint8")).shape)
    (2, 5, 3)
    >>> load_image(np.full((1, 1), 1.5))[0, 0]
    array([1.5, 1.5, 1.5], dtype=float32)
    >>> load_image(np.full((1, 1), 300.0))
    Traceback (most recent call last):
    ...
    ValueError: Float image has values in [300, 300]; float images must lie in [0, 255]. ...
    """
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if isinstance(image, (str, os.PathLike, bytes)):
        return _decode(image, limit)
    if isinstance(image, PIL.Image.Image):
        return _pil_to_array(_load_pil(image, limit), "the PIL image", image.format)
    if hasattr(image, "to_tensor"):  # tf.RaggedTensor
        image = image.to_tensor()
    if hasattr(image, "detach"):  # torch
        image = image.detach().cpu()
        if str(image.dtype) == "torch.bfloat16":  # no numpy dtype for it
            image = image.float()
    if hasattr(image, "numpy") and not isinstance(image, np.ndarray):
        image = image.numpy()
    error = ValueError(
        f"Cannot read an image from a {type(image).__name__}: pass a numpy array "
        "(H, W[, C]), a PIL image, a file path or encoded image bytes."
    )
    try:
        image = np.asarray(image)
    except Exception as e:
        raise error from e
    if image.dtype == object:
        raise error
    return _array_to_rgb(image)


def _name(source):
    return "the given bytes" if isinstance(source, bytes) else f"the file {os.fspath(source)!r}"


def _decode(source, limit):
    """Decodes a file or bytes under the module's rules (pixel limit, strict decoding)."""
    if not isinstance(source, bytes) and not os.path.isfile(source):
        raise ValueError(f"No image file at {os.fspath(source)!r}: check the path.")
    pil_limit = PIL.Image.MAX_IMAGE_PIXELS
    if not PIL.ImageFile.LOAD_TRUNCATED_IMAGES and pil_limit is not None and (
        limit is not None and limit <= pil_limit
    ):
        # PIL's own check (a warning above its limit, an error above twice that) can only
        # fire above ours: no global to change, so decodes in other threads run in parallel.
        try:
            return _decode_now(source, limit)
        except _PixelLimitExceeded:
            pass  # Read the header again, below, to name the size in the error.
    with _PIL_GLOBALS_LOCK:
        saved = PIL.Image.MAX_IMAGE_PIXELS, PIL.ImageFile.LOAD_TRUNCATED_IMAGES
        PIL.Image.MAX_IMAGE_PIXELS, PIL.ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        try:
            return _decode_now(source, limit)
        except _PixelLimitExceeded as e:  # PIL's check is off here; kept for safety.
            raise _ImageError(f"Image too large: {_name(source)} trips PIL's "
                              f"decompression-bomb check ({e.__cause__}).") from e
        finally:
            PIL.Image.MAX_IMAGE_PIXELS, PIL.ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _decode_now(source, limit):
    name = _name(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            with _open_source(source) as f:
                image = PIL.Image.open(f)
                _check_pixel_limit(image.size, name, limit)
                image_format = image.format
                image.load()
                if _png_may_be_short(image):
                    with _open_source(source) as g:
                        _check_png_rows(g, name)
                image = PIL.ImageOps.exif_transpose(image)
                return _pil_to_array(image, name, image_format)
    except (PIL.Image.DecompressionBombWarning, PIL.Image.DecompressionBombError) as e:
        raise _PixelLimitExceeded() from e
    except _ImageError:
        raise
    except Exception as e:  # PIL raises many kinds (OSError, SyntaxError, struct.error...).
        raise _ImageError(
            f"Could not decode an image from {name}: {type(e).__name__}: {e}. The file is "
            "truncated, corrupt or not an image format PIL reads."
        ) from e


class _ImageError(ValueError):
    """A ValueError that already names its source (not wrapped again)."""


def _open_source(source):
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def _check_pixel_limit(size, name, limit):
    width, height = size
    if limit is not None and width * height > limit:
        raise _ImageError(
            f"Image too large: {name} declares {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {limit:,} pixels (a guard against decompression bombs; nothing "
            "was decoded). If you trust the file, raise "
            "the limit: `load_image(..., max_pixels=N)`, or for the converters too "
            "`keras_siglip2.preprocessing.image_io.MAX_IMAGE_PIXELS = N` (None: no limit)."
        )


def _load_pil(image, limit):
    """Loads a lazily opened PIL image (`PIL.Image.open`) strictly; others pass through."""
    if not getattr(image, "tile", None):
        return image
    filename = getattr(image, "filename", "")
    name = f"the PIL image of {filename!r}" if filename else "the PIL image"
    _check_pixel_limit(image.size, name, limit)
    try:
        if PIL.ImageFile.LOAD_TRUNCATED_IMAGES:
            with _PIL_GLOBALS_LOCK:
                PIL.ImageFile.LOAD_TRUNCATED_IMAGES = False
                try:
                    image.load()
                finally:
                    PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True
        else:
            image.load()
        if _png_may_be_short(image) and isinstance(filename, str) and os.path.isfile(filename):
            with open(filename, "rb") as f:
                _check_png_rows(f, name)
    except _ImageError:
        raise
    except Exception as e:
        raise _ImageError(
            f"Could not decode {name}: {type(e).__name__}: {e}. The file is truncated or "
            "corrupt."
        ) from e
    return image


# Adam7 passes: (first row, first column, row step, column step).
_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2),
          (1, 0, 2, 1))
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png_may_be_short(image):
    """A decoded PNG that might hold fewer rows than declared (see `_check_png_rows`).

    PIL leaves undecoded rows zero: a non-interlaced PNG whose last row holds any non-zero
    byte was decoded to the end, which spares re-inflating the data of almost every file.
    """
    if image.format != "PNG":
        return False
    if image.info.get("interlace"):
        return True
    width, height = image.size
    return not image.crop((0, height - 1, width, height)).tobytes().strip(b"\x00")


def _check_png_rows(f, name):
    """Raises if the IDAT data inflates to fewer rows than IHDR declares.

    PIL's PNG decoder stops quietly when the zlib stream ends, leaving the remaining rows
    black (a 13000x13000 header with one row of data decodes "fine"): count the bytes.
    """
    def read(n):
        data = f.read(n)
        if len(data) < n:
            raise EOFError("the file ends inside a chunk")
        return data

    read(8)  # signature, checked by PIL
    length, kind = struct.unpack(">I4s", read(8))
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", read(13))
    f.seek(length - 13 + 4, io.SEEK_CUR)
    bits = _PNG_CHANNELS.get(colour, 1) * depth

    def row_bytes(w):
        return (w * bits + 7) // 8

    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for row0, col0, row_step, col_step in passes:
        rows = max(0, (height - row0 + row_step - 1) // row_step)
        cols = max(0, (width - col0 + col_step - 1) // col_step)
        if rows and cols:
            expected += rows * (1 + row_bytes(cols))
    inflate, got, seen_idat = zlib.decompressobj(), 0, False
    while got < expected and not inflate.eof:
        length, kind = struct.unpack(">I4s", read(8))
        if kind != b"IDAT":
            if seen_idat or kind == b"IEND":
                break
            f.seek(length + 4, io.SEEK_CUR)
            continue
        seen_idat = True
        data = read(length)
        f.seek(4, io.SEEK_CUR)  # CRC, checked by PIL
        while data and got < expected and not inflate.eof:
            got += len(inflate.decompress(data, 1 << 20))
            data = inflate.unconsumed_tail
    if got < expected:
        rows = got // (1 + row_bytes(width)) if not interlace else None
        held = f"{rows} of the {height} rows" if rows is not None else (
            f"{got:,} of the {expected:,} bytes"
        )
        raise _ImageError(
            f"Truncated PNG: the image data in {name} holds {held} its {width}x{height} header "
            "declares (PIL would fill the rest with black). Re-download or re-encode the file."
        )


def _pil_to_array(image, name, image_format=None):
    mode = image.mode
    if mode == "I" and image_format in _16BIT_MODE_I_FORMATS:
        mode = "I;16"  # 16-bit grey: PIL uses mode I for it in these formats.
    if mode in _16BIT_MODES:
        grey = np.asarray(image).astype(np.float32) / 257.0
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode in ("I", "F"):
        kind = "32-bit signed integer" if mode == "I" else "32-bit float"
        raise _ImageError(
            f"PIL mode {mode!r} ({kind}) in {name} has no fixed value range, so it is not "
            "guessed. Convert it yourself to 8-bit or 16-bit data, "
            "e.g. `np.asarray(image).astype('uint8')` for values 0..255, `.astype('uint16')` "
            "for 0..65535, or a float array in [0, 255] (`np.asarray(image) * 255` for "
            "[0, 1] data)."
        )
    transparent = "transparency" in image.info or (
        mode == "P" and image.palette is not None and image.palette.mode == "RGBA"
    )
    if mode in _ALPHA_MODES or (mode in _RGB_MODES and transparent):
        x = np.asarray(image.convert("LA" if mode == "La" else image.mode).convert("RGBA"))
        return _array_to_rgb(x)
    if mode in _RGB_MODES:
        return np.asarray(image.convert("RGB"))
    hint = " (for LAB use PIL.ImageCms)" if mode == "LAB" else ""
    supported = ", ".join(_RGB_MODES + _ALPHA_MODES + _16BIT_MODES)
    raise _ImageError(
        f"Unsupported PIL image mode {mode!r} in {name}. Supported modes: {supported}; "
        f"convert it first, e.g. `image.convert('RGB')`{hint}."
    )


def _array_to_rgb(x):
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise ValueError(
            f"Expected one image of shape (H, W) or (H, W, C), got shape {x.shape}. "
            "Pass a batch as a list of images or a (B, H, W, C) array to a converter."
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"Image has zero size (shape {x.shape}): it needs at least 1x1 pixels.")
    if x.shape[-1] not in (1, 3, 4):
        hint = (
            " It looks channels-first: transpose it to (H, W, C)."
            if x.shape[0] in (1, 3, 4) else ""
        )
        raise ValueError(
            f"Image has {x.shape[-1]} channels (shape {x.shape}); expected channels-last with "
            f"1 (grey), 3 (RGB) or 4 (RGBA) channels.{hint}"
        )
    if x.dtype.name == "bfloat16":  # ml_dtypes (JAX): not a numpy floating subtype
        x = x.astype(np.float32)
    if x.dtype == bool:
        x = x.astype(np.uint8) * 255
    elif x.dtype == np.uint16:
        x = x.astype(np.float32) / 257.0
    elif np.issubdtype(x.dtype, np.integer):
        if x.dtype != np.uint8:
            if x.min() < 0 or x.max() > 255:
                raise ValueError(
                    f"Integer image of dtype {x.dtype} has values in [{x.min()}, {x.max()}]; "
                    "expected [0, 255]. Pass 16-bit data as uint16, or floats in [0, 255]."
                )
            x = x.astype(np.uint8)
    elif np.issubdtype(x.dtype, np.floating):
        _check_float_range(x)  # before the cast: float64 beyond float32's range is no inf
        x = x.astype(np.float32)
    else:
        raise ValueError(
            f"Unsupported image dtype {x.dtype}: pass uint8, uint16, bool, another integer "
            "type with values in [0, 255], or floats in [0, 255]."
        )
    if x.shape[-1] == 1:
        return np.repeat(x, 3, axis=-1)
    if x.shape[-1] == 4:
        rgb, alpha = x[..., :3].astype(np.float32), x[..., 3:].astype(np.float32)
        out = rgb * (alpha / 255.0) + (255.0 - alpha)
        return np.round(out).astype(np.uint8) if x.dtype == np.uint8 else out
    return x


def _check_float_range(x):
    if not np.isfinite(x).all():
        raise ValueError(
            "Image contains NaN or infinite values: pass finite values in [0, 255]."
        )
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 255.0:
        if low >= -1.0 and high <= 1.0:
            hint = "It looks like [-1, 1] data: pass (x + 1) * 127.5."
        else:
            hint = (
                "Clip it (np.clip(x, 0, 255)) if it is [0, 255] data that overshot, e.g. "
                "after a bicubic resize; otherwise rescale it to [0, 255] or pass uint8."
            )
        raise ValueError(
            f"Float image has values in [{low:g}, {high:g}]; float images must lie in "
            f"[0, 255]. {hint}"
        )


def load_images(inputs):
    """Returns (list of RGB arrays, batched): a list/tuple or a 4-D array is a batch.

    An error about one image of a batch says which (`Image 2 of 5: ...`).
    """
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise ValueError("Got an empty list of images: pass at least one image.")
        return _load_batch(inputs), True
    shape = getattr(inputs, "shape", None)
    if shape is not None and len(shape) == 4:
        if inputs.shape[0] == 0:
            raise ValueError(f"Got an empty batch (shape {tuple(inputs.shape)}).")
        return _load_batch(inputs), True
    return [load_image(inputs)], False


def _load_batch(images):
    out = []
    for i, image in enumerate(images):
        try:
            out.append(load_image(image))
        except ValueError as e:
            raise ValueError(f"Image {i} of {len(images)}: {e}") from e
    return out


def tf_to_rgb(image):
    """Graph-mode counterpart of `load_image` for a tf (…, H, W, C) tensor, C in 1, 3, 4.

    The same value rules (module doc), checked with `tf.debugging` asserts: values out of
    range fail the pipeline with an InvalidArgumentError that says so.
    """
    import tensorflow as tf

    dtype = image.dtype
    if dtype == tf.bool:
        image = tf.cast(image, tf.uint8) * 255
    elif dtype == tf.uint16:
        image = tf.cast(image, tf.float32) / 257.0
    elif dtype.is_integer and dtype != tf.uint8:
        image = tf.cast(_tf_assert_range(image, "Integer image", "Pass 16-bit data as "
                                         "uint16, or floats in [0, 255]."), tf.uint8)
    elif dtype.is_floating:
        image = tf.cast(_tf_assert_range(image, "Float image", "Clip or rescale it to "
                                         "[0, 255] (a [-1, 1] image: (x + 1) * 127.5)."),
                        tf.float32)
    elif dtype != tf.uint8:
        raise ValueError(
            f"Unsupported image dtype {dtype.name}: pass uint8, uint16, bool, another integer "
            "type with values in [0, 255], or floats in [0, 255]."
        )
    channels = image.shape[-1]
    if channels is None:
        return tf.ensure_shape(image, [None] * (image.shape.rank - 1) + [3])
    if channels == 1:
        return tf.concat([image] * 3, axis=-1)
    if channels == 4:
        x = tf.cast(image, tf.float32)
        alpha = x[..., 3:]
        x = x[..., :3] * (alpha / 255.0) + (255.0 - alpha)
        return tf.cast(tf.round(x), tf.uint8) if image.dtype == tf.uint8 else x
    if channels != 3:
        raise ValueError(
            f"Image tensor has {channels} channels (shape {image.shape}); expected "
            "channels-last with 1, 3 or 4 channels."
        )
    return image


def _tf_assert_range(image, what, hint):
    import tensorflow as tf

    low = tf.cast(tf.reduce_min(image), tf.float64)
    high = tf.cast(tf.reduce_max(image), tf.float64)
    ok = tf.logical_and(low >= 0.0, high <= 255.0)
    if image.dtype.is_floating:
        ok = tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(image)))
    check = tf.debugging.Assert(ok, [
        f"{what} must be finite with values in [0, 255]. {hint} Found min, max:", low, high,
    ])
    with tf.control_dependencies([check]):
        return tf.identity(image)
