"""`from_preset` handles: format detection, offline failures, save_to_preset round trip."""

import time

import numpy as np
import pytest

import keras

from conftest import tiny_backbone
from keras_siglip2 import SigLIP2Backbone, SigLIP2TextEncoder, preset_registry
from keras_siglip2.converters.download import DownloadError
from keras_siglip2.preset_loader import PresetError, image_config, resolve


@pytest.mark.parametrize(
    "handle",
    [
        "hf://google/siglip2-base-patch16-224",
        "kaggle://keras/siglip/keras/siglip2_base_patch16_224/1",
        "siglip2_base_patch16_224",
        "https://storage.googleapis.com/big_vision/siglip2/siglip2_b16_224.npz",
    ],
)
def test_remote_handles_fail_fast_offline(handle, monkeypatch, tmp_path):
    """This machine has no internet: each download must fail in seconds, clearly."""
    monkeypatch.setenv("KERAS_SIGLIP2_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(DownloadError) as error:
        SigLIP2Backbone.from_preset(handle)
    assert time.monotonic() - start < 20
    message = str(error.value)
    assert "offline" in message and "local" in message


def test_save_to_preset_round_trip(tmp_path):
    backbone = tiny_backbone(naflex=True, seed=5)
    backbone.save_to_preset(tmp_path / "preset")
    assert resolve(tmp_path / "preset")[0] == "keras"
    restored = SigLIP2Backbone.from_preset(str(tmp_path / "preset"))
    for ours, theirs in zip(backbone.weights, restored.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs)
        )
    # keras-hub's own loader finds our class too.
    import keras_hub

    loaded = keras_hub.models.Backbone.from_preset(str(tmp_path / "preset"))
    assert isinstance(loaded, SigLIP2Backbone)
    assert image_config(tmp_path / "preset") == {"patch_size": 4, "max_num_patches": 256}
    tiny_backbone().save_to_preset(tmp_path / "fixed")
    assert image_config(tmp_path / "fixed") == {"image_size": 32}


def test_unknown_directory_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(PresetError, match="not a SigLIP 2 checkpoint"):
        SigLIP2Backbone.from_preset(str(tmp_path))
    with pytest.raises(PresetError, match="has no 'keras_hub' source"):
        SigLIP2Backbone.from_preset("siglip2_base_patch16_naflex", source="keras_hub")


def test_models_reach_the_loaders_only_through_the_registry(monkeypatch):
    """The models do not import `preset_loader`: with nothing registered, `from_preset` says so."""
    monkeypatch.setattr(preset_registry, "_LOADERS", {})
    for load, name in ((SigLIP2Backbone.from_preset, "load_backbone"),
                       (SigLIP2TextEncoder.from_preset, "load_tower")):
        with pytest.raises(RuntimeError, match=f"No preset loader is registered for `{name}`"):
            load("siglip2_base_patch16_224")
