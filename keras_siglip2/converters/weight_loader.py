"""Strict weight assignment: every tensor used once, every variable set once, shapes checked."""

import numpy as np


class WeightLoadingError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


class WeightLoader:
    """Copies tensors from a checkpoint (a name → array mapping) into a Keras model.

    Use `take(key)` to read a source tensor (marking it used) and
    `assign(variable, value)` to set a model variable; `finish(model)` then
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
        return np.asarray(self.tensors[key])

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
