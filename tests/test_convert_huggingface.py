"""Loading transformers SigLIP (fixed resolution) and SigLIP 2 (NaFlex) checkpoints.

The reference is transformers itself: tiny randomly initialised `SiglipModel`
and `Siglip2Model`s are saved with `save_pretrained`, loaded with
`load_backbone`, and both run on the same inputs.
"""

import json
import math
import shutil

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import load_file, save_file
from transformers.models.siglip2.image_processing_pil_siglip2 import (
    convert_image_to_patches,
)

from conftest import naflex_batch
from keras_siglip2.converters.huggingface import (
    is_huggingface_checkpoint,
    load_backbone,
    tokenizer_proto,
)
from keras_siglip2.converters.weight_loader import WeightLoadingError

TEXT = {
    "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 2, "max_position_embeddings": 16, "projection_size": 32,
    "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
}
VISION = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "patch_size": 8,
}
PATCH = 8
MAX_PATCHES = 30
# (rows, cols) patch grids: larger and smaller than the 4×4 position grid,
# square and not, down to a single patch.
NAFLEX_SHAPES = [(5, 5), (2, 7), (3, 3), (6, 4), (1, 1), (4, 4)]

EMBEDDING_ATOL = 1e-5
LOGITS_ATOL = 1e-4


def _perturb(model, seed):
    """Randomises every parameter (torch's init leaves LayerNorms at 1/0 and biases at 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen) * 0.2
            if name == "logit_scale":
                param.copy_(torch.tensor([math.log(7.0)]))
            elif name == "logit_bias":
                param.copy_(torch.tensor([-3.5]))
            else:
                param.add_(noise)
    return model.eval()


def _hf_model(naflex, seed=0):
    torch.manual_seed(seed)
    if naflex:
        config = transformers.Siglip2Config(
            text_config=TEXT, vision_config={**VISION, "num_patches": 16}
        )
        model = transformers.Siglip2Model(config)
    else:
        config = transformers.SiglipConfig(
            text_config=TEXT, vision_config={**VISION, "image_size": 32}
        )
        model = transformers.SiglipModel(config)
    return _perturb(model, seed + 1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{'fixed' | 'naflex': (transformers model, saved directory)}."""
    out = {}
    for kind in ("fixed", "naflex"):
        model = _hf_model(naflex=kind == "naflex")
        path = tmp_path_factory.mktemp(kind)
        model.save_pretrained(path)
        out[kind] = (model, path)
    return out


@pytest.fixture(scope="module")
def loaded(checkpoints):
    return {kind: load_backbone(path) for kind, (_, path) in checkpoints.items()}


def _token_ids(rng, batch=3):
    """Full-length token rows, some ending in padding (id 0), as the released models see them."""
    ids = rng.integers(3, TEXT["vocab_size"], (batch, TEXT["max_position_embeddings"]))
    for i, length in enumerate([5, 16, 11][:batch]):
        ids[i, length - 1] = 1  # EOS
        ids[i, length:] = 0  # pad
    return ids.astype("int64")


def _our_patches(image):
    """(h·P, w·P, 3) → (h·w, P·P·3): row-major patches, each flattened as (P, P, 3)."""
    h, w = image.shape[0] // PATCH, image.shape[1] // PATCH
    x = image.reshape(h, PATCH, w, PATCH, 3).transpose(0, 2, 1, 3, 4)
    return x.reshape(h * w, PATCH * PATCH * 3)


def _naflex_inputs(rng):
    """The same images as transformers' and as our NaFlex inputs."""
    b = len(NAFLEX_SHAPES)
    hf = {
        "pixel_values": np.zeros((b, MAX_PATCHES, PATCH * PATCH * 3), "float32"),
        "pixel_attention_mask": np.zeros((b, MAX_PATCHES), "int64"),
        "spatial_shapes": np.array(NAFLEX_SHAPES, "int64"),
    }
    # Coordinates, mask and shapes as conftest lays them out; the patches are replaced.
    ours = naflex_batch(NAFLEX_SHAPES, MAX_PATCHES, patch_size=PATCH)
    for i, (h, w) in enumerate(NAFLEX_SHAPES):
        n = h * w
        image = rng.uniform(-1, 1, (h * PATCH, w * PATCH, 3)).astype("float32")
        # transformers' own patchifier, on a channels-first image.
        hf["pixel_values"][i, :n] = convert_image_to_patches(image.transpose(2, 0, 1), PATCH)
        hf["pixel_attention_mask"][i, :n] = 1
        ours["patches"][i, :n] = _our_patches(image)
    return hf, ours


