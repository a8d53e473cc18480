"""The command line: `presets` and `convert`."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

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
          "--width", "16", "--depth", "1", "--max-num-patches", "16", "--eval-examples", "6",
          "--validation-scenes", "8"])
    out = capsys.readouterr().out
    checkpoint = workdir / "checkpoint"
    assert "zero-shot colour accuracy" in out and "referring box IoU" in out
    assert "val_colour: " in out and f"gallery: {workdir / 'gallery.png'}" in out
    for name in ("losses.png", "evaluation.png", "gallery.png", "results.json"):
        assert (workdir / name).is_file(), name
    assert not (workdir / "backup").exists()  # removed once the run completed

    (workdir / "gallery.png").unlink()
    main(["eval", str(checkpoint), "--num-examples", "4", "--probe-examples", "2",
          "--gallery"])  # without a PATH: beside the checkpoint
    out = capsys.readouterr().out
    assert "dense probe mIoU" in out and "linear probe shape accuracy" in out
    assert (workdir / "gallery.png").is_file()

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
    for mode in ("off", "max"):  # the layers op by op; on PyTorch, torch.compile
        main(["embed", "--preset", str(checkpoint), "--texts", "a red circle", "ein Quadrat",
              "-o", str(tmp_path / f"{mode}.npy"), "--compiled", mode])
        np.testing.assert_allclose(np.load(tmp_path / f"{mode}.npy"), embeddings, atol=1e-5)


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


def _one_line_error(capsys, argv, code=2):
    """Runs `main(argv)`; returns its stderr, checked to be one `error: ` line and exit `code`."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code, argv
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
    return err


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"")  # never read: the arguments fail first
    return str(path)


@pytest.mark.parametrize("argv, says", [
    (["eval", ".", "--num-examples", "0"], "--num-examples: must be a whole number >= 1"),
    (["eval", ".", "--probe-examples", "-2"], "--probe-examples: must be a whole number"),
    (["eval", "missing-checkpoint"], "checkpoint: 'missing-checkpoint' is not a directory"),
    (["zero-shot", "IMAGE", "--labels", "a", "--preset", "p", "--top", "0"], "--top: must be"),
    (["zero-shot", "IMAGE", "--labels", "a", "--preset", "p", "--template", "{} {x}"],
     "--template: needs exactly one '{}'"),
    (["zero-shot", "IMAGE", "--labels", "a", "--preset", "p", "--template", "{0}"],
     "--template: needs exactly one '{}'"),
    (["zero-shot", "IMAGE", "--labels", "a", "--preset", "p", "--template", "{{}}"],
     "--template: needs exactly one '{}'"),
    (["zero-shot", "IMAGE", "--labels", "a", "--preset", "p", "--template", "{:d}"],
     "--template: '{:d}' is not a valid template"),
    (["zero-shot", "IMAGE", "--labels", " , ", "--preset", "p"], "--labels: needs at least one"),
    (["zero-shot", "IMAGE", "absent.png", "--labels", "a", "--preset", "p"],
     "image file 'absent.png' does not exist"),
    (["embed", "--preset", "p", "-o", "e.npy", "--texts", "ok", "caf\udcc3"],
     "--texts: item 2 is not valid UTF-8 text"),
    (["embed", "--preset", "p", "-o", "e.npy"], "give either --images or --texts"),
    (["embed", "--preset", "p", "-o", "e.npy", "--texts", "a", "--compiled", "yes"],
     "--compiled: is on, max or off; got 'yes'"),
    (["embed", "--preset", "p", "-o", "no/such/dir/e.npy", "--images", "IMAGE"], "--output"),
    (["export", "out", "--preset", "p", "--max-num-patches", "0"], "--max-num-patches: must be"),
    (["convert", "p", "NONEMPTY"], "is not an empty directory"),
    (["train", "--steps", "many"], "--steps: invalid int value"),
])
def test_bad_arguments_are_one_line_before_any_work(capsys, monkeypatch, tmp_path, image,
                                                    argv, says):
    import keras_siglip2.checkpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(keras_siglip2.checkpoint, "load_checkpoint", None)  # never reached
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    argv = [{"IMAGE": image, "NONEMPTY": str(tmp_path / "full")}.get(a, a) for a in argv]
    assert says in _one_line_error(capsys, argv)


def test_every_error_is_one_line_and_debug_shows_it(capsys, monkeypatch, image):
    import keras_siglip2.checkpoint

    def fail(handle):
        raise TypeError("no such\nthing")

    monkeypatch.setattr(keras_siglip2.checkpoint, "load_checkpoint", fail)
    argv = ["zero-shot", image, "--labels", "a", "--preset", "p"]
    err = _one_line_error(capsys, argv)
    assert "TypeError: no such thing" in err and "--debug" in err
    with pytest.raises(TypeError, match="no such"):  # --debug: the traceback, unchanged
        main(["--debug", *argv])

    def interrupt(handle):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_siglip2.checkpoint, "load_checkpoint", interrupt)
    assert _one_line_error(capsys, argv, code=130) == "error: interrupted\n"


