"""Loading keras-hub `SigLIPBackbone` presets into `SigLIP2Backbone`: parity and strictness."""

import io
import json
import math
import os
import re
import shutil

import h5py
import keras
import keras_hub
import numpy as np
import pytest
from conftest import tiny_backbone

from keras_siglip2.converters import keras_hub as kh_converter
from keras_siglip2.converters.file_errors import CorruptFileError
from keras_siglip2.converters.keras_hub import KerasHubConversionError
from keras_siglip2.converters.weight_loader import WeightLoadingError
from keras_siglip2.preset_loader import image_config

# Tiny keras-hub SigLIP; "gelu_approximate" is what keras-hub's siglip2 presets use.
VISION = {
    "patch_size": 8, "hidden_dim": 32, "num_layers": 2, "num_heads": 2, "intermediate_dim": 64,
    "intermediate_activation": "gelu_approximate", "layer_norm_epsilon": 1e-6,
    "image_shape": (32, 32, 3),
}
TEXT = {
    "vocabulary_size": 100, "embedding_dim": 32, "hidden_dim": 32, "num_layers": 2, "num_heads": 2,
    "intermediate_dim": 64, "intermediate_activation": "gelu_approximate",
    "layer_norm_epsilon": 1e-6, "max_sequence_length": 8, "projection_dim": 32,
}
# g-opt style: a narrower text tower whose head projects to the image width.
TEXT_PROJECTED = {**TEXT, "embedding_dim": 16, "hidden_dim": 16, "intermediate_dim": 48}


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _keras_hub_backbone(text=TEXT, vision=VISION, seed=0, dtype=None):
    """A random keras-hub SigLIPBackbone with every bias and LayerNorm randomised."""
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.SigLIPBackbone(
        keras_hub.models.SigLIPVisionEncoder(**vision, dtype=dtype),
        keras_hub.models.SigLIPTextEncoder(**text, dtype=dtype),
        dtype=dtype,
    )
    rng = np.random.default_rng(seed)
    for v in backbone.weights:
        if "position_ids" in v.path:
            continue
        shape = tuple(v.shape)
        if v.path.endswith("logit_scale"):
            value = np.array(math.log(10.0) + 0.37)
        elif v.path.endswith("logit_bias"):
            value = np.array(-4.2)
        elif v.path.endswith("gamma"):
            value = 1.0 + 0.3 * rng.standard_normal(shape)
        elif v.path.endswith(("beta", "bias")):
            value = 0.3 * rng.standard_normal(shape)
        else:  # kernels, embeddings, probe: already random, perturb anyway.
            value = _np(v) + 0.05 * rng.standard_normal(shape)
        v.assign(np.asarray(value, "float32").astype(v.dtype))
    return backbone


def _inputs(b=3, image_size=32, vocab=100, length=8, seed=1):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(0, vocab, (b, length)).astype("int32")
    token_ids[0, -3:] = 0  # padding, attended to as in the released models
    return {
        "images": rng.uniform(-1, 1, (b, image_size, image_size, 3)).astype("float32"),
        "token_ids": token_ids,
    }


def _l2(x):
    x = np.asarray(x, "float64")
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _max_differences(ours, theirs, inputs):
    """Max |ours − keras-hub| of the L2-normalised embeddings and of the logits."""
    # `predict_on_batch` compiles each model once (eager JAX compiles op by op).
    out = {k: _np(v) for k, v in ours.predict_on_batch(inputs).items()}
    image = theirs.vision_encoder.predict_on_batch({"images": inputs["images"]})
    text = theirs.text_encoder.predict_on_batch({"token_ids": inputs["token_ids"]})
    # keras-hub's own head (what `SigLIPBackbone` outputs), without re-running
    # the towers: `vision_logits` are image i against text j, like ours.
    vision_logits, text_logits = (_np(x) for x in theirs.siglip_head(image, text))
    return {
        "image_embeddings": float(np.abs(out["image_embeddings"] - _l2(_np(image))).max()),
        "text_embeddings": float(np.abs(out["text_embeddings"] - _l2(_np(text))).max()),
        "logits": float(np.abs(out["logits"] - vision_logits).max()),
        "logits_transposed": float(np.abs(out["logits"].T - text_logits).max()),
    }


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """(keras-hub backbone, its preset dir) shared by the strictness tests."""
    backbone = _keras_hub_backbone()
    path = tmp_path_factory.mktemp("kh") / "siglip2_tiny"
    backbone.save_to_preset(str(path))
    return backbone, path


