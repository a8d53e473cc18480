"""`from_preset(..., dtype=..., remat=...)` reaches every tower, for every source of weights."""

import keras
import numpy as np
import pytest

from conftest import naflex_batch, tiny_backbone
from keras_siglip2 import (
    NaFlexImageConverter,
    SigLIP2Backbone,
    SigLIP2ImageConverter,
    SigLIP2NaFlexVisionEncoder,
    SigLIP2TextEncoder,
    SigLIP2Tokenizer,
    SigLIP2VisionEncoder,
)
from keras_siglip2.testing import save_tiny_random_checkpoint
from keras_siglip2.converters import big_vision, huggingface
from keras_siglip2.converters import keras_hub as keras_hub_converter
from test_convert_big_vision import make_checkpoint, save
from test_convert_keras_hub import _keras_hub_backbone

SOURCES = ("saved", "saved_naflex", "big_vision", "huggingface", "keras_hub")
# bfloat16 keeps 8 bits of mantissa: two tiny blocks per tower stay well inside these.
EMBEDDING_TOLERANCE = 0.05
LOGIT_TOLERANCE = 0.05  # relative to exp(t), the logits' scale


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{source: a local checkpoint of that source, written here}."""
    root = tmp_path_factory.mktemp("sources")
    out = {}
    tiny_backbone(seed=1).save_to_preset(root / "saved")
    out["saved"] = root / "saved"
    tiny_backbone(naflex=True, seed=2).save_to_preset(root / "saved_naflex")
    out["saved_naflex"] = root / "saved_naflex"
    out["big_vision"] = save(root, make_checkpoint(naflex=False, seed=3))
    _keras_hub_backbone(seed=4).save_to_preset(str(root / "keras_hub"))
    out["keras_hub"] = root / "keras_hub"
    try:
        from test_convert_huggingface import _hf_model
    except pytest.skip.Exception:  # no torch / transformers here
        return out
    _hf_model(naflex=True, seed=5).save_pretrained(root / "huggingface")
    out["huggingface"] = root / "huggingface"
    return out


def _checkpoint(checkpoints, source):
    if source not in checkpoints:
        pytest.skip("transformers is not installed")
    return str(checkpoints[source])


def _inputs(backbone, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    text = backbone.text_encoder
    token_ids = rng.integers(2, text.vocabulary_size, (batch, text.sequence_length))
    inputs = {"token_ids": token_ids.astype("int32")}
    vision = backbone.vision_encoder
    if backbone.is_naflex:
        shapes = [(2, 3), (3, 3)][:batch]
        inputs.update(naflex_batch(shapes, 12, vision.patch_size, seed=seed))
    else:
        size = vision.image_size
        inputs["images"] = rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    return inputs


def _outputs(backbone, inputs):
    return {
        k: keras.ops.convert_to_numpy(keras.ops.cast(v, "float32"))
        for k, v in backbone(inputs).items()
    }


def _tower_dtypes(backbone):
    return {w.dtype for t in (backbone.vision_encoder, backbone.text_encoder) for w in t.weights}


@pytest.mark.parametrize("source", SOURCES)
def test_bfloat16_towers_from_every_source(checkpoints, source):
    path = _checkpoint(checkpoints, source)
    full = SigLIP2Backbone.from_preset(path, dtype="float32")
    half = SigLIP2Backbone.from_preset(path, dtype="bfloat16")
    assert _tower_dtypes(full) == {"float32"}
    assert _tower_dtypes(half) == {"bfloat16"}, [
        w.path for w in half.weights if w.dtype != "bfloat16"
    ]
    for model in (half, half.vision_encoder, half.text_encoder):
        assert model.dtype_policy.name == "bfloat16"
    # The logit scale and bias are float32 under every policy, by design.
    assert {w.dtype for w in half.logits_head.weights} == {"float32"}

    inputs = _inputs(full)
    want, got = _outputs(full, inputs), _outputs(half, inputs)
    for key in ("image_embeddings", "text_embeddings"):
        np.testing.assert_allclose(got[key], want[key], atol=EMBEDDING_TOLERANCE, err_msg=key)
    scale = float(np.exp(keras.ops.convert_to_numpy(full.logits_head.logit_scale)))
    np.testing.assert_allclose(got["logits"], want["logits"], atol=LOGIT_TOLERANCE * scale)


@pytest.mark.parametrize("source", SOURCES)
def test_encoders_from_every_source(checkpoints, source):
    path = _checkpoint(checkpoints, source)
    backbone = SigLIP2Backbone.from_preset(path, dtype="bfloat16")
    vision_cls = type(backbone.vision_encoder)
    for cls, want in ((vision_cls, backbone.vision_encoder), (SigLIP2TextEncoder,
                                                             backbone.text_encoder)):
        tower = cls.from_preset(path, dtype="bfloat16", remat=True)
        assert type(tower) is cls and tower.remat and tower.encoder.remat
        assert {w.dtype for w in tower.weights} == {"bfloat16"}
        for ours, theirs in zip(tower.weights, want.weights, strict=True):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs)
            )
    other = (
        SigLIP2VisionEncoder if vision_cls is SigLIP2NaFlexVisionEncoder
        else SigLIP2NaFlexVisionEncoder
    )
    with pytest.raises(ValueError, match=f"load it with {vision_cls.__name__}.from_preset"):
        other.from_preset(path)


@pytest.mark.parametrize("source", SOURCES)
def test_remat_from_every_source(checkpoints, source):
    path = _checkpoint(checkpoints, source)
    plain = SigLIP2Backbone.from_preset(path)
    remat = SigLIP2Backbone.from_preset(path, remat=True)
    for tower in (remat.vision_encoder, remat.text_encoder):
        assert tower.remat and tower.encoder.remat
    assert not plain.vision_encoder.remat and not plain.text_encoder.remat
    inputs = _inputs(plain)
    want, got = _outputs(plain, inputs), _outputs(remat, inputs)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_saved_options_are_kept_unless_given(tmp_path):
    tiny_backbone(dtype="bfloat16").save_to_preset(tmp_path / "half")
    SigLIP2Backbone.from_preset(tmp_path / "half", remat=True).save_to_preset(tmp_path / "remat")
    kept = SigLIP2Backbone.from_preset(tmp_path / "remat")
    assert kept.vision_encoder.remat and kept.text_encoder.remat
    assert _tower_dtypes(kept) == {"bfloat16"}
    assert not SigLIP2Backbone.from_preset(tmp_path / "remat", remat=False).text_encoder.remat


def test_tower_saved_on_its_own(tmp_path):
    tiny_backbone().text_encoder.save_to_preset(tmp_path)
    tower = SigLIP2TextEncoder.from_preset(tmp_path, dtype="bfloat16", remat=True)
    assert tower.remat and {w.dtype for w in tower.weights} == {"bfloat16"}


def test_unknown_keyword_is_named(checkpoints):
    path = _checkpoint(checkpoints, "saved")
    for load in (
        SigLIP2Backbone.from_preset, SigLIP2VisionEncoder.from_preset,
        SigLIP2NaFlexVisionEncoder.from_preset, SigLIP2TextEncoder.from_preset,
        big_vision.load_backbone, huggingface.load_backbone, keras_hub_converter.load_backbone,
    ):
        with pytest.raises(TypeError, match="unexpected keyword argument 'dropout'") as error:
            load(path, dropout=0.1)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("naflex", [False, True], ids=["fixed", "naflex"])
def test_preprocessing_from_preset_kwargs(tmp_path, naflex):
    path = save_tiny_random_checkpoint(tmp_path, naflex=naflex)
    tokenizer = SigLIP2Tokenizer.from_preset(path, dtype="int64", sequence_length=6)
    assert tokenizer(["a red square"]).dtype == np.int64
    assert tokenizer(["a red square"]).shape == (1, 6)
    converter_cls = NaFlexImageConverter if naflex else SigLIP2ImageConverter
    converter = converter_cls.from_preset(path, dtype="bfloat16")
    assert converter.dtype_policy.name == "bfloat16"
    for load in (SigLIP2Tokenizer.from_preset, converter_cls.from_preset):
        with pytest.raises((TypeError, ValueError), match="'dropout'") as error:
            load(path, dropout=0.1)
        assert "\n" not in str(error.value)