def test_a_corrupt_checkpoint_is_one_line_naming_the_file(capsys, tmp_path):
    tiny_backbone(seed=2).save_to_preset(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:1000])
    err = _one_line_error(capsys, ["embed", "--preset", str(tmp_path / "ckpt"), "--texts", "a",
                                   "-o", str(tmp_path / "e.npy")])
    assert f"{weights} is corrupt or truncated" in err and "re-download" in err


def test_a_failed_convert_leaves_nothing_behind(capsys, tmp_path):
    source = tmp_path / "src"
    tiny_backbone(seed=4).save_to_preset(source)
    (source / "assets" / "tokenizer").mkdir(parents=True, exist_ok=True)
    (source / "assets" / "tokenizer" / "vocabulary.spm").write_bytes(b"not a model")
    (tmp_path / "out").mkdir()
    for destination in (tmp_path / "out" / "dst", tmp_path / "new" / "parents" / "dst"):
        # The weights are written, then the tokenizer fails.
        _one_line_error(capsys, ["convert", str(source), str(destination)])
        assert not destination.exists()
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "new").exists()


def test_convert_into_an_empty_directory(capsys, tmp_path):
    source = tmp_path / "src"
    tiny_backbone(seed=5).save_to_preset(source)
    (tmp_path / "dst").mkdir()
    main(["convert", str(source), str(tmp_path / "dst")])
    assert "saved" in capsys.readouterr().out
    assert SigLIP2Backbone.from_preset(str(tmp_path / "dst")).count_params() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]


# The backends' own log lines (TensorFlow / XLA start-up, absl, SentencePiece's normalizer).
BACKEND_NOISE = re.compile(r"^[IWEF]\d{4} |oneDNN|cuda|XLA|normalizer\.cc|absl|LOG\(")


def test_the_command_line_shows_no_backend_log_lines(tmp_path):
    """A real command in a fresh process: TensorFlow loads, a tokenizer op loads a vocabulary
    with identity normalisation (SentencePiece logs that), a model runs."""
    from keras_siglip2 import SigLIP2TextEncoder, SigLIP2VisionEncoder
    from conftest import TINY_TEXT, TINY_VISION

    keras.utils.set_random_seed(0)
    text = SigLIP2TextEncoder(**{**TINY_TEXT, "vocabulary_size": 640})
    SigLIP2Backbone(SigLIP2VisionEncoder(**TINY_VISION), text).save_to_preset(tmp_path / "m")
    SigLIP2Tokenizer(proto=train_tiny_spm(tmp_path / "spm"),
                     sequence_length=8).save_to_preset(tmp_path / "m")
    env = {k: v for k, v in os.environ.items()  # the defaults, whatever runs the tests
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "JAX_LOGGING_LEVEL")}
    result = subprocess.run(
        [sys.executable, "-m", "keras_siglip2", "embed", "--preset", str(tmp_path / "m"),
         "--texts", "A photo of a cat.", "-o", str(tmp_path / "e.npy")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("saved 1 embeddings of width 16")
    noise = [line for line in (result.stdout + result.stderr).splitlines()
             if BACKEND_NOISE.search(line)]
    assert not noise, noise


def test_verbose_is_accepted_before_the_command(capsys):
    main(["--verbose", "presets"])
    assert "siglip2" in capsys.readouterr().out


def test_quiet_hides_only_backend_log_lines():
    from keras_siglip2.quiet import NOISE

    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to "
        "STDERR",
        "I0000 00:00:1796569276.774821   30099 port.cc:153] oneDNN custom operations are on.",
        "W0312 10:01:02.123456    7 cuda_dnn.cc:8] Unable to register cuDNN factory",
        "normalizer.cc(51) LOG(INFO) precompiled_charsmap is empty. use identity normalization.",
    ]
    kept = [
        "error: 'x' is not a directory",
        "E0000 00:00:1796569344.477997   30515 cuda_platform.cc:52] failed call to cuInit",
        "F0000 00:00:1.0 1 check.cc:1] Check failed: x",
        "Traceback (most recent call last):",
        "UserWarning: something",
    ]
    assert all(NOISE.match(line) for line in noise)
    assert not any(NOISE.match(line) for line in kept)


def test_train_help_shows_the_real_defaults(capsys):
    import dataclasses

    from keras_siglip2.main_job import MainJobConfig

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    assert "MainJobConfig" not in text
    defaults = {f.name: f.default for f in dataclasses.fields(MainJobConfig)}
    for name in ("steps", "epochs", "batch_size", "learning_rate", "seed", "width", "depth",
                 "max_num_patches", "english_fraction", "pool_size", "validation_scenes"):
        shown = re.search(rf"--{name.replace('_', '-')} {name.upper()} .*?\(default: ([^)]*)\)",
                          text)
        assert shown and shown.group(1) == str(defaults[name]), (name, shown)
    assert "--steps STEPS optimizer steps (default: 3600)" in text
