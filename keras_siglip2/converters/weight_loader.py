"""Strict weight assignment: every tensor used once, every variable set once, shapes checked."""

import numpy as np


class WeightLoadingError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


def check_finite(value, name, source_name):
    """Raises `WeightLoadingError` if the float array `value` holds a NaN or an infinity.

    `name` (the tensor) and `source_name` (the file) go into the message.

    Example:
    >>> check_finite(np.ones(3), "w", "demo.npz")
    >>> try:
    ...     check_finite(np.array([1.0, np.nan, np.inf]), "t", "demo.npz")
    ... except WeightLoadingError as e:
    ...     print(str(e)[:60])
    demo.npz: tensor 't' is not finite (2 of 3 values are NaN or
    """
    value = np.asarray(value)
    if value.dtype.kind not in "fc" and "float" not in value.dtype.name:  # ml_dtypes' too
        return
    bad = value.size - int(np.count_nonzero(np.isfinite(value)))
    if bad:
        raise WeightLoadingError(
            f"{source_name}: tensor '{name}' is not finite ({bad} of {value.size} values are "
            "NaN or inf): the file is damaged or was saved from a diverged run; re-download "
            "or re-convert it, or use an earlier checkpoint."
        )


class WeightLoader:
    """Copies tensors from a checkpoint (a name → array mapping) into a Keras model.

    Use `take(key)` to read a source tensor (marking it used) and
    `assign(variable, value)` to set a model variable (a tensor holding a NaN or an
    infinity is refused when taken); `finish(model)` then
    raises `WeightLoadingError` if any model variable was left unset or any
    source tensor was never read, so a partial load can never go unnoticed.

    Example:
    >>> import keras
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> loader = WeightLoader({"w": np.ones((3, 2)), "b": np.zeros(2)}, "demo")
    >>> loader.assign(layer.kernel, loader.take("w"))
    >>> loader.assign(layer.bias, loader.take("b"))
    >>> loader.finish(layer)
    """

    def __init__(self, tensors, source_name):
        self.tensors = tensors
        self.source_name = source_name
        self._used = set()
        self._assigned = set()

    def take(self, key):
        if key not in self.tensors:
            raise WeightLoadingError(
                f"{self.source_name}: tensor '{key}' is missing. The checkpoint does "
                "not match the architecture inferred for it (wrong model family, "
                "size or a truncated file?)."
            )
        self._used.add(key)
        value = np.asarray(self.tensors[key])
        check_finite(value, key, self.source_name)
        return value

    def assign(self, variable, value):
        value = np.asarray(value)
        if tuple(variable.shape) != value.shape:
            raise WeightLoadingError(
                f"{self.source_name}: shape mismatch for '{variable.path}': the model "
                f"expects {tuple(variable.shape)}, the checkpoint gives {value.shape}."
            )
        if id(variable) in self._assigned:
            raise WeightLoadingError(
                f"{self.source_name}: '{variable.path}' was assigned twice."
            )
        variable.assign(value.astype(variable.dtype))
        self._assigned.add(id(variable))

    def finish(self, model, ignore_unused=()):
        """Raises unless all of `model`'s variables were set and all tensors used."""
        unset = [v.path for v in model.variables if id(v) not in self._assigned]
        unused = sorted(
            k for k in self.tensors
            if k not in self._used and not any(k.startswith(p) for p in ignore_unused)
        )
        problems = []
        if unset:
            problems.append(f"{len(unset)} model weights not found in it: {unset[:8]}")
        if unused:
            problems.append(f"{len(unused)} tensors it holds were not used: {unused[:8]}")
        if problems:
            raise WeightLoadingError(
                f"{self.source_name} does not match the model: "
                + "; ".join(problems)
                + ". Nothing was silently skipped: check that the checkpoint and "
                "the preset/config describe the same architecture."
            )