@pytest.fixture(scope="module")
def own_preset(tmp_path_factory):
    """A preset saved by our own `SigLIP2Backbone.save_to_preset`."""
    path = tmp_path_factory.mktemp("ours") / "siglip2_ours"
    tiny_backbone().save_to_preset(str(path))
    return path


def _copy(preset_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(preset_dir, target)
    return target


def _edit_config(path, edit):
    file = path / "config.json"
    config = json.loads(file.read_text())
    edit(config["config"])
    file.write_text(json.dumps(config))


# ---------------------------------------------------------------------------
# Parity


def test_parity_with_keras_hub(preset):
    theirs, path = preset
    assert kh_converter.is_keras_hub_checkpoint(path)
    ours = kh_converter.load_backbone(path)
    diffs = _max_differences(ours, theirs, _inputs())
    print("keras-hub parity", keras.config.backend(), diffs)
    assert diffs["image_embeddings"] <= 1e-5, diffs
    assert diffs["text_embeddings"] <= 1e-5, diffs
    assert diffs["logits"] <= 1e-4, diffs
    assert diffs["logits_transposed"] <= 1e-4, diffs
    # The logit parameters are the preset's, not our defaults.
    assert np.isclose(_np(ours.logits_head.logit_scale), math.log(10.0) + 0.37)
    assert np.isclose(_np(ours.logits_head.logit_bias), -4.2)


def test_parity_with_text_projection_sharding_and_patch_remainder(tmp_path):
    """A g-opt-like text head (16 → 32), keras-hub shards, and 36 px at patch 8.

    36 = 4·8 + 4 mimics siglip2_so400m_patch14_384 (384 = 27·14 + 6): the
    pixels past the last whole patch are dropped by both models.
    """
    vision = {**VISION, "image_shape": (36, 36, 3)}
    theirs = _keras_hub_backbone(text=TEXT_PROJECTED, vision=vision, seed=3)
    path = tmp_path / "sharded"
    theirs.save_to_preset(str(path), max_shard_size=5e-5)  # GB: several shards
    shards = [f for f in os.listdir(path) if f.endswith(".weights.h5")]
    assert "model.weights.json" in os.listdir(path) and len(shards) > 1, shards
    ours = kh_converter.load_backbone(path)
    assert ours.text_encoder.hidden_dim == 16 and ours.text_encoder.embedding_dim == 32
    assert ours.vision_encoder.image_size == 36
    diffs = _max_differences(ours, theirs, _inputs(image_size=36, seed=4))
    print("keras-hub parity (projected, sharded, 36px)", keras.config.backend(), diffs)
    assert diffs["image_embeddings"] <= 1e-5, diffs
    assert diffs["text_embeddings"] <= 1e-5, diffs
    assert diffs["logits"] <= 1e-4, diffs


def test_bfloat16_preset_and_dtype_argument(tmp_path):
    """bfloat16 weights (stored specially by Keras) decode exactly; `dtype` is honoured."""
    theirs = _keras_hub_backbone(seed=5, dtype="bfloat16")
    path = tmp_path / "bf16"
    theirs.save_to_preset(str(path))
    ours = kh_converter.load_backbone(path)  # None: Keras' default policy (float32)
    assert ours.dtype_policy.name == "float32"
    np.testing.assert_array_equal(
        _np(ours.text_encoder.token_embedding.embeddings),
        _np(keras.ops.cast(theirs.text_encoder.embedding.token_embedding.embeddings, "float32")),
    )
    ours_bf16 = kh_converter.load_backbone(path, dtype="bfloat16")
    kernel = ours_bf16.vision_encoder.encoder.blocks[0].mlp.fc1.kernel
    assert kernel.dtype == "bfloat16"
    np.testing.assert_array_equal(
        _np(keras.ops.cast(kernel, "float32")),
        _np(keras.ops.cast(theirs.vision_encoder.encoder_layers[0].mlp.fc1.kernel, "float32")),
    )


# ---------------------------------------------------------------------------
# Detection, tokenizer and image converter


def test_is_keras_hub_checkpoint(preset, own_preset, tmp_path):
    _, path = preset
    assert kh_converter.is_keras_hub_checkpoint(path)
    assert kh_converter.is_keras_hub_checkpoint(str(path))
    assert not kh_converter.is_keras_hub_checkpoint(tmp_path)  # no config.json
    assert not kh_converter.is_keras_hub_checkpoint(tmp_path / "absent")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert not kh_converter.is_keras_hub_checkpoint(tmp_path / "broken")
    assert not kh_converter.is_keras_hub_checkpoint(own_preset)


def _tiny_spm():
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["a photo of a cat", "a photo of a dog", "two cats"]),
        model_writer=model, vocab_size=11, model_type="WORD",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
    )
    return model.getvalue()


