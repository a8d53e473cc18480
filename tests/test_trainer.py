"""`SigLIP2Trainer.fit` with every term of the recipe, on every backend."""

import numpy as np
import pytest

import keras
from keras import ops

from conftest import TINY_TEXT, naflex_batch, tiny_backbone
from keras_siglip2.callbacks import AuxiliaryLossSchedule, EMATeacher
from keras_siglip2.curation import learnability_scores, select_learnable
from keras_siglip2.locca_targets import LocCaVocabulary, make_locca_example
from keras_siglip2.losses import sigmoid_loss
from keras_siglip2.models.locca_decoder import LocCaDecoder
from keras_siglip2.models.trainer import SigLIP2Trainer

BATCH, VIEWS, DECODER_LENGTH = 4, 2, 10
VOCAB = LocCaVocabulary(TINY_TEXT["vocabulary_size"], num_location_bins=8)


def _decoder():
    return LocCaDecoder(
        vocabulary_size=VOCAB.size, sequence_length=DECODER_LENGTH, hidden_dim=16,
        num_layers=1, num_heads=2, intermediate_dim=32,
    )


def _batch(naflex=False, seed=0):
    rng = np.random.default_rng(seed)
    if naflex:
        shapes = [(2, 3), (4, 4), (3, 1), (2, 2)]
        x = naflex_batch(shapes, 16, seed=seed)
        views = [naflex_batch(shapes[i:] + shapes[:i], 16, seed=seed + i) for i in range(VIEWS)]
        x["local_views"] = {k: np.stack([v[k] for v in views], 1) for k in views[0]}
    else:
        x = {"images": rng.uniform(-1, 1, (BATCH, 32, 32, 3)).astype("float32")}
        x["local_views"] = rng.uniform(-1, 1, (BATCH, VIEWS, 32, 32, 3)).astype("float32")
    x["token_ids"] = rng.integers(2, 64, (BATCH, 8)).astype("int32")
    examples = [
        make_locca_example(
            task, rng.integers(2, 60, 5), [0.1, 0.2, 0.6, 0.9], rng.integers(2, 60, 3),
            i % 2, VOCAB, DECODER_LENGTH,
        )
        for i, task in enumerate(["cap", "aref", "gcap", "cap"])
    ]
    for key in ("decoder_input_ids", "decoder_target_ids", "decoder_loss_mask", "decoder_causal"):
        x[key] = np.stack([e[key] for e in examples])
    return x


def _trainer(naflex=False, **kwargs):
    keras.utils.set_random_seed(0)
    return SigLIP2Trainer(
        tiny_backbone(naflex), decoder=_decoder(), distillation_dim=8, head_hidden_dim=16,
        head_bottleneck_dim=8, seed=1, **kwargs,
    )


class _Recorder(keras.callbacks.Callback):
    """Per-step logs and student/teacher weights after each step."""

    def __init__(self):
        super().__init__()
        self.logs, self.students, self.teachers, self.skipped = [], [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: float(v) for k, v in logs.items()})
        self.skipped.append(set(self.model.skipped_terms))
        pairs = self.model.ema_pairs
        self.students.append([ops.convert_to_numpy(s) for _, s in pairs])
        self.teachers.append([ops.convert_to_numpy(t) for t, _ in pairs])


