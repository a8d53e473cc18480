"""`SigLIP2Preprocessor`: raw images and texts → the inputs of `SigLIP2Backbone`, in one layer."""

import os

import keras
import keras_hub

from keras_siglip2 import preset_registry
from keras_siglip2._compat import PREPROCESSOR_CONFIG_FILE, KerasPresetLoader
from keras_siglip2.converters.file_errors import read_json
from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.preprocessing.image_converter import SigLIP2ImageConverter
from keras_siglip2.preprocessing.naflex import NaFlexImageConverter
from keras_siglip2.tokenizer import SigLIP2Tokenizer

# The keys `call` takes, as keras-hub's `SigLIPPreprocessor`.
IMAGES, PROMPTS = "images", "prompts"


def is_saved_preset(directory, config_file, cls):
    """True if `directory` holds a `config_file` written by `save_to_preset` for a `cls`."""
    path = os.path.join(directory, config_file)
    if not os.path.isfile(path):
        return False
    saved = keras.saving.get_registered_object(str(read_json(path).get("registered_name")))
    return isinstance(saved, type) and issubclass(saved, cls)


def image_converter_from_preset(preset):
    """The image converter of `preset`'s checkpoint: fixed-resolution or NaFlex, as it has.

    `preset` is any handle `SigLIP2Backbone.from_preset` takes (read without loading weights).
    """
    config = preset_registry.image_config(preset)
    if "max_num_patches" in config:
        return NaFlexImageConverter(**config)
    return SigLIP2ImageConverter(**config)


@keras.saving.register_keras_serializable(package="keras_siglip2")
class SigLIP2Preprocessor(keras_hub.models.Preprocessor):
    """Images and texts → the inputs `SigLIP2Backbone` takes, for either image tower.

    Holds a `SigLIP2Tokenizer` and an image converter (`SigLIP2ImageConverter` for a
    fixed-resolution tower, `NaFlexImageConverter` for NaFlex), the released checkpoints'
    big_vision pipelines. `from_preset` picks both for any checkpoint; `save_to_preset` writes
    `preprocessor.json` with the tokenizer's and converter's files.

    Called eagerly it returns numpy arrays (on every Keras backend); mapped over a
    `tf.data.Dataset` (`dataset.map(preprocessor)`) it returns tf tensors of static shapes.

    Args:
        tokenizer: a `SigLIP2Tokenizer`.
        image_converter: a `SigLIP2ImageConverter` or `NaFlexImageConverter`, or None to pass
            `images` through unchanged.
        sequence_length: length of `token_ids`; None keeps the tokenizer's. It is the
            tokenizer's `sequence_length` (setting either sets both), which must match the
            text tower's.

    Call arguments:
        x: a dict with `"prompts"` (a str, list of str or tf.string tensor), `"images"`
            (anything the image converter takes: an (H, W, C) or (B, H, W, C) array, a
            list of images of any sizes, PIL images, file paths), or both.
        y: labels, returned unchanged.
        sample_weight: sample weights, returned unchanged.

    Returns `x` converted, packed with `y` and `sample_weight` as keras-hub's preprocessors
    do: `token_ids` (B, L) int32 for prompts; for images, `images` (B, S, S, 3) float32
    (fixed resolution) or `patches`, `patch_coords`, `patch_mask`, `spatial_shapes` (NaFlex).

    Examples:
    >>> import tempfile
    >>> import tensorflow as tf
    >>> from keras_siglip2.testing import save_tiny_random_checkpoint
    >>> path = save_tiny_random_checkpoint(tempfile.mkdtemp())  # a stand-in checkpoint
    >>> preprocessor = SigLIP2Preprocessor.from_preset(path)
    >>> inputs = preprocessor({"images": np.zeros((2, 90, 120, 3), "uint8"),
    ...                        "prompts": ["a red cube", "two blue balls"]})
    >>> {key: value.shape for key, value in sorted(inputs.items())}
    {'images': (2, 64, 64, 3), 'token_ids': (2, 32)}
    >>> backbone = SigLIP2Backbone.from_preset(path)
    >>> tuple(backbone(inputs)["logits"].shape)
    (2, 2)
    >>> dataset = tf.data.Dataset.from_tensor_slices(
    ...     {"images": np.zeros((4, 50, 70, 3), "uint8"), "prompts": ["a", "b", "c", "d"]})
    >>> dataset = dataset.batch(2).map(preprocessor)
    >>> {key: spec.shape.as_list() for key, spec in sorted(dataset.element_spec.items())}
    {'images': [None, 64, 64, 3], 'token_ids': [None, 32]}
    """

    backbone_cls = SigLIP2Backbone
    tokenizer_cls = SigLIP2Tokenizer
    image_converter_cls = SigLIP2ImageConverter

    def __init__(self, tokenizer, image_converter=None, sequence_length=None, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.image_converter = image_converter
        if sequence_length is not None:
            self.sequence_length = sequence_length
        self.built = True

    @property
    def sequence_length(self):
        """The length of `token_ids`: the tokenizer's `sequence_length`."""
        return self.tokenizer.sequence_length

    @sequence_length.setter
    def sequence_length(self, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`sequence_length` must be an int >= 1; got {value!r}.")
        self.tokenizer.sequence_length = value

    def call(self, x, y=None, sample_weight=None):
        if not isinstance(x, dict) or not x or set(x) - {IMAGES, PROMPTS}:
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(
                f"SigLIP2Preprocessor takes a dict with '{IMAGES}', '{PROMPTS}' (texts) or "
                f"both; got {got}."
            )
        out = {}
        if IMAGES in x:
            images = x[IMAGES]
            if self.image_converter is not None:
                images = self.image_converter(images)
            out.update(images if isinstance(images, dict) else {IMAGES: images})
        if PROMPTS in x:
            out["token_ids"] = self.tokenizer(x[PROMPTS])
        return keras.utils.pack_x_y_sample_weight(out, y, sample_weight)

    def get_config(self):
        return {**super().get_config(), "sequence_length": self.sequence_length}

    @classmethod
    def from_preset(cls, preset, config_file=PREPROCESSOR_CONFIG_FILE, source=None, **kwargs):
        """The preprocessor of a checkpoint: any handle `SigLIP2Backbone.from_preset` takes.

        A directory written by `save_to_preset` loads its saved preprocessor through
        keras-hub's loader. Any other handle (a preset name, `hf://`, `kaggle://`, a
        transformers / keras-hub / saved backbone directory, a big_vision `.npz`) gets
        `SigLIP2Tokenizer.from_preset(preset)` and the image converter its checkpoint was
        trained with (`source` as for `SigLIP2Backbone.from_preset`). `kwargs` (e.g.
        `sequence_length`, `tokenizer`, `image_converter`) replace the settings.
        """
        local = os.path.expanduser(os.fspath(preset))
        if os.path.isdir(local) and is_saved_preset(local, config_file, cls):
            return KerasPresetLoader(local, None).load_preprocessor(cls, config_file, **kwargs)
        if "tokenizer" not in kwargs:
            kwargs["tokenizer"] = SigLIP2Tokenizer.from_preset(preset, source=source)
        if "image_converter" not in kwargs:
            kwargs["image_converter"] = image_converter_from_preset(preset)
        return cls(**kwargs)
