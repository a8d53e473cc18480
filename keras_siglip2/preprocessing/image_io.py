"""Turning user images (arrays, PIL images, files) into (H, W, 3) RGB numpy arrays.

Conventions, the same for every input kind:
- Values are in [0, 255] units: uint8 stays uint8; floats are taken to be in [0, 255]
  (not [0, 1]) and come back float32; other integer arrays must hold values in [0, 255].
- 16-bit data (uint16 arrays, PIL modes I;16*, and PIL mode I, which PIL's 16-bit decoders
  produce) is scaled to [0, 255] float32 (x / 257), not clipped.
- Transparency (RGBA/LA/PA arrays or images, palette or tRNS transparency) is composited
  onto a white background, as transformers' `convert_to_rgb` does; uint8 stays uint8 (rounded).
- Grey images are repeated to three channels; other PIL modes use PIL's own conversion.
- Files and encoded bytes are decoded with PIL and rotated upright by their EXIF orientation;
  PIL images passed in are used as they are.
"""

import io
import os

import numpy as np
import PIL.Image
import PIL.ImageOps

_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_RGB_MODES = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV")
_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def load_image(image):
    """Returns `image` as an (H, W, 3) uint8 or float32 RGB numpy array (see module doc).

    `image` is a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (channels last),
    anything with `__array__` or `.numpy()` (tf, torch, jax tensors), a `PIL.Image.Image`, a
    file path or the encoded bytes of an image file. Raises ValueError for anything else.

    >>> tuple(load_image(np.zeros((2, 5), "uint8")).shape)
    (2, 5, 3)
    """
    if isinstance(image, (str, os.PathLike, bytes)):
        image = _open(image)
    if isinstance(image, PIL.Image.Image):
        image = _pil_to_array(image)
    elif hasattr(image, "to_tensor"):  # tf.RaggedTensor
        image = image.to_tensor()
    if hasattr(image, "detach"):  # torch
        image = image.detach().cpu()
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


def _open(source):
    try:
        if isinstance(source, bytes):
            image = PIL.Image.open(io.BytesIO(source))
        else:
            if not os.path.isfile(source):
                raise ValueError(f"No image file at {os.fspath(source)!r}: check the path.")
            image = PIL.Image.open(source)
        image.load()
    except (OSError, PIL.Image.DecompressionBombError) as e:
        what = "the given bytes" if isinstance(source, bytes) else repr(os.fspath(source))
        raise ValueError(f"Could not decode an image from {what}: {e}") from e
    return PIL.ImageOps.exif_transpose(image)


def _pil_to_array(image):
    mode = image.mode
    if mode in _16BIT_MODES:
        x = np.asarray(image)
        if mode == "I" and (x.min() < 0 or x.max() > 65535):
            raise ValueError(
                f"PIL mode 'I' image with values in [{x.min()}, {x.max()}]: mode I is read as "
                "16-bit (0..65535). Convert it yourself to a uint8 or [0, 255] float array."
            )
        return x.astype(np.float32) / 257.0
    if mode == "F":
        return np.asarray(image, np.float32)
    if mode in _ALPHA_MODES or (mode in _RGB_MODES and "transparency" in image.info):
        return np.asarray(image.convert("LA" if mode == "La" else image.mode).convert("RGBA"))
    if mode in _RGB_MODES:
        return np.asarray(image.convert("RGB"))
    raise ValueError(
        f"Unsupported PIL image mode {mode!r}. Supported modes: "
        f"{', '.join(_RGB_MODES + _ALPHA_MODES + _16BIT_MODES + ('F',))}; convert it first, "
        "e.g. `image.convert('RGB')` (for LAB use PIL.ImageCms)."
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
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError(
                "Image contains NaN or infinite values: pass finite values in [0, 255]."
            )
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


def load_images(inputs):
    """Returns (list of RGB arrays, batched): a list/tuple or a 4-D array is a batch."""
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise ValueError("Got an empty list of images: pass at least one image.")
        return [load_image(x) for x in inputs], True
    shape = getattr(inputs, "shape", None)
    if shape is not None and len(shape) == 4:
        if inputs.shape[0] == 0:
            raise ValueError(f"Got an empty batch (shape {tuple(inputs.shape)}).")
        return [load_image(x) for x in inputs], True
    return [load_image(inputs)], False


def tf_to_rgb(image):
    """Graph-mode counterpart of `load_image` for a tf (…, H, W, C) tensor, C in 1, 3, 4."""
    import tensorflow as tf

    if image.dtype == tf.bool:
        image = tf.cast(image, tf.uint8) * 255
    elif image.dtype == tf.uint16:
        image = tf.cast(image, tf.float32) / 257.0
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
