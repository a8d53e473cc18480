"""The command line: `presets` and `convert`."""

import pathlib
import subprocess
import sys

import numpy as np

import keras

from conftest import tiny_backbone
from spm_model import train_tiny_spm
from keras_siglip2 import SigLIP2Backbone, SigLIP2Tokenizer
from keras_siglip2.__main__ import main
from keras_siglip2.param_count import count_params
from keras_siglip2.presets import PRESETS


def test_presets_lists_every_checkpoint(capsys):
    main(["presets"])
    out = capsys.readouterr().out
    for name, preset in PRESETS.items():
        assert name in out
        assert f"{count_params(preset['backbone']):,}" in out


def test_convert_writes_a_preset_that_loads_offline(tmp_path):
    source = tiny_backbone(naflex=False, seed=11)
    source.save_to_preset(tmp_path / "src")
    proto = pathlib.Path(train_tiny_spm(tmp_path / "spm")).read_bytes()
    (tmp_path / "src" / "assets" / "tokenizer").mkdir(parents=True, exist_ok=True)
    (tmp_path / "src" / "assets" / "tokenizer" / "vocabulary.spm").write_bytes(proto)
    main(["convert", str(tmp_path / "src"), str(tmp_path / "dst")])
    converted = SigLIP2Backbone.from_preset(str(tmp_path / "dst"))
    inputs = {
        "images": np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)),
        "token_ids": np.ones((2, 8), "int32"),
    }
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(converted(inputs)["logits"]),
        keras.ops.convert_to_numpy(source(inputs)["logits"]),
        atol=1e-6,
    )
    assert (tmp_path / "dst" / "assets" / "tokenizer" / "vocabulary.spm").read_bytes() == proto
    tokenizer = SigLIP2Tokenizer.from_preset(str(tmp_path / "dst"))
    reference = SigLIP2Tokenizer(proto=proto)
    text = ["A photo of a Cat."]
    np.testing.assert_array_equal(tokenizer(text), reference(text))


def test_bad_arguments_give_one_line_errors(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "keras_siglip2", "convert", str(tmp_path / "nope"), str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.stderr
