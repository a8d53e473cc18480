"""SILC self-distillation, TIPS masked prediction and the DINO head, against numpy formulas."""

import math

import numpy as np
import pytest

import keras
from keras import ops

from conftest import value_and_grad
from keras_siglip2.layers.dino_head import DINOHead
from keras_siglip2.losses.masked_prediction import (
    apply_token_mask,
    masked_prediction_loss,
    random_patch_mask,
)
from keras_siglip2.losses.self_distillation import self_distillation_loss, updated_center

BACKEND = keras.config.backend()
TAU_S, TAU_T = 0.1, 0.04


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _logits(shape, seed, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype("float32")


def _numpy_distillation(s, t, c):
    """Loss, written as the sum over every (teacher view g, student view s) pair, and dL/ds."""
    s, t, c = s.astype("float64"), t.astype("float64"), c.astype("float64")
    (b, n_s, _), n_g = s.shape, t.shape[1]
    p_t, q_s = _softmax((t - c) / TAU_T), _softmax(s / TAU_S)
    loss = 0.0
    for i in range(b):
        for g in range(n_g):
            for j in range(n_s):
                loss -= np.sum(p_t[i, g] * np.log(q_s[i, j]))
    grad = (q_s - p_t.mean(1, keepdims=True)) / (TAU_S * b * n_s)
    return loss / (b * n_g * n_s), grad


def _numpy_masked(s, t, m, c):
    """Per-image mean CE over masked patches, averaged over images with a masked patch."""
    s, t, c = s.astype("float64"), t.astype("float64"), c.astype("float64")
    p_t, q_s = _softmax((t - c) / TAU_T), _softmax(s / TAU_S)
    rows = [i for i in range(len(s)) if m[i].sum() > 0]
    loss, grad = 0.0, np.zeros_like(s)
    for i in rows:
        idx = np.flatnonzero(m[i])
        loss += np.mean([-np.sum(p_t[i, n] * np.log(q_s[i, n])) for n in idx])
        grad[i, idx] = (q_s[i, idx] - p_t[i, idx]) / (TAU_S * len(idx) * len(rows))
    return (loss / len(rows) if rows else 0.0), grad


def test_self_distillation_matches_the_formula_value_and_gradient():
    s, t = _logits((4, 6, 5), 0), _logits((4, 2, 5), 1)
    c = _logits((5,), 2, 0.1)
    want, want_grad = _numpy_distillation(s, t, c)
    value, (grad,) = value_and_grad(lambda x: self_distillation_loss(x, t, c), s)
    assert value.shape == () and value.dtype == np.float32
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)
    # Other temperatures are honoured: τ_t = τ_s = 1 and c = 0 on identical logits is the entropy.
    p = _softmax(s.astype("float64"))
    got = self_distillation_loss(s, s, np.zeros(5, "float32"), 1.0, 1.0)
    cross = -np.einsum("bgk,bsk->bgs", p, np.log(p)).mean()
    np.testing.assert_allclose(float(got), cross, rtol=1e-5)


def test_masked_prediction_matches_the_formula_value_and_gradient():
    s, t = _logits((4, 6, 5), 3), _logits((4, 6, 5), 4)
    c = _logits((5,), 5, 0.1)
    # Counts 3, 1, 0 (left out of the mean) and 6.
    m = np.array([[1, 0, 1, 0, 1, 0], [0, 0, 0, 0, 0, 1], [0] * 6, [1] * 6], "int32")
    want, want_grad = _numpy_masked(s, t, m, c)
    value, (grad,) = value_and_grad(lambda x: masked_prediction_loss(x, t, m, c), s)
    assert value.shape == () and value.dtype == np.float32
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)
    assert np.all(grad[2] == 0) and np.all(grad[0, [1, 3, 5]] == 0)


def test_no_masked_patch_gives_zero_loss_and_finite_gradient():
    s, t = _logits((4, 6, 5), 6), _logits((4, 6, 5), 7)
    value, (grad,) = value_and_grad(
        lambda x: masked_prediction_loss(x, t, np.zeros((4, 6), "int32"), np.zeros(5, "float32")),
        s,
    )
    assert value == 0.0 and np.all(grad == 0.0)


@pytest.mark.parametrize("which", ["distillation", "masked"])
def test_teacher_and_center_get_no_gradient(which):
    s, t, c = _logits((4, 6, 5), 8), _logits((4, 6, 5), 9), _logits((5,), 10)
    m = np.tile([[1, 0, 1], [0, 1, 1]], (2, 2)).astype("int32")
    if which == "distillation":
        fn = lambda x, y, z: self_distillation_loss(x, y, z)  # noqa: E731
    else:
        fn = lambda x, y, z: masked_prediction_loss(x, y, m, z)  # noqa: E731
    _, (g_s, g_t, g_c) = value_and_grad(fn, s, t, c)
    assert np.abs(g_s).max() > 1e-3
    assert np.all(g_t == 0) and np.all(g_c == 0)


