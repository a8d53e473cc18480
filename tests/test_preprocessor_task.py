"""SigLIP2Preprocessor (tokenizer + image converter) and SigLIP2ZeroShotClassifier (a Task)."""

import json

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_siglip2 import (
    NaFlexImageConverter,
    SigLIP2Backbone,
    SigLIP2ImageConverter,
    SigLIP2Preprocessor,
    SigLIP2Tokenizer,
    SigLIP2ZeroShotClassifier,
)
from keras_siglip2.testing import save_tiny_random_checkpoint
from keras_siglip2.evaluation import zero_shot
from keras_siglip2.evaluation.zero_shot import zero_shot_classifier

PROMPTS = ["a red cube", "Two BLUE balls on grass", ""]
CLASSES = ["cube", "ball", "tree"]
TEMPLATES = ["a {}.", "a photo of a {}."]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny saved checkpoints (backbone, tokenizer, image_converter.json), fixed and NaFlex."""
    return {
        naflex: save_tiny_random_checkpoint(tmp_path_factory.mktemp(f"naflex{naflex}"), naflex)
        for naflex in (False, True)
    }


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    yield


def raw_images(count, seed=0, shape=(45, 70, 3)):
    return np.random.default_rng(seed).integers(0, 256, (count, *shape)).astype("uint8")


def as_numpy(tree):
    return keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), tree)


def assert_same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


@pytest.mark.parametrize("naflex", [False, True])
def test_outputs_are_the_backbones_inputs(checkpoints, naflex):
    preprocessor = SigLIP2Preprocessor.from_preset(checkpoints[naflex])
    backbone = SigLIP2Backbone.from_preset(checkpoints[naflex])
    converter = NaFlexImageConverter if naflex else SigLIP2ImageConverter
    assert isinstance(preprocessor, keras_hub.models.Preprocessor)
    assert isinstance(preprocessor.tokenizer, SigLIP2Tokenizer)
    assert type(preprocessor.image_converter) is converter
    assert isinstance(preprocessor.image_converter, keras_hub.layers.ImageConverter)
    assert preprocessor.sequence_length == backbone.text_encoder.sequence_length

    out = preprocessor({"images": raw_images(3), "prompts": PROMPTS})
    assert sorted(out) == sorted(backbone.input)
    for key, spec in backbone.input.items():
        assert isinstance(out[key], np.ndarray), key
        assert out[key].dtype == np.dtype(spec.dtype), key
        assert out[key].shape[0] == 3
        assert all(s is None or s == o for s, o in zip(spec.shape[1:], out[key].shape[1:])), key
    logits = keras.ops.convert_to_numpy(backbone(out)["logits"])
    assert logits.shape == (3, 3) and np.isfinite(logits).all()

    # Each side on its own is what its own layer gives.
    images_only = preprocessor({"images": raw_images(3)})
    assert_same(images_only, as_dict(preprocessor.image_converter(raw_images(3))))
    np.testing.assert_array_equal(
        preprocessor({"prompts": PROMPTS})["token_ids"], preprocessor.tokenizer(PROMPTS)
    )
    # Labels pass through, packed as keras-hub packs them.
    x, y = preprocessor({"prompts": PROMPTS}, y=np.arange(3))
    assert sorted(x) == ["token_ids"] and y.tolist() == [0, 1, 2]


def as_dict(images):
    return images if isinstance(images, dict) else {"images": images}


def test_inputs_other_than_images_and_prompts_are_errors(checkpoints):
    preprocessor = SigLIP2Preprocessor.from_preset(checkpoints[False])
    with pytest.raises(ValueError, match="'images', 'prompts'.*got \\['texts'\\]"):
        preprocessor({"texts": PROMPTS})
    with pytest.raises(ValueError, match="got ndarray"):
        preprocessor(raw_images(1))
    with pytest.raises(ValueError, match="sequence_length` must be an int >= 1"):
        SigLIP2Preprocessor(preprocessor.tokenizer, sequence_length=0)


@pytest.mark.parametrize("naflex", [False, True])
def test_tf_data_map(checkpoints, naflex):
    preprocessor = SigLIP2Preprocessor.from_preset(checkpoints[naflex])
    images = raw_images(4, seed=1)
    prompts = PROMPTS + ["a tree"]
    eager = preprocessor({"images": images, "prompts": prompts})
    data = tf.data.Dataset.from_tensor_slices({"images": images, "prompts": prompts})
    for dataset in (data.batch(2).map(preprocessor), data.map(preprocessor).batch(2)):
        for key, spec in dataset.element_spec.items():
            assert spec.shape[1:].is_fully_defined(), key
        batches = list(dataset.as_numpy_iterator())
        assert_same({k: np.concatenate([b[k] for b in batches]) for k in eager}, eager)
    # (x, y) elements: the label passes through.
    labelled = tf.data.Dataset.from_tensor_slices(({"prompts": prompts}, np.arange(4)))
    x, y = next(iter(labelled.batch(4).map(preprocessor)))
    np.testing.assert_array_equal(x["token_ids"].numpy(), eager["token_ids"])
    np.testing.assert_array_equal(y.numpy(), np.arange(4))


@pytest.mark.parametrize("naflex", [False, True])
def test_preprocessor_preset_round_trip(checkpoints, naflex, tmp_path):
    preprocessor = SigLIP2Preprocessor.from_preset(checkpoints[naflex])
    preprocessor.save_to_preset(str(tmp_path))
    saved = json.loads((tmp_path / "image_converter.json").read_text())
    assert saved["class_name"] == ("NaFlexImageConverter" if naflex else "SigLIP2ImageConverter")
    restored = SigLIP2Preprocessor.from_preset(str(tmp_path))
    assert type(restored.image_converter) is type(preprocessor.image_converter)
    assert restored.image_converter.get_config() == preprocessor.image_converter.get_config()
    inputs = {"images": raw_images(2, seed=2, shape=(33, 90, 3)), "prompts": PROMPTS[:2]}
    assert_same(restored(inputs), preprocessor(inputs))
    # Saved settings can be replaced; the tokenizer's length is the preprocessor's.
    shorter = SigLIP2Preprocessor.from_preset(str(tmp_path), sequence_length=5)
    assert shorter(inputs)["token_ids"].shape == (2, 5)
    assert shorter.tokenizer.sequence_length == 5
    # keras-hub's serialisation gives the same layer back.
    clone = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(preprocessor)
    )
    clone.tokenizer.set_proto(preprocessor.tokenizer.proto)
    assert_same(clone(inputs), preprocessor(inputs))


@pytest.mark.parametrize("naflex", [False, True])
def test_classifier_probabilities_are_siglip_sigmoids(checkpoints, naflex):
    path = checkpoints[naflex]
    classifier = SigLIP2ZeroShotClassifier.from_preset(
        path, class_names=CLASSES, templates=TEMPLATES
    )
    assert isinstance(classifier, keras_hub.models.Task)
    images = raw_images(5, seed=3)
    probabilities = classifier.predict(images, verbose=0)
    # A list of images of any sizes (grey too) is converted eagerly.
    mixed = [images[0], images[1][:20, :50], images[2][..., 0], images[3][:5],
             images[4].transpose(1, 0, 2)]
    mixed_probabilities = classifier.predict(mixed, verbose=0)

    # By hand: the backbone, its converter and tokenizer, and `zero_shot_classifier`.
    backbone = SigLIP2Backbone.from_preset(path)
    tokenizer = SigLIP2Tokenizer.from_preset(path)
    converter = (NaFlexImageConverter if naflex else SigLIP2ImageConverter).from_preset(path)
    classes = zero_shot_classifier(backbone, tokenizer, CLASSES, TEMPLATES)
    scale, bias = (float(keras.ops.convert_to_numpy(w)) for w in
                   (backbone.logits_head.logit_scale, backbone.logits_head.logit_bias))

    def by_hand(images):
        embeddings = keras.ops.convert_to_numpy(backbone.encode_images(converter(images)))
        return 1 / (1 + np.exp(-(np.exp(scale) * embeddings @ classes.T + bias)))

    assert probabilities.shape == (5, 3) and probabilities.dtype == np.float32
    np.testing.assert_allclose(classifier.class_embeddings, classes, atol=1e-6)
    np.testing.assert_allclose(probabilities, by_hand(images), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(mixed_probabilities, by_hand(mixed), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="batch of images"):
        classifier.predict(images[0])  # one image needs its batch axis


@pytest.mark.parametrize("naflex", [False, True])
def test_classifier_preset_round_trip(checkpoints, naflex, tmp_path, monkeypatch):
    classifier = SigLIP2ZeroShotClassifier.from_preset(
        checkpoints[naflex], class_names=CLASSES, templates=TEMPLATES
    )
    images = raw_images(3, seed=4)
    expected = classifier.predict(images, verbose=0)
    classifier.save_to_preset(str(tmp_path))
    config = json.loads((tmp_path / "task.json").read_text())["config"]
    assert (config["class_names"], config["templates"]) == (CLASSES, TEMPLATES)

    def no_recompute(*args, **kwargs):
        raise AssertionError("a saved classifier's class embeddings are loaded, not recomputed")

    with monkeypatch.context() as patch:
        patch.setattr(zero_shot, "zero_shot_classifier", no_recompute)
        restored = SigLIP2ZeroShotClassifier.from_preset(str(tmp_path))
    assert (restored.class_names, restored.templates) == (CLASSES, TEMPLATES)
    assert type(restored.preprocessor.image_converter) is type(
        classifier.preprocessor.image_converter)
    np.testing.assert_array_equal(restored.class_embeddings, classifier.class_embeddings)
    np.testing.assert_allclose(restored.predict(images, verbose=0), expected, atol=1e-7)

    # New class names on a saved classifier: embeddings computed for them.
    other = SigLIP2ZeroShotClassifier.from_preset(str(tmp_path), class_names=["ball"])
    np.testing.assert_allclose(
        other.class_embeddings,
        zero_shot_classifier(other.backbone, other.preprocessor.tokenizer, ["ball"], TEMPLATES),
        atol=1e-6,
    )


def test_classifier_needs_class_names_or_a_saved_classifier(checkpoints):
    with pytest.raises(ValueError, match="holds no saved SigLIP2ZeroShotClassifier"):
        SigLIP2ZeroShotClassifier.from_preset(checkpoints[False])
    backbone = SigLIP2Backbone.from_preset(checkpoints[False])
    with pytest.raises(ValueError, match="give the `class_embeddings`"):
        SigLIP2ZeroShotClassifier(backbone, None, CLASSES)
    with pytest.raises(ValueError, match="must have shape \\(3, 32\\)"):
        SigLIP2ZeroShotClassifier(backbone, None, CLASSES, class_embeddings=np.zeros((2, 32)))
    shorter = SigLIP2Preprocessor.from_preset(checkpoints[False], sequence_length=8)
    with pytest.raises(ValueError, match="makes 8 tokens; the text tower takes 32"):
        SigLIP2ZeroShotClassifier(backbone, shorter, CLASSES)


def test_naflex_converter_is_a_keras_hub_image_converter(tmp_path):
    converter = NaFlexImageConverter(patch_size=4, max_num_patches=16)
    assert isinstance(converter, keras_hub.layers.ImageConverter) and converter.image_size is None
    converter.save_to_preset(str(tmp_path))
    saved = json.loads((tmp_path / "image_converter.json").read_text())
    assert saved["config"]["max_num_patches"] == 16
    restored = keras.saving.deserialize_keras_object(saved)
    image = raw_images(1)[0]
    assert_same(restored(image), converter(image))
    with pytest.raises(TypeError, match="does not take \\['scale'\\]"):
        NaFlexImageConverter(4, 16, scale=1 / 255)
    with pytest.raises(ValueError, match="no fixed image size"):
        converter.image_size = (64, 64)