def test_tokenizer_and_image_converter(preset, tmp_path):
    _, source = preset
    path = _copy(source, tmp_path)
    assert kh_converter.tokenizer_proto(path) is None
    assert kh_converter.tokenizer_class(path) is None
    assert kh_converter.image_config(path) == {}
    vision_size = json.loads((path / "config.json").read_text())["config"]["vision_encoder"][
        "config"]["image_shape"][0]
    assert image_config(str(path)) == {"image_size": vision_size}

    # As keras-hub's conversion script saves siglip2 presets.
    proto = _tiny_spm()
    keras_hub.models.GemmaTokenizer(proto=proto).save_to_preset(str(path))
    keras_hub.layers.SigLIPImageConverter(
        image_size=(32, 32), scale=[1 / 255 / 0.5] * 3, offset=[-0.5 / 0.5] * 3,
        interpolation="bicubic", antialias=True, crop_to_aspect_ratio=False,
    ).save_to_preset(str(path))

    vocab = kh_converter.tokenizer_proto(path)
    assert vocab == os.path.join(path, "assets", "tokenizer", "vocabulary.spm")
    with open(vocab, "rb") as f:
        assert f.read() == proto
    assert kh_converter.tokenizer_class(path) == "GemmaTokenizer"

    config = kh_converter.image_config(path)
    assert config["source"] == "image_converter.json"
    assert config["class_name"] == "SigLIPImageConverter"
    assert config["image_size"] == (32, 32)
    assert config["interpolation"] == "bicubic" and config["antialias"] is True
    assert config["crop_to_aspect_ratio"] is False
    np.testing.assert_allclose(config["scale"], [2 / 255] * 3)
    np.testing.assert_allclose(config["offset"], [-1.0] * 3)
    np.testing.assert_allclose(config["value_range"], (-1.0, 1.0))
    assert image_config(str(path)) == {"image_size": 32}

    # Only a preprocessor.json: the converter nested in it is read.
    image_converter = json.loads((path / "image_converter.json").read_text())
    os.remove(path / "image_converter.json")
    (path / "preprocessor.json").write_text(json.dumps({
        "class_name": "SigLIPPreprocessor",
        "config": {"image_converter": image_converter, "sequence_length": 64},
    }))
    nested = kh_converter.image_config(path)
    assert nested["source"] == "preprocessor.json"
    assert {k: v for k, v in nested.items() if k != "source"} == {
        k: v for k, v in config.items() if k != "source"
    }


