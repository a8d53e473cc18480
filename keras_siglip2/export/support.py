"""Which export format works from which Keras backend, measured with Keras 3.15.

| format           | tensorflow | jax | torch |
|------------------|------------|-----|-------|
| `tf_saved_model` | yes        | yes | no    |
| `onnx`           | yes        | no  | yes   |
| `litert`         | yes        | no  | no    |

The weights do not depend on the backend, so a pair marked "no" is one
`KERAS_BACKEND=...` away: the error says which backends to use instead.
"""

FORMATS = ("tf_saved_model", "onnx", "litert")
BACKENDS = ("tensorflow", "jax", "torch")

# Why each missing pair fails (each was tried with Keras 3.15 on these encoders).
_UNSUPPORTED = {
    ("tf_saved_model", "torch"): (
        "Keras writes a SavedModel from torch through torch_xla, which is published only for "
        "its own torch version, and its torch exporter takes no dict inputs"
    ),
    ("onnx", "jax"): (
        "Keras converts JAX to ONNX with jax2onnx, which mis-converts these encoders (tried "
        "with jax2onnx 0.17.1: keras-hub's PositionEmbedding comes out with a fixed batch "
        "size, and the NaFlex position embedding does not trace)"
    ),
    ("litert", "jax"): "Keras exports LiteRT from the TensorFlow and torch backends only",
    ("litert", "torch"): (
        "Keras's LiteRT export from torch (litert-torch) has static input shapes only, so "
        "the batch size could not vary"
    ),
}


class UnsupportedExportError(ValueError):
    """A format that cannot be exported from the current Keras backend."""


def supported_backends(format):
    """The backends that export `format`.

    Example:
    >>> supported_backends("onnx")
    ('tensorflow', 'torch')
    """
    check_format(format)
    return tuple(b for b in BACKENDS if (format, b) not in _UNSUPPORTED)


def check_format(format):
    """Raises a `ValueError` naming the formats if `format` is not one of them.

    Example:
    >>> check_format("litert")
    """
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}; expected one of {FORMATS}.")


def check_supported(format, backend):
    """Raises `UnsupportedExportError` (why, and what to do) if `backend` cannot export `format`.

    Example:
    >>> check_supported("tf_saved_model", "jax")
    >>> check_supported("litert", "jax")
    Traceback (most recent call last):
    ...
    keras_siglip2.export.support.UnsupportedExportError: Exporting to litert from the jax ...
    """
    check_format(format)
    if backend not in BACKENDS:
        raise UnsupportedExportError(
            f"Exporting needs one of the backends {BACKENDS}; Keras runs on {backend!r}."
        )
    reason = _UNSUPPORTED.get((format, backend))
    if reason is not None:
        others = " or ".join(f"KERAS_BACKEND={b}" for b in supported_backends(format))
        raise UnsupportedExportError(
            f"Exporting to {format} from the {backend} backend is not supported: {reason}. "
            f"The weights do not depend on the backend: export with {others} (e.g. "
            f"`KERAS_BACKEND={supported_backends(format)[0]} python -m keras_siglip2 export "
            f"--preset ... --format {format} DST`)."
        )
