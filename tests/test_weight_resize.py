"""Position-embedding resize, FlexiViT PI-resize, and `resize_backbone`."""

import numpy as np
import pytest

import keras

from conftest import TINY_NAFLEX, TINY_VISION, naflex_batch, tiny_backbone
from keras_siglip2.weight_resize import (
    resize_backbone,
    resize_matrix,
    resize_patch_embedding,
    resize_position_embedding,
)

jax = pytest.importorskip("jax")


def _jax_resize(x, shape, antialias=True):
    return np.asarray(jax.image.resize(x, shape, "bilinear", antialias=antialias))


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("old, new", [(4, 7), (7, 4), (16, 24), (16, 5), (3, 3)])
@pytest.mark.parametrize("antialias", [True, False])
def test_resize_matrix_matches_jax(old, new, antialias):
    x = np.random.default_rng(old * new).normal(size=(old,)).astype("float32")
    np.testing.assert_allclose(
        resize_matrix(old, new, antialias) @ x, _jax_resize(x, (new,), antialias),
        rtol=1e-5, atol=1e-6,
    )


@pytest.mark.parametrize("old, new", [(4, 6), (6, 4), (5, 5), (16, 3)])
def test_position_embedding_matches_jax_in_every_layout(old, new):
    rng = np.random.default_rng(old + 10 * new)
    grid = rng.normal(size=(old, old, 8)).astype("float32")
    want = _jax_resize(grid, (new, new, 8))
    np.testing.assert_allclose(resize_position_embedding(grid, new), want, rtol=1e-5, atol=1e-6)
    flat = grid.reshape(old * old, 8)
    np.testing.assert_allclose(
        resize_position_embedding(flat, new), want.reshape(new * new, 8), rtol=1e-5, atol=1e-6
    )
    out = resize_position_embedding(flat[None], new)
    assert out.shape == (1, new * new, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], want.reshape(new * new, 8), rtol=1e-5, atol=1e-6)
    if old == new:
        np.testing.assert_array_equal(resize_position_embedding(grid, new), grid)
        np.testing.assert_array_equal(resize_position_embedding(flat[None], new), flat[None])


