"""`AuxiliaryLossSchedule`: switches loss terms on late in training, as SigLIP 2 does."""

import math

import keras
from keras import ops


class AuxiliaryLossSchedule(keras.callbacks.Callback):
    """Skips `terms` for the first `start_fraction` of training and computes them afterwards.

    SigLIP 2 adds its self-distillation and masked-prediction losses for the last 20% of
    training. Training step `s` (0-based, the value of `model.optimizer.iterations` before
    the step) runs with `terms` in `model.skipped_terms` (not computed, logged as 0) if
    `s < start_fraction * total_steps`, else with them computed; that first step is
    `self.start_step`. `model.skipped_terms` is assigned only when it changes (the model
    retraces its train step then: `SigLIP2Trainer` does), so the terms cost no compute
    while off.

    Because the step comes from the optimizer, a run resumed by
    `keras.callbacks.BackupAndRestore` switches at the same step as an uninterrupted one.
    `total_steps` defaults to `steps * epochs` of the current `fit` call; pass it
    explicitly when training is split over several `fit` calls or the dataset length is
    unknown. With `steps_per_execution=k` the terms switch at an execution boundary.

    Args:
        terms: names of `model.terms` to schedule.
        start_fraction: fraction of `total_steps` after which the terms are on.
        total_steps: optimizer steps of the whole run.

    Example:
    >>> schedule = AuxiliaryLossSchedule(start_fraction=0.8, total_steps=1000)
    >>> schedule.start_step
    800

    In training: `model.fit(data, epochs=10, callbacks=[schedule])`, where `model` exposes
    `terms` and a settable `skipped_terms` (e.g. `SigLIP2Trainer`).
    """

    def __init__(
        self,
        terms=("self_distillation_loss", "masked_prediction_loss"),
        start_fraction=0.8,
        total_steps=None,
    ):
        super().__init__()
        if not 0.0 <= start_fraction <= 1.0:
            raise ValueError(f"start_fraction must lie in [0, 1], got {start_fraction}.")
        self.terms = (terms,) if isinstance(terms, str) else tuple(terms)
        self.start_fraction = start_fraction
        self.total_steps = total_steps
        self._terms_on = None
        self._skip_calls = 0

    @property
    def start_step(self):
        """The first step with the terms on; None until `total_steps` is known."""
        total = self.total_steps or self._fit_steps()
        # round() first: 0.7 * 10 is 7.000000000000001, whose ceil would be 8.
        return None if total is None else math.ceil(round(self.start_fraction * total, 9))

    def _fit_steps(self):
        params = self.params or {}
        if params.get("steps") and params.get("epochs"):
            return params["steps"] * params["epochs"]
        return None

    def on_train_begin(self, logs=None):
        model = self.model
        if not hasattr(model, "skipped_terms") or not hasattr(model, "terms"):
            raise ValueError(
                f"AuxiliaryLossSchedule needs `model.terms` (the loss-term names) and a "
                f"settable `model.skipped_terms`; {type(model).__name__} has none."
            )
        unknown = [t for t in self.terms if t not in model.terms]
        if unknown:
            raise ValueError(
                f"AuxiliaryLossSchedule: unknown term(s) {unknown}; model.terms are "
                f"{list(model.terms)}."
            )
        if self.start_step is None:
            raise ValueError(
                "AuxiliaryLossSchedule needs the run's length: pass `total_steps`, or call "
                "fit with data of known length (or `steps_per_epoch`)."
            )
        self._terms_on = None
        self._skip_calls = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._skip_calls > 0:
            self._skip_calls -= 1
            return
        model = self.model  # On JAX this syncs the training state into the variables.
        step = int(ops.convert_to_numpy(model.optimizer.iterations))
        start = self.start_step
        on = step >= start
        if on != self._terms_on:
            others = set(model.skipped_terms) - set(self.terms)
            skipped = frozenset(others if on else others | set(self.terms))
            if skipped != model.skipped_terms:
                model.skipped_terms = skipped
            self._terms_on = on
        # Iterations grow by at most `steps_per_execution` per call and never shrink within
        # a fit, so no read is needed until the switch could be reached (none once on).
        per_call = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        self._skip_calls = math.inf if on else math.ceil((start - step) / per_call) - 1
