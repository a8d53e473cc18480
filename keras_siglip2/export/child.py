"""Export on another Keras backend: the model saved as a preset, exported by a child process.

`export_encoders` goes this way for the pairs the current backend cannot write natively
(`support.py`).
"""

import os
import subprocess
import sys
import tempfile

import keras_siglip2

# The child imports this very package, even where it is not installed.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(keras_siglip2.__file__)))


def export_in_child(backend, backbone, tokenizer, destination, format, max_num_patches,
                    encoders):
    """Exports `backbone` and `tokenizer` (or None) as `export_encoders(..., format,
    max_num_patches=..., encoders=...)` does on Keras backend `backend`, in a child process.

    Both are saved first as a preset in a temporary directory, so the child exports exactly
    these weights; it writes the same files and `export.json` as a direct export from
    `backend`. Raises `RuntimeError` with the child's one-line error if it fails.

    Example:
    >>> import pathlib, tempfile
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone(image_size=32, patch_size=16, sequence_length=8)
    >>> destination = pathlib.Path(tempfile.mkdtemp())
    >>> export_in_child("tensorflow", backbone, None, destination, "litert", None, ("text",))
    >>> sorted(p.name for p in destination.iterdir())
    ['export.json', 'text_encoder.tflite']
    """
    with tempfile.TemporaryDirectory(prefix="keras_siglip2_export_") as preset:
        backbone.save_to_preset(preset)
        if tokenizer is not None:
            tokenizer.save_to_preset(preset)
        arguments = [os.fspath(destination), "--preset", preset, "--format", format,
                     "--encoders", *encoders]
        if max_num_patches is not None:
            arguments += ["--max-num-patches", str(max_num_patches)]
        _run_export_command(backend, arguments)


def _run_export_command(backend, arguments):
    path = os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-m", "keras_siglip2", "export", *arguments],
        env={**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path},
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        # The command line's errors are one line, `error: <message>`, last on stderr.
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1].removeprefix("error: ") if lines else f"exit status {result.returncode}"
        raise RuntimeError(f"Exporting in a {backend} child process failed: {reason}")