def test_losses_are_float32_under_bfloat16_inputs():
    s, t = _logits((4, 6, 5), 11), _logits((4, 6, 5), 12)
    lows, lowt = ops.cast(s, "bfloat16"), ops.cast(t, "bfloat16")
    c = ops.zeros((5,), "bfloat16")
    d = self_distillation_loss(lows, lowt, c)
    mp = masked_prediction_loss(lows, lowt, np.ones((4, 6)), c)
    assert ops.dtype(d) == "float32" and ops.dtype(mp) == "float32"
    up_s, up_t = [ops.convert_to_numpy(ops.cast(x, "float32")) for x in (lows, lowt)]
    np.testing.assert_allclose(float(d), _numpy_distillation(up_s, up_t, np.zeros(5))[0], rtol=1e-5)


def test_center_update_is_exact():
    c, t = _logits((5,), 13), _logits((4, 2, 5), 14)
    want = 0.9 * c.astype("float64") + 0.1 * t.reshape(-1, 5).mean(0)
    got = ops.convert_to_numpy(updated_center(c, t))
    assert got.dtype == np.float32 and got.shape == (5,)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # (B, K) logits, and the momentum extremes.
    flat = t.reshape(-1, 5)
    np.testing.assert_allclose(ops.convert_to_numpy(updated_center(c, flat)), got, rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(updated_center(c, t, 1.0)), c)
    np.testing.assert_allclose(
        ops.convert_to_numpy(updated_center(c, t, 0.0)), flat.mean(0), rtol=1e-6, atol=1e-7
    )
    # A mask leaves entries (NaFlex padding) out of the mean.
    mask = np.zeros(t.shape[:-1], "int32")
    mask.reshape(-1)[::2] = 1
    want_masked = 0.9 * c + 0.1 * flat[mask.reshape(-1) == 1].mean(0)
    np.testing.assert_allclose(
        ops.convert_to_numpy(updated_center(c, t, mask=mask)), want_masked, rtol=1e-6, atol=1e-7
    )


VALID = np.array(
    [[1] * 10, [1] * 7 + [0] * 3, [1] * 5 + [0] * 5, [1] + [0] * 9, [0] * 10, [0, 1] * 5], "int32"
)


@pytest.mark.parametrize("ratio", [0.5, 0.3, 0.0, 1.0])
def test_random_patch_mask_exact_counts_and_no_padding(ratio):
    m = ops.convert_to_numpy(random_patch_mask(6, 10, ratio, seed=3, valid_mask=VALID))
    assert m.shape == (6, 10) and m.dtype == np.int32 and set(np.unique(m)) <= {0, 1}
    n_valid = VALID.sum(-1)
    np.testing.assert_array_equal(m.sum(-1), np.round(ratio * n_valid))  # half to even: 5 → 2
    assert np.all(m[VALID == 0] == 0)
    full = ops.convert_to_numpy(random_patch_mask(6, 10, ratio, seed=3))
    np.testing.assert_array_equal(full.sum(-1), [round(ratio * 10)] * 6)


def test_random_patch_mask_seeding_and_uniformity():
    def draw(seed):
        return ops.convert_to_numpy(random_patch_mask(6, 10, 0.5, seed=seed))

    np.testing.assert_array_equal(draw(7), draw(7))
    assert not np.array_equal(draw(7), draw(8))
    gen = keras.random.SeedGenerator(0)
    assert not np.array_equal(draw(gen), draw(gen))
    # Every position is masked about half of the time (240 rows: σ ≈ 0.03).
    rows = np.concatenate([draw(gen) for _ in range(40)])
    assert np.all(np.abs(rows.mean(0) - 0.5) < 0.12)


def test_random_patch_mask_compiles():
    if BACKEND == "jax":
        import jax

        eager = ops.convert_to_numpy(random_patch_mask(6, 10, 0.5, 5, VALID))
        jitted = jax.jit(lambda v: random_patch_mask(6, 10, 0.5, 5, v))(VALID)
        np.testing.assert_array_equal(np.asarray(jitted), eager)
        by_key = jax.jit(lambda key, v: random_patch_mask(6, 10, 0.5, key, v))
        a, b = by_key(jax.random.PRNGKey(0), VALID), by_key(jax.random.PRNGKey(1), VALID)
        masks = [np.asarray(a), np.asarray(b)]
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda v: random_patch_mask(6, 10, 0.5, 5, v), jit_compile=True)
        masks = [fn(tf.constant(VALID)).numpy()]
    else:
        pytest.skip("compilation is checked with jax.jit and XLA on the other backends")
    for m in masks:
        np.testing.assert_array_equal(m.sum(-1), np.round(0.5 * VALID.sum(-1)))
        assert np.all(m[VALID == 0] == 0)
    assert len(masks) == 1 or not np.array_equal(*masks)


