"""Sigmoid loss: against a numpy transcription of the formula; chunked == dense."""

import numpy as np
import pytest

import keras
from keras import ops

from conftest import value_and_grad
from keras_siglip2.losses import SigmoidLoss, chunked_sigmoid_loss, sigmoid_loss


def _embeddings(b, d, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(b, d)), rng.normal(size=(b, d))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y /= np.linalg.norm(y, axis=-1, keepdims=True)
    return x.astype("float32"), y.astype("float32")


def _numpy_loss_and_grads(x, y, t, b):
    """L = -(1/B) Σ_ij log σ(z_ij l_ij) and its gradients, written out by hand."""
    x, y = x.astype("float64"), y.astype("float64")
    cos = x @ y.T
    logits = np.exp(t) * cos + b
    z = 2 * np.eye(len(x)) - 1
    loss = np.sum(np.logaddexp(0, -z * logits)) / len(x)
    g = -z / (1 + np.exp(z * logits)) / len(x)  # dL/dl_ij
    return loss, [np.exp(t) * g @ y, np.exp(t) * g.T @ x, np.sum(g * cos) * np.exp(t), g.sum()]


def test_dense_loss_matches_the_formula_value_and_gradient():
    x, y = _embeddings(6, 5, 0)
    t, b = np.float32(np.log(10.0)), np.float32(-10.0)
    want, want_grads = _numpy_loss_and_grads(x, y, t, b)

    def dense(x, y, t, b):
        logits = ops.exp(t) * ops.matmul(x, ops.transpose(y)) + b
        return ops.mean(sigmoid_loss(logits))

    value, grads = value_and_grad(dense, x, y, t, b)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    for got, expected in zip(grads, want_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_explicit_labels_and_the_keras_loss():
    logits = np.array([[2.0, -3.0, 0.5], [-1.0, 4.0, 1.0]], "float32")
    labels = np.array([[1, 0, 1], [0, 1, 0]], "float32")
    signs = 2 * labels - 1
    want = np.sum(np.logaddexp(0, -signs * logits), axis=-1)
    np.testing.assert_allclose(ops.convert_to_numpy(sigmoid_loss(logits, labels)), want, rtol=1e-6)
    square = logits[:, :2]
    want_mean = np.mean(np.sum(np.logaddexp(0, -(2 * np.eye(2) - 1) * square), axis=-1))
    np.testing.assert_allclose(float(SigmoidLoss()(None, square)), want_mean, rtol=1e-6)
    np.testing.assert_allclose(float(SigmoidLoss()(labels, logits)), want.mean(), rtol=1e-6)


@pytest.mark.parametrize("batch,chunk", [(8, 8), (8, 3), (7, 2), (5, 16), (9, 1)])
def test_chunked_equals_dense_value_and_gradients(batch, chunk):
    x, y = _embeddings(batch, 6, batch + chunk)
    t, b = np.float32(1.7), np.float32(-4.0)
    want, want_grads = _numpy_loss_and_grads(x, y, t, b)
    value, grads = value_and_grad(
        lambda *a: chunked_sigmoid_loss(*a, chunk_size=chunk), x, y, t, b
    )
    np.testing.assert_allclose(value, want, rtol=1e-5)
    for got, expected in zip(grads, want_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_losses_stay_float32_under_bfloat16_inputs():
    x, y = _embeddings(4, 8, 1)
    lowp_x, lowp_y = ops.cast(x, "bfloat16"), ops.cast(y, "bfloat16")
    logits = 10.0 * ops.matmul(lowp_x, ops.transpose(lowp_y)) - 10.0
    assert ops.dtype(logits) == "bfloat16"
    assert ops.dtype(sigmoid_loss(logits)) == "float32"
    chunked = chunked_sigmoid_loss(lowp_x, lowp_y, np.log(10.0), -10.0, chunk_size=3)
    assert ops.dtype(chunked) == "float32"
    want, _ = _numpy_loss_and_grads(
        ops.convert_to_numpy(ops.cast(lowp_x, "float32")),
        ops.convert_to_numpy(ops.cast(lowp_y, "float32")), np.log(10.0), -10.0,
    )
    np.testing.assert_allclose(float(chunked), want, rtol=1e-5)


@pytest.mark.skipif(keras.config.backend() != "jax", reason="XLA memory analysis")
def test_chunked_gradient_memory_grows_linearly_with_the_batch():
    import jax

    def temp_bytes(fn, batch):
        x, y = _embeddings(batch, 32, 3)
        grad = jax.jit(jax.grad(fn, argnums=(0, 1, 2, 3)))
        compiled = grad.lower(x, y, np.float32(2.3), np.float32(-10.0)).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    def dense(x, y, t, b):
        return ops.mean(sigmoid_loss(ops.exp(t) * x @ y.T + b))

    def chunked(*args):
        return chunked_sigmoid_loss(*args, chunk_size=64)

    small, large = 1024, 2048
    # The check can see quadratic growth: the dense loss holds B × B buffers.
    assert temp_bytes(dense, small) >= small * small * 4
    assert temp_bytes(dense, large) > 3.5 * temp_bytes(dense, small)
    assert temp_bytes(chunked, large) < 2.5 * temp_bytes(chunked, small)
    assert temp_bytes(chunked, large) < large * large * 4 / 4
