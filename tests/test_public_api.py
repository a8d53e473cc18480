"""The public API boundary: each package's `__all__`, the private internals kept in `_compat`,
and the test fixtures kept in `keras_siglip2.testing`."""

import importlib
import importlib.util
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "keras_siglip2"
PUBLIC_PACKAGES = [
    "keras_siglip2", "keras_siglip2.models", "keras_siglip2.layers", "keras_siglip2.losses",
    "keras_siglip2.callbacks", "keras_siglip2.evaluation", "keras_siglip2.preprocessing",
    "keras_siglip2.export", "keras_siglip2.datasets",
]


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_all_lists_exactly_the_public_names(name):
    module = importlib.import_module(name)
    assert len(set(module.__all__)) == len(module.__all__)
    for public in module.__all__:  # a name it defines, or a submodule (datasets)
        assert hasattr(module, public) or importlib.util.find_spec(f"{name}.{public}"), public
    imported = {  # names the package imports from its own modules, minus submodules
        key for key, value in vars(module).items()
        if not key.startswith("_") and getattr(value, "__module__", "").startswith(name + ".")
    }
    assert imported <= set(module.__all__), sorted(imported - set(module.__all__))


def test_private_internals_are_only_reached_through_compat():
    pattern = re.compile(r"^\s*(from|import)\s+(keras|keras_hub)\.src\b", re.MULTILINE)
    users = sorted(
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
        if path.name != "_compat.py" and pattern.search(path.read_text())
    )
    assert users == []


def test_the_fixtures_live_in_testing_only():
    import keras_siglip2.checkpoint
    import keras_siglip2.preprocessing
    import keras_siglip2.testing

    assert not hasattr(keras_siglip2.checkpoint, "save_tiny_random_checkpoint")
    assert not hasattr(keras_siglip2.preprocessing, "random_naflex_batch")
    assert callable(keras_siglip2.testing.toy_backbone)
