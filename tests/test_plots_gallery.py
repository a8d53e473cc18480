"""The main job's figures (losses, validation curves, prediction gallery), its per-epoch
validation measures and its TensorBoard logs."""

import csv
import textwrap

import numpy as np
import pytest
from PIL import Image

import keras

from keras_siglip2 import main_job
from keras_siglip2.callbacks import StepLog, ValidationEvaluation
from keras_siglip2.checkpoint import load_checkpoint
from keras_siglip2.testing import save_tiny_random_checkpoint
from keras_siglip2.gallery import gallery_predictions, plot_gallery, prediction_gallery
from keras_siglip2.plots import plot_curves, plot_losses, plot_validation

VALIDATION_KEYS = ["val_box_iou", "val_colour", "val_shape", "val_t2i_r1"]


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # a truncated file fails here
        return image.size


def _switch_lines(ax, step):
    return [line for line in ax.get_lines() if list(line.get_xdata()) == [step, step]]


def test_losses_from_a_step_log_mark_the_switch_on(tmp_path):
    steps = np.arange(1, 101)
    path = tmp_path / "steps.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "sigmoid_loss", "self_distillation_loss"])
        for s in steps:
            aux = 0.0 if s <= 80 else 2.0 - s / 100
            writer.writerow([s, 20 / s**0.8 + aux, 20 / s**0.8, aux])
    figure = plot_losses(StepLog.read(path), tmp_path / "losses.png", switch_on_step=80,
                         switch_on_label="SILC + TIPS on after step")
    assert _png_size(tmp_path / "losses.png") == (1000, 550)
    ax = figure.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_yscale()) == (
        "step", "loss (log scale)", "log")
    assert len(_switch_lines(ax, 80)) == 1
    assert [t.get_text() for t in ax.texts] == ["SILC + TIPS on after step 80"]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["total loss", "sigmoid loss", "self distillation loss"]
    # Each term twice (each step, smoothed); zeros (switched off) are not drawn on log axes.
    drawn = [line for line in ax.get_lines() if len(line.get_xdata()) == 100]
    assert len(drawn) == 6 and np.isnan(drawn[4].get_ydata()[:80]).all()
    assert not plot_losses({"step": [1, 2], "loss": [2.0, 1.0]}).axes[0].get_yscale() == "log"


def test_validation_curves_and_the_guides_curves(tmp_path):
    log = {"epoch": [1, 2, 3], "step": [10, 20, 30], "val_colour": [0.2, 0.5, 0.9],
           "val_shape": [0.1, 0.2, 0.4], "val_t2i_r1": [0.0, 0.1, 0.3]}
    figure = plot_validation(log, tmp_path / "evaluation.png", switch_on_step=24)
    assert _png_size(tmp_path / "evaluation.png") == (800, 450)
    ax = figure.axes[0]
    assert ax.get_xlabel() == "step" and ax.get_ylim() == (0, 1)
    assert [line.get_label() for line in ax.get_lines()][:3] == [
        "zero-shot colour accuracy", "zero-shot shape accuracy", "text→image recall@1"]
    assert len(_switch_lines(ax, 24)) == 1
    figure = plot_curves({"a": [3.0, 2.0], "b": [1.0, 2.0, 4.0]}, tmp_path / "curves.png")
    assert _png_size(tmp_path / "curves.png") == (640, 320)
    assert [ax.get_title() for ax in figure.axes] == ["a", "b"]


