"""Shared test helpers: tiny model configs (every backend, seconds to build)."""

import numpy as np
import pytest

import keras

from keras_siglip2 import (
    SigLIP2Backbone,
    SigLIP2NaFlexVisionEncoder,
    SigLIP2TextEncoder,
    SigLIP2VisionEncoder,
)
from keras_siglip2.testing import random_naflex_batch

TINY_TEXT = dict(
    vocabulary_size=64, sequence_length=8, hidden_dim=16, num_layers=2,
    num_heads=2, intermediate_dim=32, embedding_dim=16,
)
TINY_VISION = dict(
    image_size=32, patch_size=8, hidden_dim=16, num_layers=2, num_heads=2,
    intermediate_dim=32,
)
TINY_NAFLEX = dict(
    patch_size=4, hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32,
    position_grid_size=4,
)


def tiny_backbone(naflex=False, seed=0, dtype=None):
    keras.utils.set_random_seed(seed)
    vision = (
        SigLIP2NaFlexVisionEncoder(**TINY_NAFLEX, dtype=dtype)
        if naflex
        else SigLIP2VisionEncoder(**TINY_VISION, dtype=dtype)
    )
    return SigLIP2Backbone(vision, SigLIP2TextEncoder(**TINY_TEXT, dtype=dtype), dtype=dtype)


def naflex_batch(shapes, max_patches, patch_size=4, seed=0):
    """A padded NaFlex batch of random patches for images of `shapes` (rows, cols)."""
    return random_naflex_batch(shapes, max_patches, patch_size, seed)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tiny torch ops run many times slower on a loaded
    2-core machine with a thread per core. Other backends are left alone."""
    if keras.config.backend() != "torch":
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def value_and_grad(fn, *args):
    """(fn(*args), d fn / d args) as numpy with the backend's autodiff (jitted on JAX).

    Arguments the value does not depend on get zero gradients.
    """
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        value, grads = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(len(args)))))(*args)
    elif backend == "tensorflow":
        import tensorflow as tf

        args = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(args)
            value = fn(*args)
        grads = tape.gradient(value, args)
    else:
        import torch

        args = [torch.tensor(np.asarray(a), requires_grad=True) for a in args]
        value = fn(*args)
        grads = torch.autograd.grad(value, args, allow_unused=True)
    return keras.ops.convert_to_numpy(value), [
        np.zeros(a.shape) if g is None else keras.ops.convert_to_numpy(g)
        for a, g in zip(args, grads)
    ]
