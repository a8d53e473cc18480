"""EMATeacher, AuxiliaryLossSchedule and TerminateOnNaN under real `fit` on a stand-in trainer."""

import math

import numpy as np
import pytest

import keras
from keras import ops

from keras_siglip2.callbacks import AuxiliaryLossSchedule, EMATeacher, TerminateOnNaN

TERMS = ("sigmoid_loss", "self_distillation_loss", "masked_prediction_loss")


class StandIn(keras.Model):
    """SigLIP2Trainer's callback interface on a Dense student and a same-shaped teacher.

    The input's last column scales the masked-prediction term through a log, so a batch with
    a negative there makes exactly that term NaN.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.student = keras.layers.Dense(3, name="student")
        self.teacher = keras.layers.Dense(3, name="teacher", trainable=False)
        self.terms = list(TERMS)
        self.term_trackers = [keras.metrics.Mean(name=t) for t in TERMS]
        self._skipped_terms = frozenset()
        self.switches = []

    def build(self, input_shape):
        self.student.build(input_shape)
        self.teacher.build(input_shape)
        # Different initial teacher, so that an update that ignored it would show.
        self.teacher.set_weights([w + 0.5 for w in self.student.get_weights()])

    @property
    def ema_pairs(self):
        return list(zip(self.teacher.weights, self.student.weights))

    @property
    def skipped_terms(self):
        return self._skipped_terms

    @skipped_terms.setter
    def skipped_terms(self, names):
        self._skipped_terms = frozenset(names)
        self.switches.append(self._skipped_terms)
        if self.train_function is not None:
            self.make_train_function(force=True)

    def call(self, x):
        return self.student(x)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        teacher = ops.stop_gradient(self.teacher(x))
        terms = {
            "sigmoid_loss": ops.mean(ops.square(y_pred - y)),
            "self_distillation_loss": ops.mean(ops.square(y_pred - teacher)),
            "masked_prediction_loss": ops.mean(ops.abs(y_pred)) * ops.mean(ops.log(x[:, -1])),
        }
        total = 0.0
        for tracker in self.term_trackers:
            term = 0.0 if tracker.name in self.skipped_terms else terms[tracker.name]
            tracker.update_state(term)
            total = total + term
        return total

    @property
    def metrics(self):
        return super().metrics + self.term_trackers


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = StandIn()
    model.build((None, 4))
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    return model


def make_data(n, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    x[:, -1] = rng.uniform(1.5, 3.0, n)  # log > 0: the masked-prediction term is positive.
    return x, rng.normal(size=(n, 3)).astype("float32")


class Recorder(keras.callbacks.Callback):
    """Student and teacher weights, skipped terms and logs after every training batch."""

    def __init__(self):
        super().__init__()
        self.students, self.teachers, self.skipped, self.logs = [], [], [], []

    def on_train_batch_end(self, batch, logs=None):
        model = self.model
        self.students.append([ops.convert_to_numpy(v) for v in model.student.weights])
        self.teachers.append([ops.convert_to_numpy(v) for v in model.teacher.weights])
        self.skipped.append(model.skipped_terms)
        self.logs.append(dict(logs))


def ema_reference(teacher, students, decays):
    teacher = [w.astype("float32") for w in teacher]
    for student, d in zip(students, decays):
        d = np.float32(d)
        teacher = [d * t + (np.float32(1) - d) * s for t, s in zip(teacher, student)]
    return teacher


def test_teacher_follows_the_ema_of_the_recorded_students():
    model, recorder = make_model(), Recorder()
    initial_teacher = [ops.convert_to_numpy(v) for v in model.teacher.weights]
    x, y = make_data(24)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[EMATeacher(0.9), recorder])
    assert len(recorder.students) == 12
    for n in (1, 5, 12):  # Inside an epoch, across the boundary, at the end.
        want = ema_reference(initial_teacher, recorder.students[:n], [0.9] * n)
        for got, expected in zip(recorder.teachers[n - 1], want):
            np.testing.assert_allclose(got, expected, atol=1e-6)
    final = [ops.convert_to_numpy(v) for v in model.teacher.weights]
    for got, expected in zip(final, recorder.teachers[-1]):
        np.testing.assert_array_equal(got, expected)
    # The teacher moved away from both its start and the student.
    assert np.abs(final[0] - initial_teacher[0]).max() > 1e-2
    assert np.abs(final[0] - recorder.students[-1][0]).max() > 1e-3


def test_scheduled_decay_with_warmup():
    def decay(step):
        return 0.5 + 0.05 * step

    model, recorder = make_model(), Recorder()
    initial_teacher = [ops.convert_to_numpy(v) for v in model.teacher.weights]
    ema = EMATeacher(decay, warmup_steps=2)
    assert [ema.decay_at(s) for s in (0, 1, 2, 5)] == [0.0, 0.0, 0.6, 0.75]
    x, y = make_data(20)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[ema, recorder])
    for got, expected in zip(recorder.teachers[1], recorder.students[1]):
        np.testing.assert_array_equal(got, expected)  # Warmup: a copy of the student.
    want = ema_reference(initial_teacher, recorder.students, [0, 0, 0.6, 0.65, 0.7])
    for got, expected in zip(recorder.teachers[-1], want):
        np.testing.assert_allclose(got, expected, atol=1e-6)

    # A second fit continues the step count from the optimizer.
    before = [ops.convert_to_numpy(v) for v in model.teacher.weights]
    recorder = Recorder()
    model.fit(x[:8], y[:8], batch_size=4, epochs=1, verbose=0, callbacks=[ema, recorder])
    want = ema_reference(before, recorder.students, [0.75, 0.8])
    for got, expected in zip(recorder.teachers[-1], want):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_copy_on_train_begin_only_before_the_first_step():
    model, recorder = make_model(), Recorder()
    initial_student = [ops.convert_to_numpy(v) for v in model.student.weights]
    ema = EMATeacher(0.9, copy_on_train_begin=True)
    x, y = make_data(8)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[ema, recorder])
    want = ema_reference(initial_student, recorder.students, [0.9, 0.9])
    for got, expected in zip(recorder.teachers[-1], want):
        np.testing.assert_allclose(got, expected, atol=1e-6)

    before, recorder = [ops.convert_to_numpy(v) for v in model.teacher.weights], Recorder()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[ema, recorder])
    want = ema_reference(before, recorder.students, [0.9, 0.9])  # No second copy.
    for got, expected in zip(recorder.teachers[-1], want):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_ema_folds_steps_per_execution():
    if keras.config.backend() == "torch":
        pytest.skip("the torch backend has no steps_per_execution")
    keras.utils.set_random_seed(0)
    model = StandIn()
    model.build((None, 4))
    model.compile(optimizer=keras.optimizers.Adam(0.05), steps_per_execution=2)
    initial = [ops.convert_to_numpy(v) for v in model.teacher.weights]
    recorder = Recorder()
    x, y = make_data(16)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[EMATeacher(0.9), recorder])
    assert len(recorder.students) == 2  # One callback per 2 steps, each with decay 0.9².
    want = ema_reference(initial, recorder.students, [0.81, 0.81])
    for got, expected in zip(recorder.teachers[-1], want):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_ema_rejects_bad_arguments_and_models():
    with pytest.raises(ValueError, match="decay"):
        EMATeacher(1.5)
    with pytest.raises(ValueError, match="decay"):
        EMATeacher(lambda step: -0.1).decay_at(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = make_data(4)
    with pytest.raises(ValueError, match="ema_pairs"):
        model.fit(x, y, verbose=0, callbacks=[EMATeacher()])


def test_terms_switch_on_at_the_start_step():
    model, recorder = make_model(), Recorder()
    x, y = make_data(20)
    # 10 epochs of one step each: history holds every step's terms. 0.75 * 10 -> step 8.
    schedule = AuxiliaryLossSchedule(start_fraction=0.75)
    history = model.fit(
        x[:4], y[:4], batch_size=4, epochs=10, verbose=0, callbacks=[schedule, recorder]
    )
    assert schedule.start_step == 8
    for term in ("self_distillation_loss", "masked_prediction_loss"):
        values = np.array(history.history[term])
        assert np.all(values[:8] == 0.0) and np.all(np.abs(values[8:]) > 1e-4), (term, values)
        assert [term in s for s in recorder.skipped] == [True] * 8 + [False] * 2
    assert np.all(np.array(history.history["sigmoid_loss"]) > 0)  # Not scheduled.
    assert not any("sigmoid_loss" in s for s in recorder.skipped)


def test_skipped_terms_only_assigned_on_change():
    model = make_model()
    x, y = make_data(24)
    schedule = AuxiliaryLossSchedule(terms="self_distillation_loss", total_steps=6)
    schedule_start = math.ceil(0.8 * 6)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[schedule])
    assert schedule.start_step == schedule_start == 5
    assert model.switches == [{"self_distillation_loss"}, set()]


def test_schedule_errors_at_train_begin():
    model = make_model()
    x, y = make_data(8)
    with pytest.raises(ValueError, match=r"unknown term.*'locca_loss'.*masked_prediction_loss"):
        model.fit(x, y, verbose=0, callbacks=[AuxiliaryLossSchedule(terms=("locca_loss",))])

    def endless():
        while True:
            yield x[:4], y[:4]

    with pytest.raises(ValueError, match="total_steps"):
        model.fit(endless(), verbose=0, shuffle=False, callbacks=[AuxiliaryLossSchedule()])


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_resume_matches_an_uninterrupted_run(tmp_path):
    x, y = make_data(8)
    # 16 steps, 2 per epoch; the terms switch on at step 12, the start of epoch 6.
    kwargs = dict(batch_size=4, epochs=8, verbose=0, shuffle=False)

    def callbacks():
        return [AuxiliaryLossSchedule(start_fraction=0.75), EMATeacher(0.8, warmup_steps=3)]

    reference = make_model()
    full = reference.fit(x, y, callbacks=callbacks(), **kwargs)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        make_model().fit(x, y, callbacks=[backup, *callbacks(), Interrupt(4)], **kwargs)
    resumed = make_model()  # A fresh process would rebuild the model from scratch.
    tail = resumed.fit(x, y, callbacks=[backup, *callbacks()], **kwargs)

    assert int(resumed.optimizer.iterations) == 16
    assert resumed.skipped_terms == reference.skipped_terms == frozenset()
    for term in ("self_distillation_loss", "masked_prediction_loss"):
        np.testing.assert_allclose(tail.history[term], full.history[term][4:], rtol=1e-5)
        values = np.array(tail.history[term])  # Epochs 4 to 7.
        assert np.all(values[:2] == 0) and np.all(values[2:] != 0), values
    for got, expected in zip(resumed.teacher.weights, reference.teacher.weights):
        np.testing.assert_allclose(
            ops.convert_to_numpy(got), ops.convert_to_numpy(expected), atol=1e-6
        )


def test_terminate_on_nan_names_the_term():
    model = make_model()
    x, y = make_data(24)
    x[12:16, -1] = -1.0  # Batch 3: log(-1) makes masked_prediction_loss NaN.
    callback = TerminateOnNaN()
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False, callbacks=[callback])
    assert list(callback.bad_terms) == ["masked_prediction_loss"]
    assert math.isnan(callback.bad_terms["masked_prediction_loss"])
    assert int(model.optimizer.iterations) == 4  # Stopped right after the bad batch.
    message = callback.message
    assert message.startswith("Batch 3 (step 3): non-finite masked_prediction_loss=nan (loss=nan)")
    assert "Last finite logs: {" in message and "'sigmoid_loss'" in message

    model = make_model()
    with pytest.raises(FloatingPointError, match=r"Batch 3 .*masked_prediction_loss=nan"):
        model.fit(
            x, y, batch_size=4, epochs=3, verbose=0, shuffle=False,
            callbacks=[TerminateOnNaN(raise_error=True)],
        )


def test_terminate_on_nan_reports_loss_alone_and_ignores_healthy_runs():
    callback = TerminateOnNaN()
    assert callback.non_finite({"loss": 1.0, "sigmoid_loss": 0.5, "lr": np.float32(0.1)}) == {}
    model = make_model()
    x, y = make_data(8)
    model.fit(x, y, batch_size=4, verbose=0, callbacks=[callback])
    assert callback.bad_terms == {} and callback.message is None
    assert int(model.optimizer.iterations) == 2

    class Stub:
        optimizer, stop_training = None, False

    stub = Stub()
    callback.set_model(stub)
    callback.on_batch_end(0, {"loss": float("inf"), "sigmoid_loss": 1.0})
    assert callback.bad_terms == {"loss": float("inf")} and stub.stop_training is True
    assert callback.message.startswith("Batch 0: non-finite loss=inf; training stopped.")


def test_step_log_writes_each_steps_own_loss_and_survives_a_second_fit(tmp_path):
    from keras_siglip2.callbacks import StepLog

    path = tmp_path / "steps.csv"
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False,
                                                                     kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # weights stay 0
    y = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]], "float32")
    x = np.ones_like(y)
    model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0, callbacks=[StepLog(path)])
    log = StepLog.read(path)
    per_batch = [(1 + 4) / 2, (9 + 16) / 2, (25 + 36) / 2]  # mse of each batch against 0
    assert log["step"] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(log["loss"], per_batch * 2, rtol=1e-5)
    model.fit(x[:2], y[:2], batch_size=2, epochs=1, verbose=0, callbacks=[StepLog(path)])
    assert StepLog.read(path)["step"][-1] == 7
