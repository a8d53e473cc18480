"""Preset data: every released checkpoint, its architecture and its parameter count."""

import pytest

from conftest import TINY_NAFLEX, TINY_TEXT, TINY_VISION, tiny_backbone
from keras_siglip2.param_count import count_params
from keras_siglip2.preset_loader import PresetError, build_backbone, load_backbone
from keras_siglip2.presets import PRESETS

RELEASED = {
    "siglip2_base_patch32_256", "siglip2_base_patch16_224", "siglip2_base_patch16_256",
    "siglip2_base_patch16_384", "siglip2_base_patch16_512", "siglip2_large_patch16_256",
    "siglip2_large_patch16_384", "siglip2_large_patch16_512", "siglip2_so400m_patch14_224",
    "siglip2_so400m_patch14_384", "siglip2_so400m_patch16_256", "siglip2_so400m_patch16_384",
    "siglip2_so400m_patch16_512", "siglip2_giant_opt_patch16_256",
    "siglip2_giant_opt_patch16_384", "siglip2_base_patch16_naflex",
    "siglip2_so400m_patch16_naflex",
}
WIDTH = {"base": 768, "large": 1024, "so400m": 1152, "giant_opt": 1536}


def test_every_released_checkpoint_has_a_preset():
    assert set(PRESETS) == RELEASED
    for name, preset in PRESETS.items():
        assert preset["name"] == name
        assert preset["sources"]["big_vision"].startswith("gs://big_vision/siglip2/siglip2_")
        assert preset["sources"]["huggingface"].startswith("hf://google/siglip2-")


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_architecture_matches_the_name(name):
    config = PRESETS[name]["backbone"]
    size = name.split("_")[1] if "giant" not in name else "giant_opt"
    vision, text = config["vision_encoder"], config["text_encoder"]
    assert vision["hidden_dim"] == WIDTH[size]
    assert text["embedding_dim"] == WIDTH[size]
    # g-opt pairs its image tower with a So400m text tower.
    assert text["hidden_dim"] == (1152 if size == "giant_opt" else WIDTH[size])
    assert (text["vocabulary_size"], text["sequence_length"]) == (256000, 64)
    assert config["naflex"] == name.endswith("naflex")
    if not config["naflex"]:
        assert f"patch{vision['patch_size']}_{vision['image_size']}" in name


def test_param_count_formula_matches_built_models():
    for naflex in (False, True):
        config = {
            "naflex": naflex,
            "vision_encoder": TINY_NAFLEX if naflex else TINY_VISION,
            "text_encoder": TINY_TEXT,
        }
        assert count_params(config) == tiny_backbone(naflex).count_params()
        assert build_backbone(config).count_params() == count_params(config)


@pytest.mark.parametrize("name", sorted(n for n in RELEASED if "published_params" in PRESETS[n]))
def test_param_counts_match_published(name):
    """keras-hub's published counts include non-trainable position-id buffers."""
    preset = PRESETS[name]
    vision = preset["backbone"]["vision_encoder"]
    buffers = (vision["image_size"] // vision["patch_size"]) ** 2 + 64
    ours = count_params(preset["backbone"])
    published = preset["published_params"]
    if "anomaly" in published:
        assert ours + buffers != published["value"]
    else:
        assert ours + buffers == published["value"]
    assert abs(ours - published["value"]) / published["value"] < 4e-3


def test_headline_sizes():
    b16 = count_params(PRESETS["siglip2_base_patch16_224"]["backbone"])
    g = count_params(PRESETS["siglip2_giant_opt_patch16_256"]["backbone"])
    assert 374e6 < b16 < 376e6 and 1.86e9 < g < 1.88e9


def test_unknown_handle_is_a_clear_error():
    with pytest.raises(PresetError, match="neither a preset name"):
        load_backbone("siglip2_base_patch16_225")
    with pytest.raises(PresetError, match="needs a preset name"):
        load_backbone("/tmp/somewhere", load_weights=False)