# ---------------------------------------------------------------------------
# Strictness


def test_missing_tensor_is_a_clear_error(preset, tmp_path):
    _, source = preset
    path = _copy(source, tmp_path)
    key = "layers/sig_lip_text_encoder/layers/sig_lip_encoder_layer_1/layer_norm2/vars/1"
    with h5py.File(path / "model.weights.h5", "a") as f:
        del f[key]
    with pytest.raises(WeightLoadingError, match="missing") as info:
        kh_converter.load_backbone(path)
    assert key in str(info.value)


def test_unused_tensor_is_a_clear_error(preset, tmp_path):
    _, source = preset
    path = _copy(source, tmp_path)
    with h5py.File(path / "model.weights.h5", "a") as f:
        f["layers/sig_lip_text_encoder/layers/extra_layer/vars/0"] = np.zeros(3)
    with pytest.raises(WeightLoadingError, match="not used"):
        kh_converter.load_backbone(path)


def test_missing_weights_file(preset, tmp_path):
    _, source = preset
    path = _copy(source, tmp_path)
    os.remove(path / "model.weights.h5")
    with pytest.raises(KerasHubConversionError, match="model.weights.h5"):
        kh_converter.load_backbone(path)


def test_config_that_does_not_match_the_weights(preset, tmp_path):
    _, source = preset
    path = _copy(source, tmp_path)
    _edit_config(path, lambda c: c["vision_encoder"]["config"].update(num_heads=4))
    with pytest.raises(WeightLoadingError, match="shape"):
        kh_converter.load_backbone(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["vision_encoder"]["config"].update(intermediate_activation="gelu"),
         "activation"),
        (lambda c: c["text_encoder"]["config"].update(intermediate_activation="relu"),
         "activation"),
        (lambda c: c["text_encoder"]["config"].update(projection_dim=48),
         "projects to 48"),
        (lambda c: c["text_encoder"]["config"].update(embedding_dim=16), "embedding_dim"),
        (lambda c: c["vision_encoder"]["config"].update(image_shape=[32, 48, 3]), "square"),
        (lambda c: c["vision_encoder"]["config"].update(layer_norm_epsilon=1e-5),
         "epsilon"),
        (lambda c: c["text_encoder"]["config"].update(use_causal_mask=True),
         "use_causal_mask"),
        (lambda c: c.update(dtype={"class_name": "QuantizedDTypePolicy",
                                   "config": {"name": "int8_from_float32"}}),
         "quantized"),
        (lambda c: c["text_encoder"].update(class_name="CLIPTextEncoder"), "text encoder"),
    ],
    ids=["vision_gelu_exact", "text_relu", "projection", "embedding_dim",
         "non_square", "epsilon", "unknown_field", "quantized", "other_text_class"],
)
def test_incompatible_config_is_refused(preset, tmp_path, edit, message):
    _, source = preset
    path = _copy(source, tmp_path)
    _edit_config(path, edit)
    with pytest.raises(KerasHubConversionError, match=message):
        kh_converter.load_backbone(path)


def test_not_a_keras_hub_siglip_preset(own_preset):
    with pytest.raises(KerasHubConversionError, match="SigLIPBackbone"):
        kh_converter.load_backbone(own_preset)


def test_truncated_weights_file_is_named(preset, tmp_path):
    _, source = preset
    path = _copy(source, tmp_path)
    weights = path / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match=re.escape(f"{weights} is corrupt or truncated")):
        kh_converter.load_backbone(path)


def test_non_finite_weight_is_named(preset, tmp_path):
    _, source = preset
    path = _copy(source, tmp_path)
    key = "layers/sig_lip_head/vars/0"  # the logit scale
    with h5py.File(path / "model.weights.h5", "a") as f:
        f[key][...] = np.inf
    with pytest.raises(WeightLoadingError, match=f"tensor '{key}' is not finite"):
        kh_converter.load_backbone(path)