def test_apply_token_mask():
    x = _logits((4, 6, 5), 15)
    token = np.arange(5, dtype="float32")
    m = np.tile([[1, 0, 0], [0, 1, 1]], (2, 2)).astype("int32")
    got = ops.convert_to_numpy(apply_token_mask(x, m, token))
    want = np.where(m[..., None] == 1, token, x)
    np.testing.assert_array_equal(got, want)
    low = apply_token_mask(ops.cast(x, "bfloat16"), m, token)
    assert ops.dtype(low) == "bfloat16"


def _numpy_head(head, x):
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    h = x.astype("float64")
    for layer in head.hidden:
        k, b = (ops.convert_to_numpy(w).astype("float64") for w in layer.weights)
        h = gelu(h @ k + b)
    k, b = (ops.convert_to_numpy(w).astype("float64") for w in head.bottleneck.weights)
    h = h @ k + b
    h /= np.linalg.norm(h, axis=-1, keepdims=True)
    v = ops.convert_to_numpy(head.last_layer_kernel).astype("float64")
    return h @ (v / np.linalg.norm(v, axis=0, keepdims=True))


HEAD = dict(out_dim=11, hidden_dim=16, bottleneck_dim=6)
X2, X3 = _logits((3, 8), 16), _logits((2, 5, 8), 17)


@pytest.mark.parametrize("num_layers", [0, 2])
def test_dino_head_matches_the_formula(num_layers):
    keras.utils.set_random_seed(0)
    head = DINOHead(**HEAD, num_layers=num_layers)
    y2, y3 = (ops.convert_to_numpy(head(x)) for x in (X2, X3))
    assert y2.shape == (3, 11) and y3.shape == (2, 5, 11) and y3.dtype == np.float32
    assert len(head.trainable_weights) == 2 * num_layers + 3
    np.testing.assert_allclose(y2, _numpy_head(head, X2), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(y3, _numpy_head(head, X3), rtol=1e-4, atol=1e-6)
    assert np.abs(y3).max() <= 1.0 + 1e-6  # cosines


def test_dino_head_weight_norm_has_unit_gain():
    keras.utils.set_random_seed(1)
    head = DINOHead(**HEAD, num_layers=1)
    before = ops.convert_to_numpy(head(X3))
    w = ops.convert_to_numpy(head.prototypes)
    assert w.shape == (6, 11)
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), np.ones(11), rtol=1e-6)
    # Rescaling the raw kernel's columns changes nothing: only directions are learned.
    scale = np.linspace(0.5, 4.0, 11, dtype="float32")
    head.last_layer_kernel.assign(ops.convert_to_numpy(head.last_layer_kernel) * scale)
    np.testing.assert_allclose(ops.convert_to_numpy(head(X3)), before, rtol=1e-5, atol=1e-6)


def test_dino_head_float32_output_under_mixed_bfloat16():
    keras.utils.set_random_seed(2)
    ref, head = DINOHead(**HEAD), DINOHead(**HEAD, dtype="mixed_bfloat16")
    ref(X3), head(X3)
    head.set_weights(ref.get_weights())
    y = head(X3)
    assert ops.dtype(y) == "float32" and head.compute_dtype == "bfloat16"
    assert ops.dtype(head.last_layer_kernel) == "float32"
    np.testing.assert_allclose(ops.convert_to_numpy(y), ops.convert_to_numpy(ref(X3)), atol=0.03)
    assert head(keras.Input((5, 8))).dtype == "float32"


def test_dino_head_config_round_trip():
    keras.utils.set_random_seed(3)
    head = DINOHead(**HEAD, num_layers=3, name="dino")
    y = ops.convert_to_numpy(head(X2))
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert type(clone) is DINOHead and clone.get_config() == head.get_config()
    assert (clone.out_dim, clone.hidden_dim, clone.num_layers, clone.name) == (11, 16, 3, "dino")
    kernels = [ops.convert_to_numpy(layer.kernel) for layer in head.hidden[1:]]
    assert not np.allclose(*kernels)  # equal-shaped layers are initialised independently
    clone(X2)
    clone.set_weights(head.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(clone(X2)), y, rtol=1e-6, atol=1e-7)
