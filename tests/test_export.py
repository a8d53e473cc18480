"""Export of the encoders: every format from the current backend, reloaded by its runtime.

TF SavedModel → `tf.saved_model.load`, ONNX → onnxruntime, LiteRT → the LiteRT interpreter;
outputs at two batch sizes against the Keras model's in this process, ≤ 1e-4. The formats
this backend cannot write natively go through a TensorFlow child process.
"""

import json

import keras
import numpy as np
import pytest

from conftest import TINY_NAFLEX, TINY_TEXT, TINY_VISION, naflex_batch
from spm_model import train_tiny_spm
from keras_siglip2 import (
    SigLIP2Backbone,
    SigLIP2NaFlexVisionEncoder,
    SigLIP2TextEncoder,
    SigLIP2Tokenizer,
    SigLIP2VisionEncoder,
)
from keras_siglip2.__main__ import main
from keras_siglip2.export import (
    FORMATS,
    export_backend,
    export_encoders,
    image_encoder_model,
    load_exported,
    text_encoder_model,
)
from keras_siglip2.export.child import _run_export_command

BACKEND = keras.config.backend()
IN_CHILD = [f for f in FORMATS if export_backend(f, BACKEND) != BACKEND]
# NaFlex: every native format, and one through a child process (its `max_num_patches`).
NAFLEX_FORMATS = [f for f in FORMATS if f not in IN_CHILD] + IN_CHILD[:1]
MAX_PATCHES = 12
# One layer per tower: tracing for export costs time per layer, and one shows every piece.
VISION, NAFLEX = {**TINY_VISION, "num_layers": 1}, {**TINY_NAFLEX, "num_layers": 1}
TEXT = {**TINY_TEXT, "num_layers": 1}
TEXTS = ["A photo of a CAT.", "", "Eine Katze schläft auf dem Sofa. " * 3]


def assert_matches(exported, keras_model, inputs):
    expected = keras.tree.map_structure(keras.ops.convert_to_numpy, keras_model(inputs))
    actual = exported(inputs)
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, atol=1e-4, rtol=0, err_msg=name)
    return max(float(np.abs(actual[name] - value).max()) for name, value in expected.items())


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    proto = train_tiny_spm(tmp_path_factory.mktemp("spm"))
    return SigLIP2Tokenizer(proto=proto, sequence_length=TEXT["sequence_length"])


@pytest.fixture(scope="module")
def preset(tmp_path_factory, tokenizer):
    """A fixed-resolution tiny preset directory with its tokenizer: loads offline."""
    keras.utils.set_random_seed(1)
    text = {**TEXT, "vocabulary_size": tokenizer.vocabulary_size()}
    backbone = SigLIP2Backbone(SigLIP2VisionEncoder(**VISION), SigLIP2TextEncoder(**text))
    directory = tmp_path_factory.mktemp("preset")
    backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    return directory


@pytest.fixture(scope="module")
def cli_exports(tmp_path_factory, preset):
    """format → destination of `python -m keras_siglip2 export --preset ...`, made once."""
    exports = {}

    def export(format):
        if format not in exports:
            destination = tmp_path_factory.mktemp(f"cli_{format}")
            main(["export", "--preset", str(preset), "--format", format, str(destination)])
            exports[format] = destination
        return exports[format]

    return export


@pytest.mark.parametrize("format", FORMATS)
def test_cli_export_matches_keras_at_two_batch_sizes(format, cli_exports, preset, tokenizer):
    destination = cli_exports(format)
    config = json.loads((destination / "export.json").read_text())
    backbone = SigLIP2Backbone.from_preset(str(preset))
    assert config["format"] == format
    assert config["exported_from_backend"] == export_backend(format, BACKEND)
    assert config["image_encoder"]["image_size"] == VISION["image_size"]
    assert config["text_encoder"]["inputs"] == {
        "token_ids": {"shape": [None, TEXT["sequence_length"]], "dtype": "int32"}
    }
    assert config["logit_bias"] == pytest.approx(
        float(keras.ops.convert_to_numpy(backbone.logits_head.logit_bias))
    )
    assert (destination / "tokenizer.model").read_bytes() == tokenizer.proto

    rng = np.random.default_rng(0)
    image_model, text_model = image_encoder_model(backbone), text_encoder_model(backbone)
    image_encoder = load_exported(format, destination / config["image_encoder"]["path"])
    text_encoder = load_exported(format, destination / config["text_encoder"]["path"])
    worst = 0.0
    for batch in (1, 3):
        images = {"images": rng.uniform(-1, 1, (batch, 32, 32, 3)).astype("float32")}
        worst = max(
            worst,
            assert_matches(image_encoder, image_model, images),
            assert_matches(text_encoder, text_model, {"token_ids": tokenizer(TEXTS[:batch])}),
        )
    print(f"\n{BACKEND} → {format}: max abs difference {worst:.1e}")
    # The exported embeddings are the backbone's own.
    np.testing.assert_allclose(
        image_encoder(images)["embeddings"],
        keras.ops.convert_to_numpy(backbone.encode_images(images["images"])),
        atol=1e-4,
    )


