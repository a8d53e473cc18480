"""A trained model as one directory: a Keras preset plus the image pipeline and LocCa decoder.

Layout: the backbone's preset files (`config.json`, `model.weights.h5`, `metadata.json`), the
tokenizer's (`tokenizer.json`, `assets/`), `image_converter.json` (the image pipeline the model
was trained with), and with a decoder `locca_decoder.json` + `locca_decoder.weights.npz`. Every
loader of the package reads it as a preset (`SigLIP2Backbone.from_preset(dir)`,
`SigLIP2Tokenizer.from_preset(dir)`, the converters' `from_preset(dir)`).
"""

import json
import pathlib

import keras
import numpy as np

from keras_siglip2.converters.file_errors import read_json, reading
from keras_siglip2.converters.keras_hub import IMAGE_CONVERTER_FILE
from keras_siglip2.converters.weight_loader import check_finite
from keras_siglip2.datasets import scenes
from keras_siglip2.locca_targets import LocCaVocabulary
from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.models.locca_decoder import LocCaDecoder
from keras_siglip2.models.naflex_vision_encoder import SigLIP2NaFlexVisionEncoder
from keras_siglip2.models.text_encoder import SigLIP2TextEncoder
from keras_siglip2.models.vision_encoder import SigLIP2VisionEncoder
from keras_siglip2.preprocessing import NaFlexImageConverter, SigLIP2ImageConverter
from keras_siglip2.tokenizer import SigLIP2Tokenizer

DECODER_CONFIG_FILE = "locca_decoder.json"
DECODER_WEIGHTS_FILE = "locca_decoder.weights.npz"  # variable path → value


def save_checkpoint(directory, backbone, tokenizer, image_converter, decoder=None,
                    vocabulary=None):
    """Writes the model to `directory` (created if needed) in the layout above.

    Example:
    >>> import tempfile
    >>> from keras_siglip2 import SigLIP2TextEncoder, SigLIP2VisionEncoder
    >>> from keras_siglip2.datasets import scenes
    >>> tokenizer = scenes.tokenizer(sequence_length=8)
    >>> backbone = SigLIP2Backbone(
    ...     SigLIP2VisionEncoder(image_size=16, patch_size=8, hidden_dim=8, num_layers=1,
    ...                          num_heads=2, intermediate_dim=16),
    ...     SigLIP2TextEncoder(vocabulary_size=tokenizer.vocabulary_size(), sequence_length=8,
    ...                        hidden_dim=8, num_layers=1, num_heads=2, intermediate_dim=16,
    ...                        embedding_dim=8))
    >>> path = tempfile.mkdtemp()
    >>> save_checkpoint(path, backbone, tokenizer, SigLIP2ImageConverter(16))
    >>> loaded = load_checkpoint(path)
    >>> sorted(loaded), loaded["image_converter"].image_size
    (['backbone', 'decoder', 'image_converter', 'tokenizer', 'vocabulary'], (16, 16))
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    (directory / IMAGE_CONVERTER_FILE).write_text(
        json.dumps(keras.saving.serialize_keras_object(image_converter), indent=1)
    )
    if decoder is not None:
        if vocabulary is None:
            raise ValueError("Give the decoder's `vocabulary` (a LocCaVocabulary) to save it.")
        config = {
            "decoder": decoder.get_config(),
            "vocabulary": {
                "text_vocabulary_size": vocabulary.text_vocabulary_size,
                "num_location_bins": vocabulary.num_location_bins,
                "pad_id": vocabulary.pad_id, "eos_id": vocabulary.eos_id,
            },
        }
        (directory / DECODER_CONFIG_FILE).write_text(json.dumps(config, indent=1))
        np.savez(
            directory / DECODER_WEIGHTS_FILE,
            **{w.path: keras.ops.convert_to_numpy(w) for w in decoder.weights},
        )


def load_checkpoint(handle):
    """Reads a directory written by `save_checkpoint`, or any preset handle.

    Returns a dict: `backbone`, `tokenizer`, `image_converter`, and `decoder` / `vocabulary`
    (None when `handle` has no LocCa decoder, e.g. a released checkpoint). A truncated or
    damaged file is a `CorruptFileError` naming it; a NaN or infinite weight is an error too.
    """
    directory = pathlib.Path(handle)
    backbone = SigLIP2Backbone.from_preset(str(handle))
    tokenizer = SigLIP2Tokenizer.from_preset(str(handle))
    converter = NaFlexImageConverter if backbone.is_naflex else SigLIP2ImageConverter
    image_converter = converter.from_preset(str(handle))  # reads IMAGE_CONVERTER_FILE
    decoder = vocabulary = None
    if (directory / DECODER_CONFIG_FILE).is_file():
        config = read_json(directory / DECODER_CONFIG_FILE)
        decoder = LocCaDecoder.from_config(config["decoder"])
        decoder.build(
            (None, decoder.sequence_length), (None, None, backbone.vision_encoder.hidden_dim)
        )
        weights_file = directory / DECODER_WEIGHTS_FILE
        with reading(weights_file, "npz"), np.load(weights_file) as npz:
            values = {name: npz[name] for name in npz.files}  # reading checks each CRC
        missing = sorted({w.path for w in decoder.weights} - set(values))
        if missing:
            raise ValueError(
                f"{weights_file} lacks decoder weights {missing[:3]}; "
                f"it does not belong to {DECODER_CONFIG_FILE}."
            )
        for w in decoder.weights:
            check_finite(values[w.path], w.path, weights_file)
            w.assign(values[w.path])
        vocabulary = LocCaVocabulary(**config["vocabulary"])
    return {
        "backbone": backbone, "tokenizer": tokenizer, "image_converter": image_converter,
        "decoder": decoder, "vocabulary": vocabulary,
    }


def save_tiny_random_checkpoint(directory, naflex=False, seed=0):
    """Writes a tiny, randomly initialised model as a checkpoint; returns its path as a str.

    An offline stand-in for a released preset (every `from_preset` above reads it): a
    two-block tower of width 32 per side, patches of 16 px (fixed resolution: 64 px images;
    NaFlex: 64 patches by default), and the `scenes` dataset's tokenizer (32 tokens). Its
    scores are meaningless; the guides run on it when `GUIDE_STEPS` is set.

    Example:
    >>> import tempfile
    >>> path = save_tiny_random_checkpoint(tempfile.mkdtemp(), naflex=True)
    >>> NaFlexImageConverter.from_preset(path).max_num_patches
    64
    >>> SigLIP2Backbone.from_preset(path).is_naflex
    True
    """
    keras.utils.set_random_seed(seed)
    tokenizer = scenes.tokenizer(sequence_length=32)
    width = dict(hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64)
    if naflex:
        vision = SigLIP2NaFlexVisionEncoder(patch_size=16, position_grid_size=8, **width)
        converter = NaFlexImageConverter(patch_size=16, max_num_patches=64)
    else:
        vision = SigLIP2VisionEncoder(image_size=64, patch_size=16, **width)
        converter = SigLIP2ImageConverter(image_size=64)
    text = SigLIP2TextEncoder(vocabulary_size=tokenizer.vocabulary_size(), sequence_length=32,
                              embedding_dim=32, **width)
    save_checkpoint(directory, SigLIP2Backbone(vision, text), tokenizer, converter)
    return str(directory)
