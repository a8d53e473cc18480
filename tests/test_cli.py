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


def test_train_then_eval_zero_shot_and_embed_from_its_checkpoint(tmp_path, capsys):
    from PIL import Image

    from keras_siglip2.datasets import scenes

    workdir = tmp_path / "run"
    main(["train", "--workdir", str(workdir), "--steps", "2", "--batch-size", "4",
          "--width", "16", "--depth", "1", "--max-num-patches", "16", "--eval-examples", "6"])
    out = capsys.readouterr().out
    checkpoint = workdir / "checkpoint"
    assert "zero-shot colour accuracy" in out and "referring box IoU" in out
    assert (workdir / "losses.png").is_file() and (workdir / "results.json").is_file()
    assert not (workdir / "backup").exists()  # removed once the run completed

    main(["eval", str(checkpoint), "--num-examples", "4", "--probe-examples", "2"])
    out = capsys.readouterr().out
    assert "dense probe mIoU" in out and "linear probe shape accuracy" in out

    images = []
    for i in range(2):
        images.append(tmp_path / f"scene{i}.png")
        Image.fromarray(scenes.example("test", i)["image"]).save(images[-1])
    main(["zero-shot", *map(str, images), "--labels", "red, blue,green", "--preset",
          str(checkpoint), "--template", "{}", "--top", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(images[0]) and len(lines) == 6
    assert all(line.strip().split()[-1] in ("red", "blue", "green") for line in lines[1:3])

    main(["embed", "--preset", str(checkpoint), "--texts", "a red circle", "ein Quadrat",
          "-o", str(tmp_path / "texts.npy")])
    embeddings = np.load(tmp_path / "texts.npy")
    assert embeddings.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_cli_argument_errors_are_one_line(tmp_path):
    for argv in (
        ["zero-shot", "x.png", "--labels", " , ", "--preset", str(tmp_path)],
        ["embed", "--preset", str(tmp_path), "-o", str(tmp_path / "e.npy")],
        ["eval", str(tmp_path / "missing")],
        ["train", "--english-fraction", "1.5", "--workdir", str(tmp_path / "run")],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "keras_siglip2", *argv], capture_output=True, text=True,
            timeout=300,
        )
        assert result.returncode == 2, (argv, result.stderr[-2000:])
        assert result.stderr.strip().splitlines()[-1].startswith("error: "), argv
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_train_on_a_missing_tpu_fails_fast_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "keras_siglip2", "train", "--tpu", "local", "--workdir",
         str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    expected = "No TPU found" if keras.config.backend() == "tensorflow" else "TensorFlow"
    assert last.startswith("error: ") and expected in last, last
    assert not (tmp_path / "run").exists()  # nothing written before the check
