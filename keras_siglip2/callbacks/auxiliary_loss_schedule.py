"""`AuxiliaryLossSchedule`: switches loss terms on late in training, as SigLIP 2 does."""

import math

import keras
from keras import ops


class AuxiliaryLossSchedule(keras.callbacks.Callback):
    """Gates `terms` off for the first `start_fraction` of training and on afterwards.

    SigLIP 2 adds its self-distillation and masked-prediction losses for the last 20% of
    training. Training step `s` (0-based, the value of `model.optimizer.iterations` before
    the step) runs with `model.term_gates[t] = 1.0` if `s >= start_fraction * total_steps`,
    else 0.0, for every `t` in `terms`; that first step is `self.start_step`. The gates are
    variables read by the compiled train step, so switching never recompiles, and they are
    assigned only when their value changes. A model with `skipped_terms` (e.g.
    `SigLIP2Trainer`) also leaves the terms out of its train step while they are off
    (one retrace at each switch), so they cost no compute then.

    Because the step comes from the optimizer, a run resumed by
    `keras.callbacks.BackupAndRestore` switches at the same step as an uninterrupted one.
    `total_steps` defaults to `steps * epochs` of the current `fit` call; pass it
    explicitly when training is split over several `fit` calls or the dataset length is
    unknown. With `steps_per_execution=k` the gates change at an execution boundary.

    Args:
        terms: keys of `model.term_gates` to schedule.
        start_fraction: fraction of `total_steps` after which the terms are on.
        total_steps: optimizer steps of the whole run.

    Example:
    >>> schedule = AuxiliaryLossSchedule(start_fraction=0.8, total_steps=1000)
    >>> schedule.start_step
    800

    In training: `model.fit(data, epochs=10, callbacks=[schedule])`, where `model` exposes
    `term_gates` (e.g. `SigLIP2Trainer`).
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
        self._gates_on = None
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
        gates = getattr(self.model, "term_gates", None)
        if gates is None:
            raise ValueError(
                f"AuxiliaryLossSchedule needs `model.term_gates`, a dict of loss-term name -> "
                f"gate variable; {type(self.model).__name__} has none."
            )
        unknown = [t for t in self.terms if t not in gates]
        if unknown:
            raise ValueError(
                f"AuxiliaryLossSchedule: unknown term(s) {unknown}; model.term_gates has "
                f"{sorted(gates)}."
            )
        if self.start_step is None:
            raise ValueError(
                "AuxiliaryLossSchedule needs the run's length: pass `total_steps`, or call "
                "fit with data of known length (or `steps_per_epoch`)."
            )
        self._gates_on = None
        self._skip_calls = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._skip_calls > 0:
            self._skip_calls -= 1
            return
        model = self.model  # On JAX this syncs the training state into the variables.
        step = int(ops.convert_to_numpy(model.optimizer.iterations))
        start = self.start_step
        on = step >= start
        if on != self._gates_on:
            value = 1.0 if on else 0.0
            for term in self.terms:
                gate = model.term_gates[term]
                if self._gates_on is not None or float(ops.convert_to_numpy(gate)) != value:
                    gate.assign(value)
            self._gates_on = on
            if hasattr(model, "skipped_terms"):  # retrace without the terms' compute
                skipped = set(model.skipped_terms) - set(self.terms)
                model.skipped_terms = frozenset(skipped if on else skipped | set(self.terms))
                model.make_train_function(force=True)
        # Iterations grow by at most `steps_per_execution` per call and never shrink within
        # a fit, so no read is needed until the switch could be reached (none once on).
        per_call = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        self._skip_calls = math.inf if on else math.ceil((start - step) / per_call) - 1
