"""`StepLog`: every training step's logs in a CSV file, kept across resumed runs;
`StepProgress`: one progress line per epoch, with steps/s and the time left."""

import os
import time

import keras

from keras_siglip2.callbacks.csv_rows import append_row, read_columns
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
        append_row(self.path, row)

    @staticmethod
    def read(path):
        """The log as a dict of columns, one row per step (the last one written)."""
        return read_columns(path, "step")


class StepProgress(keras.callbacks.Callback):
    """Prints one line per epoch: the step, steps/s, time elapsed and left, the epoch's mean
    of each log (for `fit(verbose=0)`, in place of Keras's progress bar).

    `step 320/1600 - 4.12 steps/s - 1m 20s elapsed, 5m 10s left - loss: 17.5931 - ...`

    The step counts from `fit`'s `initial_epoch` (`steps_per_epoch` each), so a resumed run
    goes on from where it was. Steps/s is over the last epoch, its backup and callbacks
    included, and without the first step in this process (which compiles). Time is read on
    the host only: no value is fetched from the model.

    Example:
    >>> model = keras.Sequential([keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> _ = model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=4, epochs=2, verbose=0,
    ...               callbacks=[StepProgress(print_fn=lambda line: print(line[:8]))])
    step 2/4
    step 4/4
    """

    def __init__(self, print_fn=None):
        super().__init__()
        self.print_fn = print_fn or (lambda line: print(line, flush=True))

    def on_train_begin(self, logs=None):
        self._start = time.monotonic()
        self._mark = None  # (time, step) after the first step, then after each epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._epoch_start = epoch, time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if self._mark is None:
            self._mark = (time.monotonic(), self._epoch * self.params["steps"] + batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        now, per_epoch = time.monotonic(), self.params["steps"]
        step, total = (epoch + 1) * per_epoch, self.params["epochs"] * per_epoch
        since, done = self._mark or (self._epoch_start, epoch * per_epoch)
        if step <= done:  # an epoch of one step, just after compiling: count it
            since, done = self._epoch_start, epoch * per_epoch
        rate = (step - done) / max(now - since, 1e-9)
        self._mark = (now, step)
        items = [f"step {step}/{total}", f"{rate:.3g} steps/s",
                 f"{_duration(now - self._start)} elapsed, "
                 f"{_duration((total - step) / rate)} left"]
        items += [f"{k}: {float(v):.4g}" for k, v in sorted((logs or {}).items(),
                                                              key=lambda kv: kv[0] != "loss")]
        self.print_fn(" - ".join(items))


def _duration(seconds):
    """`seconds` as `1h 02m`, `4m 05s` or `7s`.

    Example:
    >>> _duration(3725), _duration(245.2), _duration(7.4)
    ('1h 02m', '4m 05s', '7s')
    """
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"
