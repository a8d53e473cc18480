"""Truncated or damaged checkpoint files, and non-finite weights: an error naming the file.

The files are cut or damaged the way a killed process or an interrupted download leaves them:
zero bytes, the first half only, or bytes overwritten in the middle.
"""

import json
import re
import shutil

import h5py
import numpy as np
import pytest

import keras

from conftest import tiny_backbone
from keras_siglip2 import SigLIP2Backbone
from keras_siglip2.checkpoint import (
    DECODER_CONFIG_FILE, DECODER_WEIGHTS_FILE, load_checkpoint, save_checkpoint,
)
from keras_siglip2.converters.file_errors import CorruptFileError
from keras_siglip2.converters.weight_loader import WeightLoadingError
from keras_siglip2.locca_targets import LocCaVocabulary
from keras_siglip2.models.locca_decoder import LocCaDecoder
from keras_siglip2.preprocessing import SigLIP2ImageConverter

DAMAGES = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "overwritten": lambda data: data[:800] + b"\xff" * 4000 + data[4800:],
}


def _damage(path, how):
    path.write_bytes(DAMAGES[how](path.read_bytes()))


def _says_corrupt(path):
    """The message `reading` gives for `path`, as a regex."""
    return re.escape(str(path)) + r" is corrupt or truncated \(.*\): re-download or re-convert it"


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A tiny backbone saved with `save_to_preset`, and the backbone."""
    backbone = tiny_backbone(seed=3)
    path = tmp_path_factory.mktemp("preset")
    backbone.save_to_preset(str(path))
    return path, backbone


def _save_with_decoder(path, backbone, decoder):
    from keras_siglip2.datasets import scenes

    vocabulary = LocCaVocabulary(text_vocabulary_size=64, num_location_bins=4)
    save_checkpoint(path, backbone, scenes.tokenizer(sequence_length=8),
                    SigLIP2ImageConverter(32), decoder, vocabulary)
    return path


def _decoder(num_layers=1, intermediate_dim=32):
    decoder = LocCaDecoder(LocCaVocabulary(64, 4).size, 6, 16, num_layers, 2, intermediate_dim)
    decoder.build((None, 6), (None, None, 16))
    return decoder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, preset):
    """A checkpoint with a LocCa decoder, as `train` writes it, and the decoder."""
    keras.utils.set_random_seed(5)
    decoder = _decoder()
    return _save_with_decoder(tmp_path_factory.mktemp("checkpoint"), preset[1], decoder), decoder


def _copy(source, tmp_path):
    return shutil.copytree(source, tmp_path / "copy")


@pytest.mark.parametrize("how", sorted(DAMAGES))
def test_damaged_keras_weights_are_named(preset, tmp_path, how):
    path = _copy(preset[0], tmp_path)
    _damage(path / "model.weights.h5", how)
    with pytest.raises(CorruptFileError, match=_says_corrupt(path / "model.weights.h5")):
        SigLIP2Backbone.from_preset(str(path))


def test_truncated_config_is_named(preset, tmp_path):
    path = _copy(preset[0], tmp_path)
    _damage(path / "config.json", "truncated")
    with pytest.raises(CorruptFileError, match=_says_corrupt(path / "config.json")):
        SigLIP2Backbone.from_preset(str(path))


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_damaged_safetensors_are_named(tmp_path, how):
    from safetensors.numpy import save_file

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    weights = tmp_path / "model.safetensors"
    save_file({"logit_scale": np.ones(1, "float32"), "w": np.ones(4000, "float32")},
              str(weights))
    _damage(weights, how)
    with pytest.raises(CorruptFileError, match=_says_corrupt(weights)):
        SigLIP2Backbone.from_preset(str(tmp_path))


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_damaged_decoder_weights_are_named(checkpoint, tmp_path, how):
    path = _copy(checkpoint[0], tmp_path)
    _damage(path / DECODER_WEIGHTS_FILE, how)
    with pytest.raises(CorruptFileError, match=_says_corrupt(path / DECODER_WEIGHTS_FILE)):
        load_checkpoint(path)


def test_nan_logit_scale_in_a_saved_preset_is_refused(tmp_path):
    backbone = tiny_backbone(seed=3)
    backbone.logits_head.logit_scale.assign(float("nan"))
    backbone.save_to_preset(str(tmp_path))
    weights = tmp_path / "model.weights.h5"
    message = re.escape(f"{weights}: tensor '") + ".*logit_scale' is not finite"
    with pytest.raises(WeightLoadingError, match=message):
        SigLIP2Backbone.from_preset(str(tmp_path))


def test_non_finite_decoder_weight_is_refused(checkpoint, tmp_path):
    path = _copy(checkpoint[0], tmp_path)
    with h5py.File(path / DECODER_WEIGHTS_FILE, "r+") as f:
        names = []
        f.visititems(lambda name, node: names.append(name)
                     if isinstance(node, h5py.Dataset) else None)
        f[names[0]][...] = np.inf
    with pytest.raises(WeightLoadingError,
                       match=re.escape(f"tensor '{names[0]}' is not finite")):
        load_checkpoint(path)


def test_missing_decoder_weights_are_named(checkpoint, tmp_path):
    path = _copy(checkpoint[0], tmp_path)
    (path / DECODER_WEIGHTS_FILE).unlink()
    message = (re.escape(f"{path / DECODER_WEIGHTS_FILE} is missing but {DECODER_CONFIG_FILE} "
                         "is there: copy the whole checkpoint directory") + ".*")
    with pytest.raises(WeightLoadingError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize("other", [dict(num_layers=2), dict(intermediate_dim=16)],
                         ids=["more_blocks", "narrower_mlp"])
def test_decoder_weights_of_another_decoder_are_refused(checkpoint, preset, tmp_path, other):
    """The weights of a deeper decoder (more tensors) or of one with other shapes."""
    path = _copy(checkpoint[0], tmp_path)
    other_save = _save_with_decoder(tmp_path / "other", preset[1], _decoder(**other))
    shutil.copy(other_save / DECODER_WEIGHTS_FILE, path / DECODER_WEIGHTS_FILE)
    message = (re.escape(str(path / DECODER_WEIGHTS_FILE)) + r" (holds|does not fit) .*"
               + re.escape("come from different saves; write both with `save_checkpoint`."))
    with pytest.raises(WeightLoadingError, match=message) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)


def test_an_intact_checkpoint_still_loads(checkpoint, preset):
    loaded = load_checkpoint(checkpoint[0])
    for ours, theirs in zip(loaded["backbone"].weights, preset[1].weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs)
        )
    tokens = np.arange(12, dtype="int32").reshape(2, 6) % 40
    image = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded["decoder"](tokens, image, causal=[1, 0])),
        keras.ops.convert_to_numpy(checkpoint[1](tokens, image, causal=[1, 0])),
    )
