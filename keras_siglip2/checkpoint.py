"""A trained model as one directory: a Keras preset plus the image pipeline and LocCa decoder.

Layout: the backbone's preset files (`config.json`, `model.weights.h5`, `metadata.json`), the
tokenizer's (`tokenizer.json`, `assets/`), `image_converter.json` (the image pipeline the model
was trained with), and with a decoder `locca_decoder.json` + `locca_decoder.weights.h5`. Every
loader of the package reads it as a preset (`SigLIP2Backbone.from_preset(dir)`,
`SigLIP2Tokenizer.from_preset(dir)`, the converters' `from_preset(dir)`).
"""

import json
import pathlib
import re

import keras

from keras_siglip2.converters.file_errors import read_json
from keras_siglip2.converters.keras_hub import IMAGE_CONVERTER_FILE, open_weights_file
from keras_siglip2.converters.weight_loader import WeightLoadingError, check_finite
from keras_siglip2.locca_targets import LocCaVocabulary
from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.models.locca_decoder import LocCaDecoder
from keras_siglip2.preprocessing import NaFlexImageConverter, SigLIP2ImageConverter
from keras_siglip2.tokenizer import SigLIP2Tokenizer

DECODER_CONFIG_FILE = "locca_decoder.json"
DECODER_WEIGHTS_FILE = "locca_decoder.weights.h5"  # keras.saving.save_weights


def save_checkpoint(directory, backbone, tokenizer, image_converter, decoder=None,
                    vocabulary=None):
    """Writes the model to `directory` (created if needed) in the layout above.

    Example:
    >>> import tempfile
    >>> from keras_siglip2.datasets import scenes
    >>> from keras_siglip2.testing import toy_backbone
    >>> tokenizer = scenes.tokenizer(sequence_length=8)
    >>> backbone = toy_backbone(vocabulary_size=tokenizer.vocabulary_size(), sequence_length=8)
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
        keras.saving.save_weights(decoder, directory / DECODER_WEIGHTS_FILE)


def load_checkpoint(handle):
    """Reads a directory written by `save_checkpoint`, or any preset handle.

    Returns a dict: `backbone`, `tokenizer`, `image_converter`, and `decoder` / `vocabulary`
    (None when `handle` has no LocCa decoder, e.g. a released checkpoint). A truncated or
    damaged file is a `CorruptFileError` naming it; a NaN or infinite weight is an error too,
    and so is a decoder weights file that is missing or does not fit `locca_decoder.json`.
    """
    directory = pathlib.Path(handle)
    backbone = SigLIP2Backbone.from_preset(str(handle))
    tokenizer = SigLIP2Tokenizer.from_preset(str(handle))
    converter = NaFlexImageConverter if backbone.is_naflex else SigLIP2ImageConverter
    image_converter = converter.from_preset(str(handle))  # reads IMAGE_CONVERTER_FILE
    decoder = vocabulary = None
    if (directory / DECODER_CONFIG_FILE).is_file():
        config = read_json(directory / DECODER_CONFIG_FILE)
        decoder = _load_decoder(
            config["decoder"], directory, backbone.vision_encoder.hidden_dim
        )
        vocabulary = LocCaVocabulary(**config["vocabulary"])
    return {
        "backbone": backbone, "tokenizer": tokenizer, "image_converter": image_converter,
        "decoder": decoder, "vocabulary": vocabulary,
    }


def _load_decoder(config, directory, image_dim):
    """The `LocCaDecoder` of `config` with the weights of `directory`'s DECODER_WEIGHTS_FILE.

    Strict: the file must be there, readable, hold exactly one finite tensor per decoder
    variable, and fit their shapes; otherwise a one-line error says which and what to do.
    """
    decoder = LocCaDecoder.from_config(config)
    decoder.build((None, decoder.sequence_length), (None, None, image_dim))
    weights_file = directory / DECODER_WEIGHTS_FILE
    different_saves = (
        f"it and {DECODER_CONFIG_FILE} come from different saves; write both with "
        "`save_checkpoint`."
    )
    if not weights_file.is_file():
        raise WeightLoadingError(
            f"{weights_file} is missing but {DECODER_CONFIG_FILE} is there: copy the whole "
            f"checkpoint directory, or delete {DECODER_CONFIG_FILE} to load it without the "
            "LocCa decoder."
        )
    tensors = open_weights_file(weights_file)  # a damaged file is a CorruptFileError
    try:
        for name in tensors:  # reading every tensor: a truncated one is a CorruptFileError
            check_finite(tensors[name], name, weights_file)
        if len(tensors) != len(decoder.weights):
            raise WeightLoadingError(
                f"{weights_file} holds {len(tensors)} tensors, the decoder "
                f"{DECODER_CONFIG_FILE} describes has {len(decoder.weights)} variables: "
                + different_saves
            )
    finally:
        tensors.close()
    try:
        keras.saving.load_weights(decoder, weights_file)
    except ValueError as e:  # Keras's multi-line report; its example error is the reason
        parts = str(e).split("\n\n")
        reason = re.sub(r" Target variable: <Variable path=([^,]+),.*", r" (\1)",
                        " ".join(parts[min(1, len(parts) - 1)].split()))
        raise WeightLoadingError(
            f"{weights_file} does not fit the decoder {DECODER_CONFIG_FILE} describes "
            f"({reason[:300]}): " + different_saves
        ) from e
    return decoder
