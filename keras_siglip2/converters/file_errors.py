"""One error for a checkpoint file that is there but cannot be read: cut short or damaged.

Every reader of checkpoint files (`.npz`, safetensors, Keras `.weights.h5`, JSON configs)
opens and reads them inside `reading(path, kind)`, so a truncated download or a file
half-written by a killed process gives one message that names the file and says what to do,
rather than the reader's own error (`BadZipFile`, `SafetensorError`, an HDF5 message) that
names neither.
"""

import contextlib
import json
import zipfile
import zlib

from keras_siglip2.converters.weight_loader import WeightLoadingError


class CorruptFileError(WeightLoadingError):
    """A checkpoint file that exists but cannot be read (truncated or damaged)."""


def _safetensors_errors():
    from safetensors import SafetensorError

    return (SafetensorError, OSError)


# kind → (what the file should be, the exceptions its reader raises on damaged bytes).
_KINDS = {
    "npz": (".npz file", lambda: (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)),
    "h5": ("H5 weights file", lambda: (OSError, KeyError, RuntimeError, ValueError)),
    "safetensors": ("safetensors file", _safetensors_errors),
    "json": ("JSON file", lambda: (ValueError,)),  # JSONDecodeError, UnicodeDecodeError
}


def _reason(error):
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = " ".join(str(text).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def reading(path, kind):
    """Turns a reader's error inside the block into a `CorruptFileError` naming `path`.

    `kind` is "npz", "h5", "safetensors" or "json". A missing file (`FileNotFoundError`),
    a permission problem and our own `WeightLoadingError`s pass through unchanged.

    Example:
    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "config.json")
    >>> with open(path, "w") as f:
    ...     _ = f.write('{"model_type": "sig')
    >>> try:
    ...     with reading(path, "json"), open(path) as f:
    ...         json.load(f)
    ... except CorruptFileError as e:
    ...     print(str(e).replace(path, "config.json"))
    config.json is corrupt or truncated (not a readable JSON file: Unterminated string
    starting at: ...): re-download or re-convert it.
    """
    what, errors = _KINDS[kind]
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, PermissionError, WeightLoadingError):
        raise
    except errors() as e:
        raise CorruptFileError(
            f"{path} is corrupt or truncated (not a readable {what}: {_reason(e)}): "
            "re-download or re-convert it."
        ) from e


def read_json(path):
    """The parsed JSON file at `path`; a damaged one is a `CorruptFileError` naming it."""
    with reading(path, "json"), open(path, encoding="utf-8") as f:
        return json.load(f)