def test_saved_model_text_endpoint_tokenizes_raw_strings(cli_exports, preset, tokenizer):
    import tensorflow as tf

    destination = cli_exports("tf_saved_model")
    loaded = tf.saved_model.load(str(destination / "text_encoder"))
    backbone = SigLIP2Backbone.from_preset(str(preset))
    from_strings = loaded.serve_text(tf.constant(TEXTS))
    expected = text_encoder_model(backbone)({"token_ids": tokenizer(TEXTS)})
    for name in ("embeddings", "pooled_output", "sequence_output"):
        np.testing.assert_allclose(
            from_strings[name].numpy(), keras.ops.convert_to_numpy(expected[name]), atol=1e-4
        )
    signature = loaded.signatures["serve_text"]
    assert signature.structured_input_signature[1]["text"].dtype == tf.string


@pytest.mark.parametrize("format", NAFLEX_FORMATS)
def test_naflex_export_matches_keras(format, tmp_path, capsys):
    keras.utils.set_random_seed(2)
    backbone = SigLIP2Backbone(
        SigLIP2NaFlexVisionEncoder(**NAFLEX), SigLIP2TextEncoder(**TEXT)
    )
    paths = export_encoders(
        backbone, tmp_path, format, max_num_patches=MAX_PATCHES, encoders=("image",)
    )
    notice = f"{format} cannot be written from {BACKEND}; exporting in a tensorflow child process"
    assert (notice in capsys.readouterr().err) == (format in IN_CHILD)
    assert set(paths) == {"image"} and not (tmp_path / "tokenizer.model").exists()
    config = json.loads((tmp_path / "export.json").read_text())["image_encoder"]
    assert config["max_num_patches"] == MAX_PATCHES and config["patch_size"] == 4
    assert config["inputs"]["patches"]["shape"] == [None, MAX_PATCHES, 48]
    model = image_encoder_model(backbone, MAX_PATCHES)
    exported = load_exported(format, paths["image"])
    # Aspect ratios from one patch to all twelve, padded to the same length.
    worst = max(
        assert_matches(exported, model, naflex_batch(shapes, MAX_PATCHES))
        for shapes in ([(3, 4)], [(1, 1), (2, 5), (4, 3), (1, 7)])
    )
    print(f"\n{BACKEND} → {format} (NaFlex): max abs difference {worst:.1e}")


@pytest.mark.skipif(BACKEND != "jax", reason="the same child process from every backend")
def test_a_failing_child_process_is_a_one_line_error(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(RuntimeError) as error:
        _run_export_command("tensorflow", [str(tmp_path / "out"), "--preset", str(missing)])
    message = str(error.value)
    assert message.startswith("Exporting in a tensorflow child process failed: ")
    assert str(missing) in message and "\n" not in message


def test_bad_arguments_say_what_to_do(preset, tokenizer, tmp_path):
    format = "litert"  # from every backend: each error comes before a child process
    with pytest.raises(ValueError, match="Unknown export format 'tflite'"):
        export_encoders(str(preset), tmp_path, "tflite")
    with pytest.raises(ValueError, match="only applies to a NaFlex"):
        export_encoders(str(preset), tmp_path, format, max_num_patches=16)
    with pytest.raises(ValueError, match="subset of"):
        export_encoders(str(preset), tmp_path, format, encoders=("audio",))
    short = SigLIP2Tokenizer(proto=tokenizer.proto, sequence_length=4)
    with pytest.raises(ValueError, match="sequence_length=8"):
        export_encoders(str(preset), tmp_path, format, tokenizer=short)
    backbone = SigLIP2Backbone(
        SigLIP2NaFlexVisionEncoder(**NAFLEX), SigLIP2TextEncoder(**TEXT)
    )
    with pytest.raises(ValueError, match="pass `max_num_patches` as an int >= 1"):
        export_encoders(backbone, tmp_path, format, max_num_patches=0)
    assert not list(tmp_path.iterdir())
