"""Every docstring example in the package runs and prints what it says."""

import doctest
import importlib
import pathlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_siglip2

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(keras_siglip2.__path__, "keras_siglip2.")
    if m.name != "keras_siglip2.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs={"keras": keras, "np": np, **vars(module)}):
        if test.examples and pathlib.Path(test.filename or "").suffix == ".py":
            keras.utils.set_random_seed(0)
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
