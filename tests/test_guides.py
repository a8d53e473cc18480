"""Every guide in guides/ runs start to finish at a tiny size, on the current backend."""

import os
import pathlib
import subprocess
import sys

import keras
import pytest
from PIL import Image

GUIDES = sorted((pathlib.Path(__file__).parents[1] / "guides").glob("*.py"))


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.stem)
def test_guide_runs(guide, tmp_path):
    output = tmp_path / "figure.png"
    env = {**os.environ, "KERAS_BACKEND": keras.config.backend(), "GUIDE_STEPS": "8",
           "GUIDE_OUTPUT": str(output)}
    result = subprocess.run(
        [sys.executable, str(guide)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(output).size[0] > 0