def _run_hf(model, hf_inputs, token_ids):
    inputs = {k: torch.from_numpy(v) for k, v in hf_inputs.items()}
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(token_ids), **inputs)
    return {
        "image_embeddings": out.image_embeds.numpy(),
        "text_embeddings": out.text_embeds.numpy(),
        "logits": out.logits_per_image.numpy(),
    }


def _run_ours(backbone, inputs, token_ids):
    out = backbone({**inputs, "token_ids": token_ids.astype("int32")})
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}


def _max_diffs(ours, theirs):
    return {k: float(np.max(np.abs(ours[k] - theirs[k]))) for k in theirs}


def _assert_parity(ours, theirs):
    diffs = _max_diffs(ours, theirs)
    print(f"max abs differences ({keras.backend.backend()}): {diffs}")
    assert diffs["image_embeddings"] <= EMBEDDING_ATOL, diffs
    assert diffs["text_embeddings"] <= EMBEDDING_ATOL, diffs
    assert diffs["logits"] <= LOGITS_ATOL, diffs


def test_fixed_resolution_matches_transformers(checkpoints, loaded):
    model, _ = checkpoints["fixed"]
    backbone = loaded["fixed"]
    assert not backbone.is_naflex
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (3, 32, 32, 3)).astype("float32")
    token_ids = _token_ids(rng)
    theirs = _run_hf(model, {"pixel_values": images.transpose(0, 3, 1, 2).copy()}, token_ids)
    ours = _run_ours(backbone, {"images": images}, token_ids)
    _assert_parity(ours, theirs)


def test_naflex_matches_transformers(checkpoints, loaded):
    model, _ = checkpoints["naflex"]
    backbone = loaded["naflex"]
    assert backbone.is_naflex
    assert backbone.vision_encoder.position_grid_size == 4
    rng = np.random.default_rng(2)
    hf_inputs, our_inputs = _naflex_inputs(rng)
    token_ids = np.concatenate([_token_ids(rng), _token_ids(rng)])  # 6 texts for 6 images
    theirs = _run_hf(model, hf_inputs, token_ids)
    ours = _run_ours(backbone, our_inputs, token_ids)
    _assert_parity(ours, theirs)


def test_patch_orders_agree():
    """transformers' NaFlex patch flattening is our (P, P, 3) row-major order."""
    image = np.arange(2 * PATCH * 3 * PATCH * 3, dtype="float32").reshape(2 * PATCH, 3 * PATCH, 3)
    np.testing.assert_array_equal(
        convert_image_to_patches(image.transpose(2, 0, 1), PATCH), _our_patches(image)
    )


def test_config_is_read(loaded):
    for backbone in loaded.values():
        text = backbone.text_encoder
        assert (text.vocabulary_size, text.sequence_length, text.num_heads) == (100, 16, 2)
        assert backbone.vision_encoder.num_heads == 4
        assert backbone.vision_encoder.layer_norm_epsilon == 1e-6
        assert backbone.vision_encoder.patch_size == PATCH
    assert loaded["fixed"].vision_encoder.image_size == 32
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded["fixed"].logits_head.logit_scale), math.log(7.0),
        rtol=1e-6,
    )


def test_detection_and_tokenizer_proto(checkpoints, tmp_path):
    _, path = checkpoints["fixed"]
    assert is_huggingface_checkpoint(path)
    assert is_huggingface_checkpoint(checkpoints["naflex"][1])
    assert not is_huggingface_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    assert not is_huggingface_checkpoint(tmp_path)
    assert tokenizer_proto(tmp_path) is None
    (tmp_path / "spiece.model").write_bytes(b"")
    assert tokenizer_proto(tmp_path) == str(tmp_path / "spiece.model")
    (tmp_path / "tokenizer.model").write_bytes(b"")
    assert tokenizer_proto(tmp_path) == str(tmp_path / "tokenizer.model")


