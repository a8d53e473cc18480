"""`StepLog`: every training step's logs in a CSV file, kept across resumed runs."""

import csv
import os

import keras

from keras_siglip2.callbacks.ema_teacher import optimizer_step


class StepLog(keras.callbacks.Callback):
    """Appends `step, <value>...` after every training step to the CSV file `path`.

    `fit`'s history keeps one value per epoch, and its per-step logs are running means over
    the epoch; loss curves want each step's own value, which this recovers. The step is
    the optimizer's iteration count, so a run resumed by `keras.callbacks.BackupAndRestore`
    appends after the restored step, and `read(path)` keeps the last row written for each
    step (the re-run one). A row that a kill cut short is dropped when training begins.

    Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "steps.csv")
    >>> model = keras.Sequential([keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> _ = model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=4, epochs=2, verbose=0,
    ...               callbacks=[StepLog(path)])
    >>> log = StepLog.read(path)
    >>> log["step"], len(log["loss"])
    ([1, 2, 3, 4], 4)
    """

    def __init__(self, path):
        super().__init__()
        self.path = os.fspath(path)
        self._means, self._count = {}, 0

    def on_train_begin(self, logs=None):
        self._step = None
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb+") as f:
            text = f.read()
            if text and not text.endswith(b"\n"):
                f.truncate(text.rfind(b"\n") + 1)

    def on_train_batch_begin(self, batch, logs=None):
        if self._step is None:  # after every on_train_begin (a restore); the state is synced
            self._step = optimizer_step(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._means, self._count = {}, 0

    def on_train_batch_end(self, batch, logs=None):
        # Keras logs each metric's running mean over the epoch: the n-th step's own value
        # is n·mean_n − (n−1)·mean_(n−1).
        # Counted, not read from the model: on JAX reading a variable mid-epoch copies the
        # whole training state back into the model each step.
        self._step += 1
        step = self._step
        means = {k: float(v) for k, v in (logs or {}).items()}
        n = self._count = self._count + 1
        row = {"step": step}
        for key, mean in means.items():
            row[key] = n * mean - (n - 1) * self._means.get(key, 0.0) if n > 1 else mean
        self._means = means
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    @staticmethod
    def read(path):
        """The log as a dict of columns, one row per step (the last one written)."""
        with open(path, newline="") as f:
            rows = {int(r["step"]): r for r in csv.DictReader(f)}
        steps = sorted(rows)
        columns = {"step": steps}
        for key in rows[steps[0]] if steps else ():
            if key != "step":
                columns[key] = [float(rows[s][key]) for s in steps]
        return columns
