"""`EMATeacher`: keeps a self-distillation teacher at a moving average of its student."""

import contextlib
import math

import keras
import numpy as np
from keras import ops


class EMATeacher(keras.callbacks.Callback):
    """After every training step, `teacher = decay * teacher + (1 - decay) * student`.

    Applies to every `(teacher, student)` variable pair in `model.ema_pairs`, computed in
    float32 and cast back to the teacher's dtype. The step is read from
    `model.optimizer.iterations`, so a run resumed by `keras.callbacks.BackupAndRestore`
    continues the schedule where it stopped.

    Step `s` is the 0-based index of the optimizer step that just finished; its decay is 0
    (the teacher becomes a copy of the student) while `s < warmup_steps`, else `decay` (or
    `decay(s)` when `decay` is callable). With `warmup_steps` equal to the step at which
    the self-distillation losses switch on (see `AuxiliaryLossSchedule`) the teacher starts
    averaging from the student of that moment. SILC keeps the momentum fixed; DINO ramps
    it from 0.996 to 1.0 on a cosine (the example below).

    With `steps_per_execution=k` the callback runs once per k steps; those k steps are
    folded into one update with decay `Π_s decay(s)` (exact if the student were constant
    over them). Under gradient accumulation the teacher moves once per optimizer update.
    On JAX each update syncs the training state into the variables (as any callback that
    reads weights mid-epoch does) and then runs one jitted function over all the pairs.

    Args:
        decay: a float in [0, 1], or a callable `step -> decay`.
        warmup_steps: steps during which the teacher is set to the student.
        copy_on_train_begin: at the start of `fit`, set teacher = student if no optimizer
            step has been taken yet (a resumed run keeps its restored teacher).

    Example:
    >>> def dino_momentum(step, total_steps=1000, base=0.996):
    ...     return 1 - (1 - base) * (math.cos(math.pi * step / total_steps) + 1) / 2
    >>> ema = EMATeacher(decay=dino_momentum, warmup_steps=10)
    >>> ema.decay_at(5), round(ema.decay_at(10), 6), ema.decay_at(1000)
    (0.0, 0.996001, 1.0)

    In training: `model.fit(data, callbacks=[EMATeacher(0.999)])`, where `model` exposes
    `ema_pairs` (e.g. `SigLIP2Trainer`).
    """

    def __init__(self, decay=0.999, warmup_steps=0, copy_on_train_begin=False):
        super().__init__()
        if not callable(decay):
            _check_decay(decay)
        self.decay = decay
        self.warmup_steps = int(warmup_steps)
        self.copy_on_train_begin = copy_on_train_begin
        self._update = None
        self._last_step = None

    def decay_at(self, step):
        """The decay of the update that follows optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            return 0.0
        return _check_decay(self.decay(step) if callable(self.decay) else self.decay)

    def on_train_begin(self, logs=None):
        model = self.model
        pairs = list(getattr(model, "ema_pairs", None) or [])
        if not pairs:
            raise ValueError(
                f"EMATeacher needs `model.ema_pairs`, a non-empty list of (teacher, student) "
                f"variable pairs; {type(model).__name__} has none."
            )
        for teacher, student in pairs:
            if tuple(teacher.shape) != tuple(student.shape):
                raise ValueError(
                    f"EMATeacher: teacher {teacher.path} {tuple(teacher.shape)} and student "
                    f"{student.path} {tuple(student.shape)} differ in shape."
                )
        teachers, students = zip(*pairs)
        self._update = _ema_update_fn(list(teachers), list(students))
        self._last_step = None
        if self.copy_on_train_begin and optimizer_step(model) == 0:
            self._update(0.0)

    def on_train_batch_begin(self, batch, logs=None):
        if self._last_step is None:
            # Read once per fit, after every on_train_begin (BackupAndRestore restores the
            # iterations there); at the first batch the state is already synced, so it's free.
            self._last_step = optimizer_step(self.model)

    def on_train_batch_end(self, batch, logs=None):
        model = self.model  # On JAX this syncs the training state into the variables.
        step = optimizer_step(model)
        if step <= self._last_step:  # Gradient accumulation: no optimizer update yet.
            return
        decay = math.prod(self.decay_at(s) for s in range(self._last_step, step))
        self._last_step = step
        self._update(decay)


def _check_decay(decay):
    decay = float(decay)
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMATeacher: decay must lie in [0, 1], got {decay}.")
    return decay


def optimizer_step(model):
    """The optimizer's iteration count as an int (on JAX mid-epoch, read after a sync)."""
    return int(ops.convert_to_numpy(model.optimizer.iterations))


def _ema(decay, teacher, student):
    value = decay * ops.cast(teacher, "float32") + (1.0 - decay) * ops.cast(student, "float32")
    return ops.cast(value, teacher.dtype)


def _ema_update_fn(teachers, students):
    """`update(decay)` assigning the EMA to every teacher, compiled once per backend.

    Eagerly, each variable would cost several dispatches per step; JAX jits one function
    over all the arrays and TensorFlow traces one `tf.function` (decay is a tensor argument
    so neither retraces). Torch runs eagerly without building an autograd graph.
    """
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        @jax.jit
        def ema_all(decay, teacher_values, student_values):
            return [_ema(decay, t, s) for t, s in zip(teacher_values, student_values)]

        def update(decay):
            new = ema_all(
                np.float32(decay), [t.value for t in teachers], [s.value for s in students]
            )
            for teacher, value in zip(teachers, new):
                teacher.assign(value)

        return update
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(autograph=False)
        def assign_all(decay):
            for teacher, student in zip(teachers, students):
                teacher.assign(_ema(decay, teacher.value, student.value))

        return lambda decay: assign_all(tf.constant(decay, tf.float32))

    if backend == "torch":
        import torch

        no_grad = torch.no_grad
    else:
        no_grad = contextlib.nullcontext

    def update(decay):
        with no_grad():
            for teacher, student in zip(teachers, students):
                teacher.assign(_ema(decay, teacher.value, student.value))

    return update