def _copy_with_tensors(src, dst, edit):
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    tensors = load_file(str(src / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_missing_tensor_is_an_error(checkpoints, tmp_path):
    key = "vision_model.encoder.layers.1.mlp.fc2.bias"
    path = _copy_with_tensors(
        checkpoints["naflex"][1], tmp_path / "ckpt", lambda t: t.pop(key)
    )
    with pytest.raises(WeightLoadingError, match=f"'{key}' is missing"):
        load_backbone(path)


def test_extra_tensor_is_an_error(checkpoints, tmp_path):
    key = "text_model.encoder.layers.2.mlp.fc1.weight"
    path = _copy_with_tensors(
        checkpoints["fixed"][1], tmp_path / "ckpt",
        lambda t: t.__setitem__(key, np.zeros((64, 32), "float32")),
    )
    with pytest.raises(WeightLoadingError, match=f"not used.*{key}"):
        load_backbone(path)


def test_wrong_shape_is_an_error(checkpoints, tmp_path):
    key = "text_model.head.weight"
    path = _copy_with_tensors(
        checkpoints["fixed"][1], tmp_path / "ckpt",
        lambda t: t.__setitem__(key, np.zeros((32, 16), "float32")),
    )
    with pytest.raises(WeightLoadingError, match="shape mismatch"):
        load_backbone(path)


@pytest.mark.parametrize("tower", ["text_config", "vision_config"])
def test_wrong_activation_is_an_error(checkpoints, tmp_path, tower):
    _, src = checkpoints["fixed"]
    shutil.copytree(src, tmp_path / "ckpt")
    config = json.loads((src / "config.json").read_text())
    config[tower]["hidden_act"] = "gelu"
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="hidden_act is 'gelu'.*gelu_pytorch_tanh"):
        load_backbone(tmp_path / "ckpt")


def test_pickle_only_directory_is_refused(checkpoints, tmp_path):
    shutil.copy(checkpoints["fixed"][1] / "config.json", tmp_path / "config.json")
    # Not a valid pickle: it must never be opened, only refused.
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="safetensors"):
        load_backbone(tmp_path)


def _weights(backbone):
    return [keras.ops.convert_to_numpy(v) for v in backbone.weights]


def test_sharded_checkpoint(checkpoints, loaded, tmp_path):
    model, _ = checkpoints["naflex"]
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    for a, b in zip(_weights(load_backbone(tmp_path)), _weights(loaded["naflex"])):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_checkpoint(tmp_path):
    """BF16 tensors (which NumPy cannot hold) are read exactly, as float32."""
    bf16 = _hf_model(naflex=False).to(torch.bfloat16)
    bf16.save_pretrained(tmp_path)
    backbone = load_backbone(tmp_path)
    expected = bf16.text_model.encoder.layers[0].mlp.fc1.weight.detach().float().numpy().T
    got = backbone.text_encoder.encoder.blocks[0].mlp.fc1.kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), expected)


def test_sparse_config_and_prefixed_keys(checkpoints, loaded, tmp_path):
    """Hub configs omit values equal to transformers' defaults; keys may sit under a prefix."""
    _, src = checkpoints["fixed"]
    config = json.loads((src / "config.json").read_text())
    for sub in ("text_config", "vision_config"):
        for key in ("hidden_act", "layer_norm_eps", "projection_size", "vision_use_head",
                    "num_channels"):
            config[sub].pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(src / "model.safetensors"))
    save_file({f"siglip.{k}": v for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    for a, b in zip(_weights(load_backbone(tmp_path)), _weights(loaded["fixed"])):
        np.testing.assert_array_equal(a, b)


def test_image_converters_from_transformers_directories(checkpoints):
    from keras_siglip2 import NaFlexImageConverter, SigLIP2ImageConverter

    fixed = SigLIP2ImageConverter.from_preset(str(checkpoints["fixed"][1]))
    assert fixed.image_size == (checkpoints["fixed"][0].config.vision_config.image_size,) * 2
    naflex_dir = checkpoints["naflex"][1]
    (naflex_dir / "preprocessor_config.json").write_text(
        json.dumps({"patch_size": 4, "max_num_patches": 24})
    )
    naflex = NaFlexImageConverter.from_preset(str(naflex_dir))
    assert (naflex.patch_size, naflex.max_num_patches) == (4, 24)
    with pytest.raises(ValueError, match="NaFlexImageConverter"):
        SigLIP2ImageConverter.from_preset(str(naflex_dir))