class _History(keras.callbacks.Callback):
    """Keeps `fit`'s History (after every other callback has written the epoch's logs)."""

    def on_train_end(self, logs=None):
        self.history = dict(self.model.history.history)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny main job: 4 steps in 2 epochs, 8 validation scenes, TensorBoard logs."""
    workdir = tmp_path_factory.mktemp("run")
    config = main_job.MainJobConfig(steps=4, epochs=2, batch_size=4, width=16, depth=1,
                                    max_num_patches=16, validation_scenes=8)
    history = _History()
    main_job.train(config, workdir, verbose=0, tensorboard=True, callbacks=[history])
    return workdir, history.history


def test_the_main_job_measures_every_epoch_into_history_csv_plot_and_tensorboard(tiny_run):
    workdir, history = tiny_run
    assert sorted(k for k in history if k.startswith("val_")) == VALIDATION_KEYS
    assert all(len(history[k]) == 2 for k in VALIDATION_KEYS)
    log = ValidationEvaluation.read(workdir / "validation.csv")
    assert log["epoch"] == [1, 2] and log["step"] == [2, 4]
    for key in VALIDATION_KEYS:
        np.testing.assert_allclose(log[key], history[key], rtol=1e-6)
        assert all(0 <= v <= 1 for v in log[key])
    assert _png_size(workdir / "losses.png") == (1000, 550)
    assert _png_size(workdir / "evaluation.png") == (800, 450)

    import tensorflow as tf

    tags = {}
    for run in ("train", "validation"):
        files = sorted((workdir / "tensorboard" / run).glob("events.out.tfevents.*"))
        assert files, run
        events = [tf.compat.v1.Event.FromString(record.numpy())
                  for f in files for record in tf.data.TFRecordDataset(str(f))]
        tags[run] = {v.tag for e in events for v in e.summary.value}
    assert {"epoch_loss", "epoch_sigmoid_loss", "epoch_locca_loss"} <= tags["train"]
    assert {f"epoch_{k[4:]}" for k in VALIDATION_KEYS} <= tags["validation"]


def test_a_resumed_run_keeps_the_earlier_epochs_rows(tmp_path):
    path = tmp_path / "validation.csv"
    path.write_text("epoch,step,val_colour\n1,2,0.25\n2,4,0.5\n2,4,0.")  # cut by a kill
    callback = ValidationEvaluation(None, None, path=path)
    callback.on_train_begin()
    with open(path, "a") as f:
        f.write("2,4,0.75\n3,6,1.0\n")  # epoch 2 measured again after the restore
    assert ValidationEvaluation.read(path) == {
        "epoch": [1, 2, 3], "step": [2, 4, 6], "val_colour": [0.25, 0.75, 1.0]}


def test_the_gallery_of_a_trained_checkpoint_with_and_without_decoder(tiny_run, tmp_path):
    workdir, _ = tiny_run
    model = load_checkpoint(workdir / "checkpoint")
    predictions = gallery_predictions(model)
    assert [len(p["top"]["colour"]) for p in predictions] == [3] * 8
    assert all(p["predicted_box"].shape == (4,) for p in predictions)
    assert all(abs(sum(prob for _, prob in p["top"]["shape"])) <= 1 + 1e-6
               for p in predictions)
    figure = plot_gallery(predictions, workdir / "gallery.png")
    assert _png_size(workdir / "gallery.png") == (1320, 920)
    assert len(figure.axes) == 8
    for ax in figure.axes:
        assert len(ax.patches) == 2 and "IoU" in ax.get_xlabel()
        assert ax.get_xlabel().startswith("colour: ") and ax.get_title()
    # A fixed-resolution checkpoint without a decoder: the ground-truth box only.
    random = load_checkpoint(save_tiny_random_checkpoint(tmp_path / "random"))
    figure = prediction_gallery(random, tmp_path / "gallery.png", num_images=3, columns=2)
    assert _png_size(tmp_path / "gallery.png") == (660, 920)
    assert [len(ax.patches) for ax in figure.axes[:3]] == [1, 1, 1]
    assert "(no decoder)" in figure.axes[0].get_xlabel()
    assert not figure.axes[3].axison  # the empty fourth cell
    assert plot_gallery(predictions[:1], columns=1).axes[0].get_title() == "\n".join(
        textwrap.wrap(predictions[0]["caption"], 44))