@pytest.mark.parametrize("naflex", [False, True])
def test_fit_with_every_term(naflex):
    trainer = _trainer(naflex)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = {v.path: ops.convert_to_numpy(v) for v in trainer.trainable_variables}
    teacher_start = [ops.convert_to_numpy(t) for t, _ in trainer.ema_pairs]
    recorder = _Recorder()
    decay, steps = 0.9, 4
    # Recorder after EMATeacher: it sees each step's student and the moved teacher.
    trainer.fit(
        _batch(naflex), batch_size=BATCH, epochs=steps, verbose=0, shuffle=False,
        callbacks=[EMATeacher(decay), AuxiliaryLossSchedule(start_fraction=0.5), recorder],
    )
    terms = ["sigmoid_loss", "locca_loss", "self_distillation_loss", "masked_prediction_loss"]
    for logs in recorder.logs:
        assert all(np.isfinite(logs[t]) for t in [*terms, "loss"]), logs
    # Delayed terms: skipped (logged as 0) for the first half, on afterwards.
    for step, logs in enumerate(recorder.logs):
        for term in terms[2:]:
            assert (logs[term] == 0.0) == (step < steps // 2), (step, term, logs[term])
        assert recorder.skipped[step] == (set(terms[2:]) if step < steps // 2 else set())
        assert logs["sigmoid_loss"] > 0 and logs["locca_loss"] > 0
    # Every trainable weight moves (the heads only once their terms are on).
    after = {v.path: ops.convert_to_numpy(v) for v in trainer.trainable_variables}
    frozen = [p for p in before if np.array_equal(before[p], after[p])]
    assert not frozen, frozen
    # The teacher moves by exactly the EMA rule from its start.
    expected = teacher_start
    for students in recorder.students:
        expected = [decay * t + (1 - decay) * s for t, s in zip(expected, students)]
    for want, got in zip(expected, recorder.teachers[-1]):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_terms_are_the_formulas_and_weights_apply():
    trainer = _trainer(loss_weights={"masked_prediction_loss": 0.5, "locca_loss": 2.0})
    x = _batch()
    terms = {k: float(v) for k, v in trainer(x).items()}
    out = trainer.backbone({"images": x["images"], "token_ids": x["token_ids"]})
    np.testing.assert_allclose(
        terms["sigmoid_loss"], float(ops.mean(sigmoid_loss(out["logits"]))), rtol=1e-5
    )
    total = float(trainer.compute_loss(x, None, {k: ops.convert_to_tensor(v)
                                                 for k, v in terms.items()}))
    want = (terms["sigmoid_loss"] + 2 * terms["locca_loss"] + terms["self_distillation_loss"]
            + 0.5 * terms["masked_prediction_loss"])
    np.testing.assert_allclose(total, want, rtol=1e-5)
    with pytest.raises(ValueError, match="does not compute"):
        SigLIP2Trainer(tiny_backbone(), loss_weights={"locca_loss": 1.0})
    missing = {k: v for k, v in x.items() if k != "local_views"}
    with pytest.raises(ValueError, match="local_views"):
        trainer(missing)


def test_chunked_loss_trainer_matches_dense():
    x = _batch()
    dense = SigLIP2Trainer(tiny_backbone())
    chunked = SigLIP2Trainer(tiny_backbone(), loss_chunk_size=3)
    np.testing.assert_allclose(
        float(dense(x)["sigmoid_loss"]), float(chunked(x)["sigmoid_loss"]), rtol=1e-5
    )


def test_active_curation_trains_on_the_most_learnable_half():
    x = _batch()
    reference = tiny_backbone(seed=5)
    trainer = SigLIP2Trainer(tiny_backbone(), reference=reference, curation_fraction=0.5)
    inputs = {"images": x["images"], "token_ids": x["token_ids"]}
    scores = learnability_scores(
        trainer.backbone(inputs)["logits"], reference(inputs)["logits"]
    )
    keep = ops.convert_to_numpy(select_learnable(scores, 2))
    sub = {k: v[keep] for k, v in inputs.items()}
    want = float(ops.mean(sigmoid_loss(trainer.backbone(sub)["logits"])))
    np.testing.assert_allclose(float(trainer(x, training=True)["sigmoid_loss"]), want, rtol=1e-5)
    trainer.compile(optimizer="adam")
    history = trainer.fit(x, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not any(v.trainable for v in reference.weights)


@pytest.mark.skipif(keras.config.backend() != "jax", reason="resume is checked on jax")
def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    x, steps = _batch(), 4

    def run(backup_dir, interrupt_at=None):
        trainer = _trainer()
        trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
        callbacks = [
            EMATeacher(0.9), AuxiliaryLossSchedule(start_fraction=0.5),
            keras.callbacks.BackupAndRestore(str(backup_dir)),
        ]
        if interrupt_at is not None:
            callbacks.append(keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: (_ for _ in ()).throw(KeyboardInterrupt)
                if epoch + 1 == interrupt_at else None
            ))
        try:
            trainer.fit(x, batch_size=BATCH, epochs=steps, verbose=0, shuffle=False,
                        callbacks=callbacks)
        except KeyboardInterrupt:
            return None
        return [ops.convert_to_numpy(v) for v in trainer.weights]

    straight = run(tmp_path / "a")
    assert run(tmp_path / "b", interrupt_at=steps // 2) is None
    resumed = run(tmp_path / "b")
    assert len(straight) == len(resumed)
    for want, got in zip(straight, resumed):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_fit_on_batches_of_several_naflex_lengths_then_a_fixed_variant():
    import tensorflow as tf

    from keras_siglip2.preprocessing import naflex_multi_length_batches
    from keras_siglip2.weight_resize import resize_backbone

    rng = np.random.default_rng(0)
    examples = tf.data.Dataset.from_tensor_slices({
        "image": rng.integers(0, 256, (8, 12, 20, 3)).astype("uint8"),
        "token_ids": rng.integers(2, 64, (8, 8)).astype("int32"),
    })
    batches = naflex_multi_length_batches(examples, 4, [8, 16], batch_size=2, seed=0)
    assert {int(b["patches"].shape[1]) for b in batches} == {8, 16}
    trainer = SigLIP2Trainer(tiny_backbone(naflex=True))
    trainer.compile(optimizer="adam")
    history = trainer.fit(batches, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["sigmoid_loss"][0])
    # Fine-tune a fixed-resolution variant branched off the NaFlex model.
    fixed = resize_backbone(trainer.backbone, image_size=16, patch_size=4)
    assert not fixed.is_naflex
    images = {"images": rng.uniform(-1, 1, (2, 16, 16, 3)).astype("float32"),
              "token_ids": rng.integers(2, 64, (2, 8)).astype("int32")}
    fixed_trainer = SigLIP2Trainer(fixed)
    fixed_trainer.compile(optimizer="adam")
    assert np.isfinite(fixed_trainer.fit(images, batch_size=2, verbose=0).history["loss"][0])


def test_config_round_trip():
    trainer = _trainer(loss_weights={"locca_loss": 0.5}, loss_chunk_size=2)
    restored = SigLIP2Trainer.from_config(trainer.get_config())
    assert restored.terms == trainer.terms
    assert restored.loss_weights == trainer.loss_weights
    assert restored.loss_chunk_size == 2 and restored.distillation_dim == 8
    assert [tuple(v.shape) for v in restored.weights] == [tuple(v.shape) for v in trainer.weights]


@pytest.mark.skipif(keras.config.backend() != "torch", reason="torch's autograd only")
def test_each_step_starts_from_zero_gradients():
    # keras-hub-style towers' variables are not registered torch parameters, so
    # torch.nn.Module.zero_grad alone would let their gradients add up across steps.
    x = _batch()
    trainer = _trainer()
    trainer.compile(optimizer="adam")
    trainer.fit(x, batch_size=BATCH, epochs=2, verbose=0, shuffle=False)
    assert any(v.value.grad is not None for v in trainer.trainable_variables)
    trainer.zero_grad()
    assert all(v.value.grad is None for v in trainer.trainable_variables)
