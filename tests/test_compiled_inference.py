"""`SigLIP2Backbone.encode_images` / `encode_text`: compiled by default, the same numbers as the
layers run op by op, numpy out, retraced per batch shape, and the backbone unchanged by it."""

import numpy as np
import pytest

import keras
from keras import ops

from conftest import naflex_batch, tiny_backbone
from keras_siglip2 import SigLIP2Backbone
from keras_siglip2.models.compiled import runs_traced

BACKEND = keras.config.backend()

# Tiny torch ops run much slower on a loaded 2-core machine with a thread per core.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(naflex, batch, seed=0):
    if naflex:
        shapes = [(2, 3), (4, 4), (1, 5), (3, 3), (5, 2)][:batch]
        return naflex_batch(shapes, 16, seed=seed)
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 32, 32, 3)).astype("float32")


def _token_ids(batch, seed=1):
    return np.random.default_rng(seed).integers(0, 64, (batch, 8)).astype("int32")


@pytest.mark.parametrize("naflex", [False, True])
def test_compiled_images_match_the_layers_for_every_batch_size(naflex):
    backbone = tiny_backbone(naflex)
    for batch in (3, 1):  # a new shape retraces
        images = _images(naflex, batch, seed=batch)
        compiled = backbone.encode_images(images)
        assert isinstance(compiled, np.ndarray) and compiled.dtype == np.float32
        assert compiled.shape == (batch, 16)
        eager = backbone.encode_images(images, compiled=False)
        assert ops.is_tensor(eager)
        np.testing.assert_allclose(compiled, ops.convert_to_numpy(eager), atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(compiled), axis=-1), 1, atol=1e-5)
    with_tokens = backbone.encode_images(images, return_tokens=True)
    np.testing.assert_allclose(with_tokens["embeddings"], compiled, atol=1e-6)
    tokens = backbone.vision_encoder(backbone.image_inputs(images) if naflex else images)
    np.testing.assert_allclose(
        np.asarray(with_tokens["tokens"]), ops.convert_to_numpy(tokens["sequence_output"]),
        atol=1e-5,
    )


def test_compiled_text_matches_the_layers_for_every_batch_size():
    backbone = tiny_backbone()
    for batch in (2, 5, 1):
        token_ids = _token_ids(batch, seed=batch)
        compiled = backbone.encode_text(token_ids)
        assert isinstance(compiled, np.ndarray) and compiled.shape == (batch, 16)
        eager = ops.convert_to_numpy(backbone.encode_text(token_ids, compiled=False))
        np.testing.assert_allclose(compiled, eager, atol=1e-5)
    if BACKEND != "tensorflow":  # A preprocessing layer's output on another backend.
        import tensorflow as tf

        from_tf = backbone.encode_text(tf.constant(token_ids))
        np.testing.assert_allclose(from_tf, compiled, atol=1e-6)


def test_compiled_calls_follow_the_current_weights():
    backbone = tiny_backbone()
    token_ids = _token_ids(3)
    before = backbone.encode_text(token_ids)
    variable = backbone.text_encoder.trainable_variables[0]
    variable.assign(variable * 2.0)
    after = backbone.encode_text(token_ids)
    assert np.abs(after - before).max() > 1e-3
    eager = ops.convert_to_numpy(backbone.encode_text(token_ids, compiled=False))
    np.testing.assert_allclose(after, eager, atol=1e-5)


def test_fastest_compiled_mode_matches_the_layers():
    # On torch, "max" compiles the exported program with torch.compile; elsewhere it is True.
    backbone = tiny_backbone()
    token_ids = _token_ids(3)
    fastest = backbone.encode_text(token_ids, compiled="max")
    assert isinstance(fastest, np.ndarray) and fastest.shape == (3, 16)
    eager = ops.convert_to_numpy(backbone.encode_text(token_ids, compiled=False))
    np.testing.assert_allclose(fastest, eager, atol=1e-5)
    with pytest.raises(ValueError, match='compiled is True, False or "max"; got \'fast\''):
        backbone.encode_text(token_ids, compiled="fast")


@pytest.mark.skipif(BACKEND != "torch", reason="torch.export programs are torch's")
def test_torch_programs_export_again_for_replaced_variables():
    from keras_siglip2.models.torch_program import ExportedPrograms

    dense = keras.layers.Dense(2)
    model = keras.Sequential([keras.Input((3,)), dense])
    run = ExportedPrograms(model)
    x = np.ones((4, 3), "float32")
    np.testing.assert_allclose(run(x), ops.convert_to_numpy(model(x)), atol=1e-6)
    dense.kernel.assign(np.full((3, 2), 2.0, "float32"))  # written in place: same program
    assert len(run.programs) == 1
    np.testing.assert_allclose(run(x), ops.convert_to_numpy(model(x)), atol=1e-6)
    assert len(run.programs) == 1
    model.quantize("int8")  # new variables: a new program
    np.testing.assert_allclose(run(x), ops.convert_to_numpy(model(x)), atol=1e-6)
    assert len(run.programs) == 2
    run(np.ones((2, 3), "float32"))  # a new shape
    assert len(run.programs) == 3


def test_symbolic_traced_and_nested_calls_run_the_layers():
    backbone = tiny_backbone()
    token_ids = _token_ids(3)
    expected = backbone.encode_text(token_ids)
    symbolic = backbone.encode_text(keras.Input((8,), dtype="int32"))
    assert keras.backend.is_keras_tensor(symbolic) and tuple(symbolic.shape) == (None, 16)

    class Outer(keras.Model):  # as `SigLIP2Trainer.call` uses the backbone
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def call(self, token_ids):
            return self.backbone.encode_text(token_ids)

    nested = Outer(backbone)(token_ids)
    assert ops.is_tensor(nested)  # not numpy: differentiable, part of the outer computation
    if BACKEND == "torch":
        assert nested.requires_grad
    np.testing.assert_allclose(ops.convert_to_numpy(nested), expected, atol=1e-5)
    if BACKEND == "jax":
        import jax

        traced = jax.jit(backbone.encode_text)(token_ids)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        traced = tf.function(backbone.encode_text)(token_ids)
    else:
        traced = None
    if traced is not None:
        np.testing.assert_allclose(ops.convert_to_numpy(traced), expected, atol=1e-5)
    assert not runs_traced(token_ids)


def test_reduced_precision_embeddings_are_float32():
    reference, low = tiny_backbone(seed=3), tiny_backbone(seed=3, dtype="bfloat16")
    low.set_weights(reference.get_weights())
    images = _images(False, 2)
    compiled = low.encode_images(images)
    assert compiled.dtype == np.float32
    np.testing.assert_allclose(compiled, reference.encode_images(images), atol=0.05)


@pytest.mark.parametrize("naflex", [False, True])
def test_backbone_saves_and_loads_after_compiled_use(naflex, tmp_path):
    backbone = tiny_backbone(naflex, seed=5)
    config, num_weights = backbone.get_config(), len(backbone.weights)
    images, token_ids = _images(naflex, 2), _token_ids(2)
    image_embeddings = backbone.encode_images(images)
    text_embeddings = backbone.encode_text(token_ids)
    assert backbone.get_config() == config and len(backbone.weights) == num_weights
    backbone.save_to_preset(tmp_path / "preset")
    restored = SigLIP2Backbone.from_preset(tmp_path / "preset")
    assert restored.get_config() == config
    np.testing.assert_allclose(restored.encode_images(images), image_embeddings, atol=1e-6)
    np.testing.assert_allclose(restored.encode_text(token_ids), text_embeddings, atol=1e-6)
    backbone.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded.encode_text(token_ids), text_embeddings, atol=1e-6)
