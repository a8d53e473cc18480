"""Multi-device training: sharded sigmoid loss == dense loss, distributed fits == one device.

The multi-device checks run in a subprocess (tests/distributed_checks.py): simulated
devices must be configured before JAX or TensorFlow start. PyTorch has no Keras
distribution support: only the single-process tests run there.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import TINY_TEXT, TINY_VISION, tiny_backbone, value_and_grad
from keras_siglip2 import SigLIP2TextEncoder, SigLIP2Trainer, SigLIP2VisionEncoder
from keras_siglip2.distribution import model_parallel, siglip2_layout_map, strategy
from keras_siglip2.layers.transformer import TransformerEncoder
from keras_siglip2.losses import chunked_sigmoid_loss, sigmoid_loss

BACKEND = keras.config.backend()
multi_device = pytest.mark.skipif(
    BACKEND == "torch", reason="Keras distribution and tf.distribute do not drive PyTorch"
)


@pytest.fixture(scope="module")
def checks():
    script = pathlib.Path(__file__).with_name("distributed_checks.py")
    result = subprocess.run(
        [sys.executable, str(script)], env={**os.environ, "KERAS_BACKEND": BACKEND},
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@multi_device
def test_sharded_loss_equals_dense_value_and_gradients(checks):
    configs = {(c["batch"], c["chunk"]) for c in checks["loss"]}
    assert len(configs) >= 2 and any(c["chunk"] for c in checks["loss"])
    for config in checks["loss"]:
        assert config["error"] < 1e-5, config
        if BACKEND == "jax":  # a ring of neighbour exchanges, never an all-gather
            assert config["ring"] and not config["gathers"], config


@pytest.mark.skipif(BACKEND != "jax", reason="XLA's memory account of the JAX ring")
def test_ring_loss_memory_per_device_is_bounded(checks):
    memory = checks["memory"]
    local = memory["batch"] // 8
    dense_logits = memory["batch"] ** 2 * 4
    assert memory["dense"] >= dense_logits
    # O(B/D · chunk) logits plus O(B/D · width) embeddings, far below the B × B logits.
    assert memory["ring"] < 8 * 4 * local * (memory["chunk"] + memory["width"]), memory


def assert_follows_single_device(fits, names):
    """Each distributed run's losses and final weights match the single-device run's."""
    want = fits["single"]
    for name in names:
        for key in ("loss", "sigmoid_loss"):
            np.testing.assert_allclose(fits[name][key], want[key], rtol=1e-5, err_msg=name)
        assert fits[name + "_weights_error"] < 1e-4, name
    assert len(want["loss"]) == 3 and len(set(want["loss"])) == 3  # the weights moved


@multi_device
def test_distributed_fit_follows_the_single_device_trajectory(checks):
    fits = checks["fit"]
    names = ["data_parallel", "model_parallel"] if BACKEND == "jax" else ["mirrored"]
    assert_follows_single_device(fits, names)
    if BACKEND == "jax":
        assert fits["embedding_sharding"][0] == "model"


@multi_device
def test_distributed_naflex_fit_follows_the_single_device_trajectory(checks):
    """Each device's shard of the padded NaFlex batch has its own padding."""
    name = "data_parallel" if BACKEND == "jax" else "mirrored"
    assert_follows_single_device(checks["fit"]["naflex"], [name])


@pytest.mark.parametrize("images,texts,chunk", [(3, 8, 3), (4, 4, 3), (2, 7, 7)])
def test_chunked_loss_with_more_texts_than_images(images, texts, chunk, rng):
    """One device's rows of a larger batch: image i matches text i, mean over images."""
    x = rng.normal(size=(images, 5)).astype("float32")
    y = rng.normal(size=(texts, 5)).astype("float32")
    t, b = np.float32(1.2), np.float32(-3.0)

    def dense(x, y, t, b):
        logits = keras.ops.exp(t) * keras.ops.matmul(x, keras.ops.transpose(y)) + b
        labels = keras.ops.eye(images, texts)
        return keras.ops.mean(sigmoid_loss(logits, labels))

    want, want_grads = value_and_grad(dense, x, y, t, b)
    value, grads = value_and_grad(
        lambda *a: chunked_sigmoid_loss(*a, chunk_size=chunk), x, y, t, b
    )
    np.testing.assert_allclose(value, want, rtol=1e-5)
    for got, expected in zip(grads, want_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    if texts > images:
        with pytest.raises(ValueError, match="matching text"):
            chunked_sigmoid_loss(y, x, t, b)


@multi_device
def test_layout_map_shards_the_real_variables():
    mesh = keras.distribution.DeviceMesh(
        (1, 1), ("batch", "model"), keras.distribution.list_devices()[:1]
    )
    layout_map = siglip2_layout_map(mesh)
    trainer = SigLIP2Trainer(tiny_backbone())
    sharded = [(v, layout_map[v.path].axes) for v in trainer.weights if layout_map[v.path]]
    paths = [v.path for v, _ in sharded]
    blocks = TINY_TEXT["num_layers"] + TINY_VISION["num_layers"] + 1  # + the MAP head
    assert sum(p.endswith("attention/query/kernel") for p in paths) == blocks
    assert sum(p.endswith("mlp/fc2/kernel") for p in paths) == blocks
    assert layout_map["token_embedding/embeddings"].axes == ("model", None)
    assert "token_embedding/embeddings" in paths
    assert all("norm" not in p and "logit" not in p for p in paths)
    assert all(len(axes) == len(v.shape) for v, axes in sharded)
    with pytest.raises(ValueError, match="model-parallel axis"):
        siglip2_layout_map(keras.distribution.DeviceMesh((1,), ("batch",), mesh.devices[0]))
    with pytest.raises(ValueError, match="divisor"):
        model_parallel(3, devices=keras.distribution.list_devices()[:1])


def test_strategy_fails_fast_without_a_tpu():
    if BACKEND != "tensorflow":
        with pytest.raises(ValueError, match="KERAS_BACKEND=tensorflow"):
            strategy("tpu")
        return
    with pytest.raises(RuntimeError, match="No TPU found"):
        strategy("tpu")
    with pytest.raises(ValueError, match="Unknown strategy kind"):
        strategy("gpus")
    assert strategy().num_replicas_in_sync == 1


def test_remat_keeps_values_and_gradients(rng):
    """One SGD step (lr 1: the update is the gradient) with and without remat."""
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    y = rng.normal(size=(2, 5, 16)).astype("float32")
    models, outputs, start = [], [], None
    for remat in (False, True):
        model = keras.Sequential(
            [keras.Input((5, 16)), TransformerEncoder(2, 2, 32, remat=remat)]
        )
        if start is not None:
            model.set_weights(start)
        start = model.get_weights()
        outputs.append(model.predict(x, verbose=0))
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        model.fit(x, y, batch_size=2, epochs=1, verbose=0)
        models.append(model)
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-6)
    plain, remat = ([w - s for w, s in zip(m.get_weights(), start)] for m in models)
    assert max(np.abs(g).max() for g in plain) > 1e-3
    for got, expected in zip(remat, plain):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_remat_is_serialised_on_the_encoders():
    vision = SigLIP2VisionEncoder(**TINY_VISION, remat=True)
    text = SigLIP2TextEncoder(**TINY_TEXT)
    assert vision.get_config()["remat"] and not text.get_config()["remat"]
    assert SigLIP2VisionEncoder.from_config(vision.get_config()).encoder.remat