def test_position_embedding_non_square_and_tensor_input():
    grid = np.random.default_rng(0).normal(size=(4, 4, 6)).astype("float32")
    out = resize_position_embedding(keras.ops.convert_to_tensor(grid), (3, 7))
    np.testing.assert_allclose(out, _jax_resize(grid, (3, 7, 6)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not a square"):
        resize_position_embedding(np.zeros((10, 6)), 4)


@pytest.mark.parametrize("old, new", [(4, 8), (4, 6), (3, 7)])
@pytest.mark.parametrize("flat", [False, True])
def test_pi_resize_keeps_tokens_of_upsampled_patches(old, new, flat):
    rng = np.random.default_rng(old * new)
    kernel = rng.normal(size=(old, old, 3, 5)).astype("float32")
    patches = rng.normal(size=(10, old, old, 3)).astype("float32")
    upsampled = _jax_resize(patches, (10, new, new, 3), antialias=False)
    if flat:  # The NaFlex dense kernel over (P, P, 3) flattened patches.
        new_kernel = resize_patch_embedding(kernel.reshape(-1, 5), new)
        assert new_kernel.shape == (new * new * 3, 5)
        got = upsampled.reshape(10, -1) @ new_kernel
    else:
        new_kernel = resize_patch_embedding(kernel, new)
        assert new_kernel.shape == (new, new, 3, 5)
        got = np.einsum("bhwc,hwcd->bd", upsampled, new_kernel)
    want = np.einsum("bhwc,hwcd->bd", patches, kernel)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_pi_resize_identity_and_downsampling():
    kernel = np.random.default_rng(0).normal(size=(6, 6, 3, 4)).astype("float32")
    np.testing.assert_array_equal(resize_patch_embedding(kernel, 6), kernel)
    np.testing.assert_array_equal(
        resize_patch_embedding(kernel.reshape(-1, 4), (6, 6)), kernel.reshape(-1, 4)
    )
    # Shrinking: ω' is the least-squares solution of Bᵀω' = ω (normal equations hold).
    small = resize_patch_embedding(kernel, 4).reshape(16, 12).astype("float64")
    b = np.kron(resize_matrix(6, 4, False), resize_matrix(6, 4, False))
    residual = b.T @ small - kernel.reshape(36, 12)
    np.testing.assert_allclose(b @ residual, 0, atol=1e-4)
    assert resize_patch_embedding(kernel, (4, 8)).shape == (4, 8, 3, 4)


def _fixed_inputs(backbone, image_size, b=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "images": rng.uniform(-1, 1, (b, image_size, image_size, 3)).astype("float32"),
        "token_ids": rng.integers(0, 64, (b, 8)).astype("int32"),
    }


def _outputs(backbone, inputs):
    return {k: _np(v) for k, v in backbone(inputs).items()}


def test_resize_backbone_unchanged_size_is_identical():
    backbone = tiny_backbone()
    same = resize_backbone(backbone)
    assert same is not backbone and same.text_encoder is not backbone.text_encoder
    inputs = _fixed_inputs(backbone, TINY_VISION["image_size"])
    want, got = _outputs(backbone, inputs), _outputs(same, inputs)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_resize_backbone_new_resolution_is_finite():
    backbone = tiny_backbone()
    bigger = resize_backbone(backbone, image_size=48)  # 4×4 → 6×6 patches of 8.
    vision = bigger.vision_encoder
    assert (vision.image_size, vision.patch_size) == (48, 8)
    np.testing.assert_allclose(
        _np(vision.position_embedding.weights[0]).reshape(6, 6, -1),
        _jax_resize(_np(backbone.vision_encoder.position_embedding.weights[0]).reshape(4, 4, 16),
                    (6, 6, 16)),
        rtol=1e-5, atol=1e-6,
    )
    out = _outputs(bigger, _fixed_inputs(bigger, 48))
    assert all(np.isfinite(v).all() for v in out.values())
    # The text tower and the logit head are copied unchanged.
    np.testing.assert_array_equal(_np(bigger.logits_head.logit_bias),
                                  _np(backbone.logits_head.logit_bias))
    tokens = _fixed_inputs(bigger, 48)["token_ids"]
    np.testing.assert_array_equal(_np(bigger.encode_text(tokens)),
                                  _np(backbone.encode_text(tokens)))


def test_resize_backbone_patch_size_keeps_outputs_on_upsampled_patches():
    # 32 px with patches of 8 → 64 px with patches of 16: same 4×4 grid, so only
    # the PI-resize acts; each 16 px patch is its 8 px patch upsampled.
    backbone = tiny_backbone()
    resized = resize_backbone(backbone, image_size=64, patch_size=16)
    inputs = _fixed_inputs(backbone, 32)
    images = inputs["images"]
    patches = images.reshape(2, 4, 8, 4, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(32, 8, 8, 3)
    big = _jax_resize(patches, (32, 16, 16, 3), antialias=False)
    big = big.reshape(2, 4, 4, 16, 16, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 64, 64, 3)
    want = _outputs(backbone, inputs)
    got = _outputs(resized, {**inputs, "images": big})
    diff = np.abs(got["image_embeddings"] - want["image_embeddings"]).max()
    print("PI-resize backbone max diff", diff)
    assert diff < 1e-4


def test_resize_naflex_backbone_to_fixed_matches_naflex_on_square_images():
    backbone = tiny_backbone(naflex=True)
    p = TINY_NAFLEX["patch_size"]
    with pytest.raises(ValueError, match="image_size"):
        resize_backbone(backbone)
    fixed = resize_backbone(backbone, image_size=6 * p)  # 6×6 grid from the 4×4 table.
    assert not fixed.is_naflex and fixed.vision_encoder.image_size == 24
    batch = naflex_batch([(6, 6), (6, 6)], 36, p, seed=3)
    images = batch["patches"].reshape(2, 6, 6, p, p, 3).transpose(0, 1, 3, 2, 4, 5)
    images = images.reshape(2, 6 * p, 6 * p, 3)
    tokens = np.random.default_rng(0).integers(0, 64, (2, 8)).astype("int32")
    want = _outputs(backbone, {**batch, "token_ids": tokens})
    got = _outputs(fixed, {"images": images, "token_ids": tokens})
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-5 if key != "logits" else 1e-4)
