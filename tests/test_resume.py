"""Dependable training runs: kills resume to the uninterrupted run's weights, divergence keeps
the last good state, and the main job's settings are checked before anything is written."""

import dataclasses
import json
import math
import pathlib
import subprocess
import sys

import h5py
import numpy as np
import pytest

import keras

from keras_siglip2 import main_job
from keras_siglip2.__main__ import main
from keras_siglip2.callbacks import TrainingBackup, TrainingDiverged
from keras_siglip2.main_job import MainJobConfig

TESTS = pathlib.Path(__file__).parent
TINY = ["--steps", "8", "--epochs", "4", "--batch-size", "4", "--width", "16", "--depth", "1",
        "--max-num-patches", "16", "--eval-examples", "0", "--validation-scenes", "8"]


def _checkpoint_arrays(workdir):
    arrays = {}
    for prefix, file in [("", "model.weights.h5"), ("decoder/", "locca_decoder.weights.h5")]:
        with h5py.File(workdir / "checkpoint" / file) as f:
            f.visititems(lambda name, node, prefix=prefix: arrays.__setitem__(
                prefix + name, node[()]) if isinstance(node, h5py.Dataset) else None)
    return arrays


def _train(*args, driver_point=None):
    command = ([sys.executable, str(TESTS / "resume_driver.py"), driver_point] if driver_point
               else [sys.executable, "-m", "keras_siglip2", "train"])
    return subprocess.run([*command, *args, *TINY], capture_output=True, text=True, timeout=600)


