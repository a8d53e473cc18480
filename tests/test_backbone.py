"""The two towers and the backbone: shapes, NaFlex padding, jit, dtypes, serialization."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import keras
from keras import ops

from conftest import TINY_NAFLEX, naflex_batch, tiny_backbone
from keras_siglip2 import SigLIP2Backbone, SigLIP2NaFlexVisionEncoder
from keras_siglip2.layers import antialiased_bilinear_weights
from keras_siglip2.layers.attention import _heads_major_attention

BACKEND = keras.config.backend()


def _np(x):
    return ops.convert_to_numpy(x)


def _fixed_inputs(b=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "images": rng.uniform(-1, 1, (b, 32, 32, 3)).astype("float32"),
        "token_ids": rng.integers(0, 64, (b, 8)).astype("int32"),
    }


@pytest.mark.parametrize("naflex", [False, True])
def test_outputs_are_normalised_and_logits_follow_t_and_b(naflex):
    backbone = tiny_backbone(naflex)
    inputs = (
        {**naflex_batch([(2, 3), (4, 4), (1, 5)], 16), "token_ids": _fixed_inputs()["token_ids"]}
        if naflex
        else _fixed_inputs()
    )
    out = {k: _np(v) for k, v in backbone(inputs).items()}
    np.testing.assert_allclose(np.linalg.norm(out["image_embeddings"], axis=-1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out["text_embeddings"], axis=-1), 1, atol=1e-5)
    cos = out["image_embeddings"] @ out["text_embeddings"].T
    np.testing.assert_allclose(out["logits"], 10.0 * cos - 10.0, atol=1e-4)
    image_only = {k: v for k, v in inputs.items() if k != "token_ids"}
    encoded = _np(backbone.encode_images(image_only if naflex else inputs["images"]))
    np.testing.assert_allclose(encoded, out["image_embeddings"], atol=1e-6)
    np.testing.assert_allclose(
        _np(backbone.encode_text(inputs["token_ids"])), out["text_embeddings"], atol=1e-6
    )


def test_naflex_padding_never_changes_real_tokens():
    encoder = tiny_backbone(naflex=True).vision_encoder
    shapes = [(2, 3), (5, 1), (3, 3)]
    short = naflex_batch(shapes, 9, seed=1)
    long = naflex_batch(shapes, 23, seed=1)
    # Garbage in the padding: values, coordinates, everything but the mask.
    rng = np.random.default_rng(2)
    for i, (h, w) in enumerate(shapes):
        long["patches"][i, h * w:] = rng.normal(size=long["patches"][i, h * w:].shape) * 50
        long["patch_coords"][i, h * w:] = rng.integers(0, 9, (23 - h * w, 2))
    out_short, out_long = encoder(short), encoder(long)
    np.testing.assert_allclose(
        _np(out_short["pooled_output"]), _np(out_long["pooled_output"]), atol=1e-5
    )
    for i, (h, w) in enumerate(shapes):
        n = h * w
        np.testing.assert_allclose(
            _np(out_short["sequence_output"])[i, :n], _np(out_long["sequence_output"])[i, :n],
            atol=1e-5,
        )
    # An image's result does not depend on the other images of the batch.
    alone = encoder(naflex_batch(shapes[:1], 9, seed=1))
    np.testing.assert_allclose(
        _np(alone["pooled_output"])[0], _np(out_short["pooled_output"])[0], atol=1e-5
    )


def test_naflex_fully_padded_row_is_finite():
    encoder = tiny_backbone(naflex=True).vision_encoder
    batch = naflex_batch([(2, 2), (1, 1)], 6)
    batch["patch_mask"][1] = 0
    batch["spatial_shapes"][1] = 0
    assert np.isfinite(_np(encoder(batch)["pooled_output"])).all()


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-5), ("bfloat16", 0.05)])
def test_cpu_attention_core_matches_dot_product_attention(dtype, atol):
    rng = np.random.default_rng(0)
    q, k, v = (ops.convert_to_tensor(rng.normal(size=(2, s, 3, 4)), dtype) for s in (5, 6, 6))
    keep = rng.random((2, 1, 5, 6)) > 0.4
    keep[1, 0, 2] = False  # a query that may attend to nothing: uniform weights, not NaN
    keep = ops.convert_to_tensor(keep)
    for mask in (None, keep):
        want = ops.dot_product_attention(q, k, v, mask=mask, scale=0.5)
        got = _heads_major_attention(q, k, v, mask, 0.5)
        assert keras.backend.standardize_dtype(got.dtype) == dtype
        assert np.isfinite(_np(ops.cast(got, "float32"))).all()
        np.testing.assert_allclose(
            _np(ops.cast(got, "float32")), _np(ops.cast(want, "float32")), atol=atol
        )


@pytest.mark.parametrize("in_size,out_size", [(16, 7), (16, 16), (16, 29), (4, 1), (4, 9), (6, 4)])
def test_position_interpolation_matches_antialiased_resizes(in_size, out_size):
    """Our per-token weights equal jax's and torch's antialiased bilinear resize."""
    import jax
    import torch

    rng = np.random.default_rng(0)
    grid = rng.normal(size=(in_size, in_size)).astype("float32")
    w = _np(antialiased_bilinear_weights(
        ops.arange(out_size, dtype="float32"), ops.full((out_size,), float(out_size)), in_size
    ))
    ours = w @ grid @ w.T
    ref_jax = np.asarray(jax.image.resize(grid, (out_size, out_size), "bilinear", antialias=True))
    ref_torch = torch.nn.functional.interpolate(
        torch.from_numpy(grid)[None, None], size=(out_size, out_size), mode="bilinear",
        antialias=True, align_corners=False,
    )[0, 0].numpy()
    np.testing.assert_allclose(ours, ref_jax, atol=1e-5)
    np.testing.assert_allclose(ours, ref_torch, atol=1e-5)


def test_naflex_compiles_once_for_all_spatial_shapes():
    """Static shapes: one trace serves batches of different aspect ratios."""
    encoder = SigLIP2NaFlexVisionEncoder(**TINY_NAFLEX)
    traces = []

    def forward(batch):
        traces.append(1)
        return encoder(batch)["pooled_output"]

    if BACKEND == "jax":
        import jax

        compiled = jax.jit(forward)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(forward, jit_compile=True, reduce_retracing=True)
    else:
        pytest.skip("torch.compile is not needed for static shapes in eager torch")
    results = [
        _np(compiled({k: ops.convert_to_tensor(v) for k, v in naflex_batch(s, 20).items()}))
        for s in ([(2, 3), (4, 4)], [(5, 4), (1, 1)], [(1, 20), (3, 6)])
    ]
    assert len(traces) == 1
    eager = _np(encoder(naflex_batch([(1, 20), (3, 6)], 20))["pooled_output"])
    np.testing.assert_allclose(results[-1], eager, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "bfloat16"])
def test_reduced_precision_keeps_softmax_norm_and_logits_in_float32(policy):
    reference = tiny_backbone(seed=3)
    low = tiny_backbone(seed=3, dtype=policy)
    low.set_weights(reference.get_weights())
    inputs = _fixed_inputs()
    ref_out, out = reference(inputs), low(inputs)
    dtype = keras.backend.standardize_dtype
    assert dtype(out["logits"].dtype) == "float32"
    assert dtype(out["image_embeddings"].dtype) == "float32"
    assert all(dtype(v.dtype) == "float32" for v in low.logits_head.weights)
    variable_dtypes = {dtype(v.dtype) for v in low.weights}
    want = {"float32"} if policy == "mixed_bfloat16" else {"float32", "bfloat16"}
    assert variable_dtypes == want
    for key in ("image_embeddings", "text_embeddings"):
        np.testing.assert_allclose(_np(out[key]), _np(ref_out[key]), atol=0.05)


def test_config_round_trip_and_keras_file(tmp_path):
    for naflex in (False, True):
        backbone = tiny_backbone(naflex)
        clone = SigLIP2Backbone.from_config(backbone.get_config())
        assert clone.get_config() == backbone.get_config()
        assert clone.count_params() == backbone.count_params()
        path = tmp_path / f"model_{naflex}.keras"
        backbone.save(path)
        restored = keras.saving.load_model(path)
        assert isinstance(restored, SigLIP2Backbone)
        inputs = (
            {**naflex_batch([(2, 3), (3, 2)], 8), "token_ids": _fixed_inputs(2)["token_ids"]}
            if naflex
            else _fixed_inputs()
        )
        for key, value in backbone(inputs).items():
            np.testing.assert_allclose(_np(restored(inputs)[key]), _np(value), atol=1e-6)


_OTHER_BACKEND_SCRIPT = """
import sys, numpy as np, keras
sys.path.insert(0, {tests!r})
from conftest import tiny_backbone
data = np.load({data!r})
for naflex in (False, True):
    backbone = tiny_backbone(naflex, seed=99)
    backbone.load_weights({weights!r}.format(naflex))
    prefix = str(naflex) + "/in/"
    inputs = {{k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}}
    out = backbone(inputs)
    for key in ("image_embeddings", "text_embeddings"):
        want = data[str(naflex) + "/out/" + key]
        diff = np.abs(keras.ops.convert_to_numpy(out[key]) - want).max()
        print(keras.config.backend(), naflex, key, diff)
        assert diff <= 1e-5, diff
"""


def test_weights_load_under_the_other_backends_with_the_same_outputs(tmp_path):
    arrays = {}
    for naflex in (False, True):
        backbone = tiny_backbone(naflex, seed=7)
        inputs = (
            {**naflex_batch([(2, 3), (3, 3)], 10), "token_ids": _fixed_inputs(2)["token_ids"]}
            if naflex
            else _fixed_inputs()
        )
        backbone.save_weights(tmp_path / f"w_{naflex}.weights.h5")
        out = backbone(inputs)
        arrays.update({f"{naflex}/in/{k}": v for k, v in inputs.items()})
        arrays.update({f"{naflex}/out/{k}": _np(v) for k, v in out.items()})
    np.savez(tmp_path / "data.npz", **arrays)
    script = _OTHER_BACKEND_SCRIPT.format(
        tests=str(pathlib.Path(__file__).parent),
        data=str(tmp_path / "data.npz"),
        weights=str(tmp_path / "w_{}.weights.h5"),
    )
    for other in {"jax", "tensorflow", "torch"} - {BACKEND}:
        env = {**os.environ, "KERAS_BACKEND": other}
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        assert result.stdout.count(other) == 4, result.stdout
