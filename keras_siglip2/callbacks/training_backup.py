"""`TrainingBackup`: the whole training state, backed up atomically; a diverged run rolled back.

Keras's `BackupAndRestore` rewrites one HDF5 file in place, so a kill while it writes can
leave no readable backup, and it deletes its backup when `fit` ends however the run went.
This callback writes each backup to a temporary file and renames it (a kill leaves the
previous backup whole), keeps the last good state when a loss or weight goes non-finite, and
can restore before `fit` so that a data stream can be started where the run stopped.
"""

import os
import pathlib
import re
import shutil

import keras
import numpy as np
from keras import ops

from keras_siglip2.callbacks.ema_teacher import optimizer_step
from keras_siglip2.callbacks.terminate_on_nan import TerminateOnNaN, describe_non_finite

_BACKUP = re.compile(r"^epoch-(\d{5})\.weights\.h5$")
_PARTIAL = ".partial.weights.h5"


class TrainingDiverged(FloatingPointError):
    """A loss term or weight went non-finite; the model was put back to its last good state.

    Attributes:
        bad_terms: `{name: value}` of the non-finite logs (empty when only weights were).
        step: the 0-based optimizer step whose result was non-finite.
        backup: the backup file the model was restored from (it is kept).
    """

    def __init__(self, message, bad_terms, step, backup):
        super().__init__(message)
        self.bad_terms, self.step, self.backup = bad_terms, step, backup


class TrainingBackup(keras.callbacks.Callback):
    """Backs up the model and optimizer after every epoch; resumes `fit` from the newest backup.

    Each backup (`directory/epoch-EEEEE.weights.h5`: every weight of the model, e.g. an EMA
    teacher and DINO centres, with the optimizer's state and step) is written to a temporary
    file and renamed into place, so a run killed at any moment leaves whole backups only;
    the `keep` newest are kept. If `directory` holds none when training begins, the state at
    that moment is backed up first, so there always is a state to go back to.

    At the start of `fit`, the newest backup is loaded and `fit` continues after its epoch, as
    with `keras.callbacks.BackupAndRestore`. A data stream that is not re-read from its start
    each epoch (an endless `tf.data` pipeline) must start where the restored run stopped:
    call `restore(model)` before building it, and start the stream at the returned
    optimizer step times the batch size.

    After every batch (and at every epoch end, for the weights), a non-finite loss term or
    weight rolls the model back to the newest backup, which is kept, and raises
    `TrainingDiverged` naming the term and the step. The backup of an epoch is only
    written if every weight is finite.

    Place it first in `callbacks`, before callbacks that read the restored state in their
    `on_train_begin` (e.g. `EMATeacher(copy_on_train_begin=True)`).

    Args:
        directory: folder of the backups; give each run its own.
        keep: how many backups to keep (≥ 1).
        delete_on_finish: remove `directory` when `fit` completes without divergence.

    Example:
    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> x, y = np.ones((8, 2)), np.ones((8, 1))
    >>> backup = TrainingBackup(directory, delete_on_finish=False)
    >>> _ = model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[backup])
    >>> [path.name for path in backup.backups()]
    ['epoch-00002.weights.h5', 'epoch-00003.weights.h5']
    >>> resumed = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> resumed.compile(optimizer="sgd", loss="mse")
    >>> TrainingBackup(directory).restore(resumed), int(resumed.optimizer.iterations)
    (3, 6)
    """

    def __init__(self, directory, keep=2, delete_on_finish=True):
        super().__init__()
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"TrainingBackup: `keep` must be an int >= 1; got {keep!r}.")
        self.directory = pathlib.Path(directory)
        self.keep = keep
        self.delete_on_finish = delete_on_finish
        self._restored_model = None
        self._last_finite_logs = None

    def backups(self):
        """The complete backups in `directory`, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir()
                 if (m := _BACKUP.match(p.name))]
        return [p for _, p in sorted(found)]

    def restore(self, model):
        """Loads the newest backup into `model`; returns its epoch (0 when there is none).

        The model must be built and compiled. An unreadable backup raises a ValueError that
        names the file and what to do.
        """
        self._restored_model = model
        backups = self.backups()
        if not backups:
            return 0
        _load(model, backups[-1], backups[:-1])
        return int(_BACKUP.match(backups[-1].name).group(1))

    def on_train_begin(self, logs=None):
        model = self.model
        for stale in self.directory.glob(f"*{_PARTIAL}"):  # a write that a kill cut short
            stale.unlink()
        if self._restored_model is not model:
            epoch = self.restore(model)
            if epoch:
                model._initial_epoch = epoch  # how Keras's fit starts after an epoch
        self._restored_model = None
        if not self.backups():
            self._write(model, 0)
        self._last_finite_logs = None

    def on_train_batch_end(self, batch, logs=None):
        bad = TerminateOnNaN.non_finite(logs)
        if not bad:
            self._last_finite_logs = dict(logs or {})
            return
        model = self.model  # On JAX this syncs the training state into the variables.
        bad_terms, message = describe_non_finite(model, batch, logs, bad,
                                                 self._last_finite_logs)
        self._roll_back(model, bad_terms, message.split("; training stopped")[0])

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        bad = [v.path for v in model.weights if not _finite(v)]
        if bad:
            self._roll_back(model, {}, f"Epoch {epoch} (up to step {optimizer_step(model) - 1}): "
                                       f"non-finite weights {bad[:3]}")
        self._write(model, epoch + 1)

    def on_train_end(self, logs=None):
        if self.delete_on_finish and self.directory.exists():
            shutil.rmtree(self.directory)

    def _write(self, model, epoch):
        optimizer = model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(model.trainable_variables)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"epoch-{epoch:05d}.weights.h5"
        partial = self.directory / f".{path.name[:-len('.weights.h5')]}{_PARTIAL}"
        model.save_weights(str(partial), overwrite=True)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, path)
        _fsync_directory(self.directory)
        for old in self.backups()[:-self.keep]:
            old.unlink()

    def _roll_back(self, model, bad_terms, what):
        step = optimizer_step(model) - 1
        backups = self.backups()
        _load(model, backups[-1], backups[:-1])
        good = optimizer_step(model)
        raise TrainingDiverged(
            f"Training diverged: {what}. The model holds its last good state again (step "
            f"{good}, kept in {backups[-1]}); lower the learning rate, or look for bad data "
            f"near step {step}.",
            bad_terms, step, backups[-1],
        )


def _load(model, path, older):
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    try:
        model.load_weights(str(path))
    except Exception as e:  # h5py and Keras raise OSError, ValueError, KeyError, ...
        what = f"delete it to resume from {older[-1].name}, or " if older else ""
        reason = " ".join(str(e).split())[:200]
        raise ValueError(
            f"The training backup {path} cannot be read ({type(e).__name__}: {reason}): "
            f"{what}delete {path.parent} to start over (`train --restart` does)."
        ) from e


def _finite(variable):
    value = ops.convert_to_numpy(variable)
    return not np.issubdtype(value.dtype, np.floating) or bool(np.isfinite(value).all())


def _fsync_directory(directory):
    """Makes a rename in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