def test_runs_killed_anywhere_resume_to_the_uninterrupted_weights(tmp_path):
    """SIGKILL half-way through writing a backup, as a step is about to run, and half-way
    through writing the checkpoint; each time the same command resumes. 8 steps, 2 per
    epoch; SILC/TIPS switch on at step 7, so the teacher and the schedule cross the kills."""
    reference = _train("--workdir", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr[-2000:]
    killed = tmp_path / "killed"
    for point in ("backup:2", "begin:6", "checkpoint"):
        result = _train("--workdir", str(killed), driver_point=point)
        assert result.returncode == -9, (point, result.stderr[-2000:])
        assert not (killed / "checkpoint").exists()
    assert sorted(p.name for p in (killed / "backup").iterdir()) == [
        "epoch-00003.weights.h5", "epoch-00004.weights.h5"]
    resumed = _train("--workdir", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (killed / "backup").exists() and not (killed / "checkpoint.partial").exists()
    want, got = _checkpoint_arrays(tmp_path / "ref"), _checkpoint_arrays(killed)
    assert sorted(want) == sorted(got)
    for name in want:
        if keras.config.backend() == "jax":  # XLA on CPU: bitwise reproducible
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        else:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6,
                                       err_msg=name)
    log = main_job.StepLog.read(killed / "steps.csv")
    assert log["step"] == list(range(1, 9))
    np.testing.assert_allclose(log["loss"], main_job.StepLog.read(tmp_path / "ref" / "steps.csv")
                               ["loss"], rtol=1e-5)
    # Every epoch's validation row, the earlier epochs' kept across the kills, measured
    # without touching the training (the weights above match).
    read = main_job.ValidationEvaluation.read
    validation, reference = read(killed / "validation.csv"), read(tmp_path / "ref" /
                                                                    "validation.csv")
    assert validation["epoch"] == [1, 2, 3, 4] and sorted(validation) == sorted(reference)
    if keras.config.backend() == "jax":  # elsewhere a near-tie may rank differently
        assert validation == reference


class _Poison(keras.callbacks.Callback):
    """Makes the input of batch `at` (0-based over the run) NaN, or a weight at an epoch end."""

    def __init__(self, weight_at_epoch=None):
        super().__init__()
        self.weight_at_epoch = weight_at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.weight_at_epoch:
            kernel = self.model.layers[-1].kernel
            kernel.assign(keras.ops.full(kernel.shape, float("inf")))


def _dense_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_a_diverged_fit_keeps_its_last_good_state(tmp_path):
    x, y = np.ones((16, 2), "float32"), np.ones((16, 1), "float32")
    clean = _dense_model()
    clean.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)  # 8 steps
    x[10:12] = np.nan  # step 5 of epoch 1 (0-based step 13 of the run)
    model = _dense_model()
    backup = TrainingBackup(tmp_path / "backup")
    with pytest.raises(TrainingDiverged, match=r"step 13\).*non-finite loss=nan") as raised:
        model.fit(np.concatenate([np.ones_like(x[:16]), x]), np.concatenate([y, y]),
                  batch_size=2, epochs=2, shuffle=False, verbose=0, callbacks=[backup])
    assert raised.value.step == 13 and math.isnan(raised.value.bad_terms["loss"])
    assert raised.value.backup == tmp_path / "backup" / "epoch-00000.weights.h5"
    # Epoch 0 ran on 32 examples (16 steps, no NaN until step 13): nothing was backed up
    # after the start, so the model is back at its initial state and the backup is kept.
    assert int(model.optimizer.iterations) == 0
    for got, want in zip(model.get_weights(), _dense_model().get_weights()):
        np.testing.assert_array_equal(got, want)
    assert [p.name for p in backup.backups()] == ["epoch-00000.weights.h5"]

    model = _dense_model()
    with pytest.raises(TrainingDiverged, match=r"non-finite weights"):
        model.fit(np.ones((16, 2)), y, batch_size=2, epochs=3, shuffle=False, verbose=0,
                  callbacks=[_Poison(weight_at_epoch=1), TrainingBackup(tmp_path / "b2")])
    assert int(model.optimizer.iterations) == 8  # back at the end of epoch 0
    for got, want in zip(model.get_weights(), clean.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_an_unreadable_backup_names_the_file_and_what_to_do(tmp_path):
    directory = tmp_path / "backup"
    model = _dense_model()
    model.fit(np.ones((4, 2)), np.ones((4, 1)), batch_size=2, epochs=2, verbose=0,
              callbacks=[TrainingBackup(directory, delete_on_finish=False)])
    (directory / "epoch-00002.weights.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match=r"epoch-00002\.weights\.h5 cannot be read .*delete "
                                         r"it to resume from epoch-00001.*--restart"):
        TrainingBackup(directory).restore(_dense_model())
    with pytest.raises(ValueError, match="keep"):
        TrainingBackup(directory, keep=0)


@pytest.mark.parametrize("setting, message", [
    ({"steps": -5}, "steps must be an int >= 1"), ({"steps": 0}, "steps must be"),
    ({"batch_size": 0}, "batch_size must be"), ({"batch_size": -1}, "batch_size must be"),
    ({"learning_rate": -1.0}, "learning_rate must be a finite number in \\(0"),
    ({"learning_rate": float("nan")}, "learning_rate"), ({"learning_rate": math.inf}, "learn"),
    ({"english_fraction": 1.5}, "english_fraction"), ({"seed": -1}, "seed must be"),
    ({"width": 30, "num_heads": 4}, "multiple of num_heads"), ({"steps": 2.5}, "steps"),
    ({"distribution": "ring"}, "Unknown distribution"), ({"ema_decay": 2.0}, "ema_decay"),
    ({"pool_size": -1}, "pool_size must be an int >= 0"), ({"pool_size": 1.5}, "pool_size"),
    ({"width": 18, "num_heads": 2}, "locca_position_codes needs a width divisible by 4"),
    ({"locca_task_weights": (1, -1, 1)}, "locca_task_weights must be three finite numbers"),
    ({"locca_causal_probability": 1.5}, r"locca_causal_probability must be a finite number"),
])
def test_main_job_settings_are_checked_up_front(setting, message):
    with pytest.raises(ValueError, match=message):
        MainJobConfig(**setting)


def test_train_rejects_bad_arguments_before_writing_anything(tmp_path, capsys):
    for args in (["--steps", "-5"], ["--steps", "0"], ["--batch-size", "0"],
                 ["--learning-rate", "-1"], ["--learning-rate", "nan"],
                 ["--locca-task-weights", "1,x,1"], ["--locca-task-weights", "1,2"]):
        with pytest.raises(SystemExit) as exited:
            main(["train", "--workdir", str(tmp_path / "run"), *args])
        assert exited.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        assert not (tmp_path / "run").exists()


def test_length_groups_reach_the_pool_where_tasks_are_drawn_one_per_image():
    groups = lambda **kw: main_job.pool_locca_tasks(MainJobConfig(**kw))  # noqa: E731
    assert groups()["locca_batch_tasks"] and groups()["locca_length_groups"]
    for off in ({"locca_all_tasks": True}, {"locca": False}, {"locca_length_groups": False}):
        assert not groups(**off)["locca_batch_tasks"] and not groups(**off)["locca_length_groups"]
    # Over several devices: the same batches, one array per key.
    assert groups(distribution="data_parallel") == {**groups(), "locca_length_groups": False}


def test_epochs_divide_the_steps():
    assert MainJobConfig(steps=1600).num_epochs == 10
    assert MainJobConfig(steps=15).num_epochs == 5 and MainJobConfig(steps=7).num_epochs == 7
    assert MainJobConfig(steps=13, epochs=4).num_epochs == 1


def test_a_run_of_other_settings_is_not_resumed_and_a_finished_one_not_retrained(tmp_path):
    workdir = tmp_path / "run"
    (workdir / "backup").mkdir(parents=True)
    (workdir / "config.json").write_text(MainJobConfig(steps=800).to_json())
    with pytest.raises(ValueError, match=r"other settings \(steps: 800 there, 3600 now\).*"
                                         r"--restart"):
        main_job.train(MainJobConfig(), workdir)
    (workdir / "checkpoint").mkdir()
    assert main_job.train(MainJobConfig(steps=800), workdir) == workdir / "checkpoint"
    assert not (workdir / "backup").exists()  # a kill had left it after the commit
    # A run's config.json from before `validation_scenes` existed, or with another value,
    # resumes: the validation does not change what is trained.
    saved = json.loads(MainJobConfig(steps=800).to_json())
    del saved["validation_scenes"]
    (workdir / "config.json").write_text(json.dumps(saved))
    for scenes in (0, 256, 64):
        assert main_job.train(MainJobConfig(steps=800, validation_scenes=scenes),
                              workdir) == workdir / "checkpoint"
    # From before the LocCa settings existed: the run had neither, so it goes on without them.
    del saved["locca_position_codes"], saved["locca_all_tasks"]
    (workdir / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="locca_position_codes: False there, True now"):
        main_job.train(MainJobConfig(steps=800), workdir)
    old = MainJobConfig(steps=800, locca_position_codes=False)
    assert main_job.train(old, workdir) == workdir / "checkpoint"
    # From before the task weights: its tasks were drawn uniformly.
    del saved["locca_task_weights"]
    (workdir / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"locca_task_weights: \[1.0, 1.0, 1.0\] there"):
        main_job.train(old, workdir)
    old = dataclasses.replace(old, locca_task_weights=(1, 1, 1))
    assert main_job.train(old, workdir) == workdir / "checkpoint"
    # From before the causal share: half its LocCa examples were in the parallel layout.
    del saved["locca_causal_probability"]
    (workdir / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"locca_causal_probability: 0.5 there, 1.0 now"):
        main_job.train(old, workdir)
    old = dataclasses.replace(old, locca_causal_probability=0.5)
    assert main_job.train(old, workdir) == workdir / "checkpoint"
    # From before the length groups: its LocCa tasks were drawn one example at a time.
    del saved["locca_length_groups"]
    (workdir / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"locca_length_groups: False there, True now"):
        main_job.train(old, workdir)
    old = dataclasses.replace(old, locca_length_groups=False)
    assert main_job.train(old, workdir) == workdir / "checkpoint"
    # A run of the 1 : 2 : 1 default resumes only with that mix (the default is now 1 : 3 : 1).
    (workdir / "config.json").write_text(MainJobConfig(steps=800, locca_task_weights=(1, 2, 1))
                                         .to_json())
    with pytest.raises(ValueError, match=r"locca_task_weights: \[1.0, 2.0, 1.0\] there, "
                                         r"\[1.0, 3.0, 1.0\] now"):
        main_job.train(MainJobConfig(steps=800), workdir)
    assert main_job.train(MainJobConfig(steps=800, locca_task_weights=(1, 2, 1)),
                          workdir) == workdir / "checkpoint"


def test_a_diverging_main_job_exits_with_one_line_and_keeps_its_backup(tmp_path, capsys):
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit) as exited:
        main(["train", "--workdir", str(workdir), "--steps", "4", "--epochs", "2",
              "--batch-size", "4", "--width", "16", "--depth", "1", "--max-num-patches", "16",
              "--learning-rate", "1e30", "--eval-examples", "0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Training diverged" in err[0], err
    # The first step has a learning rate of 0 (warm-up), the second one of 1e30.
    assert ("(step 2): non-finite " in err[0] and "_loss=" in err[0]) or (
        "(up to step 1): non-finite weights" in err[0]), err
    assert not (workdir / "checkpoint").exists() and not (workdir / "losses.png").exists()
    assert (workdir / "backup" / "epoch-00000.weights.h5").is_file()
    assert json.loads((workdir / "config.json").read_text())["learning_rate"] == 1e30
