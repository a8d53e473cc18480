"""`TerminateOnNaN` that names the loss term(s) that went non-finite."""

import math

import keras
from keras import ops


class TerminateOnNaN(keras.callbacks.TerminateOnNaN):
    """Stops training when `loss` or any other logged value is NaN or inf.

    Unlike Keras's callback, it checks every scalar in the batch logs (one per loss term
    for `SigLIP2Trainer`), so the message says which term diverged, e.g.
    `Batch 12 (step 112): non-finite self_distillation_loss=nan (loss=nan); training
    stopped. Last finite logs: {...}`. Batch logs are running means over the epoch, so
    "last finite logs" are those of the last batch before the failure.

    Args:
        raise_error: if True, raise `FloatingPointError` with that message instead of
            setting `model.stop_training` (other callbacks' `on_train_end` then won't run).

    Attributes:
        bad_terms: `{name: value}` of the non-finite entries, without `loss` unless it is
            the only one; empty while training is healthy.
        message: the message, or None.

    Example:
    >>> nan, inf = float("nan"), float("inf")
    >>> TerminateOnNaN.non_finite({"loss": nan, "locca_loss": 1.0, "sigmoid_loss": inf})
    {'loss': nan, 'sigmoid_loss': inf}
    """

    def __init__(self, raise_error=False):
        keras.callbacks.Callback.__init__(self)  # Older Keras has no raise_error argument.
        self.raise_error = raise_error
        self.bad_terms = {}
        self.message = None
        self._last_finite_logs = None

    @staticmethod
    def non_finite(logs):
        """The scalar entries of `logs` that are NaN or inf."""
        bad = {}
        for name, value in (logs or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError, RuntimeError):
                continue  # Not a scalar.
            if not math.isfinite(value):
                bad[name] = value
        return bad

    def on_train_begin(self, logs=None):
        self.bad_terms, self.message, self._last_finite_logs = {}, None, None

    def on_batch_end(self, batch, logs=None):
        bad = self.non_finite(logs)
        if not bad:
            self._last_finite_logs = dict(logs or {})
            return
        self.bad_terms, self.message = describe_non_finite(
            self.model, batch, logs, bad, self._last_finite_logs
        )
        if self.raise_error:
            raise FloatingPointError(self.message)
        print(self.message)
        self.model.stop_training = True


def describe_non_finite(model, batch, logs, bad, last_finite_logs):
    """`(bad_terms, message)` for batch logs whose entries `bad` are non-finite.

    `bad_terms` leaves out `loss` unless it is the only one; the message names the batch,
    the 0-based step that just ran (when `model` has an optimizer), the terms and the last
    finite logs.
    """
    bad_terms = {k: v for k, v in bad.items() if k != "loss"} or bad
    terms = ", ".join(f"{k}={v}" for k, v in bad_terms.items())
    total = f" (loss={logs['loss']})" if "loss" in logs and "loss" not in bad_terms else ""
    where = f"Batch {batch}"
    if getattr(model, "optimizer", None) is not None:  # The index of the step that just ran.
        where += f" (step {int(ops.convert_to_numpy(model.optimizer.iterations)) - 1})"
    message = (
        f"{where}: non-finite {terms}{total}; training stopped. "
        f"Last finite logs: {last_finite_logs}"
    )
    return bad_terms, message
