"""Which Keras backend writes which export format natively, measured with Keras 3.15.

| format           | tensorflow | jax   | torch |
|------------------|------------|-------|-------|
| `tf_saved_model` | yes        | yes   | child |
| `onnx`           | yes        | child | yes   |
| `litert`         | yes        | child | child |

The weights do not depend on the backend, so `export_encoders` writes a "child" pair by
saving the model and exporting it in a child process on TensorFlow, which writes all three.
"""

FORMATS = ("tf_saved_model", "onnx", "litert")
BACKENDS = ("tensorflow", "jax", "torch")

# Why each pair is not written natively (each was tried with Keras 3.15 on these encoders).
_NOT_NATIVE = {
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


def supported_backends(format):
    """The backends that write `format` natively (in the process itself).

    Example:
    >>> supported_backends("onnx")
    ('tensorflow', 'torch')
    """
    check_format(format)
    return tuple(b for b in BACKENDS if (format, b) not in _NOT_NATIVE)


def check_format(format):
    """Raises a `ValueError` naming the formats if `format` is not one of them.

    Example:
    >>> check_format("litert")
    """
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}; expected one of {FORMATS}.")


def export_backend(format, backend):
    """The backend that writes `format` when Keras runs on `backend`: `backend` itself where
    it writes `format` natively, else TensorFlow (in a child process).

    Example:
    >>> export_backend("onnx", "torch")
    'torch'
    >>> export_backend("litert", "jax")
    'tensorflow'
    """
    native = supported_backends(format)
    return backend if backend in native else native[0]
