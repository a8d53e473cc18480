"""Builds the scenes dataset's SentencePiece vocabulary (`scenes_spm.model`).

`python -m keras_siglip2.datasets.vocabulary [path]` rebuilds the shipped file. The model is
Gemma-like (BPE with byte fallback, pad 0, eos 1, bos 2, unk 3, no dummy prefix, identity
normalisation) with 1000 pieces, trained single-threaded on ASCII-lower-cased text as
`SigLIP2Tokenizer` feeds it: train-split captions and referring expressions in every
language, every class name and every prompt template. `character_coverage=1.0` gives every
character of the grammar its own piece, so no word falls to unk or bytes.
"""

import io
import os
import string
import sys

import sentencepiece

from keras_siglip2.datasets import captions, scenes

VOCABULARY_SIZE = 1000
SCENES_PER_LANGUAGE = 600
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def training_texts(scenes_per_language=SCENES_PER_LANGUAGE):
    """The lower-cased training texts: scene texts, class names and templates of each language.

    Example:
    >>> texts = training_texts(scenes_per_language=1)
    >>> texts[0]
    'a large red solid circle at the top left and a small blue dotted star at the bottom right
    on a grey background'
    >>> "ein großer roter einfarbiger kreis oben links" in texts[1]
    True
    """
    objects = [captions.SceneObject(0, 0, 1, 0, (0.0, 0.0, 0.3, 0.3)),
               captions.SceneObject(4, 4, 0, 2, (0.7, 0.7, 0.9, 0.9))]
    # A fixed two-object scene first, so that the docstring shows a stable caption.
    texts = [captions.caption(objects, 1, language) for language in captions.LANGUAGES]
    for language in captions.LANGUAGES:
        for index in range(scenes_per_language):
            ex = scenes.example("train", index, language=language)
            texts += [ex["caption"], *ex["referring_expressions"]]
        for attribute in captions.ATTRIBUTES:
            names = captions.class_names(attribute, language)
            texts += list(names)
            for template in captions.prompt_templates(language, attribute):
                texts += [template.format(name) for name in names]
    return [text.translate(_ASCII_LOWER) for text in texts]


def train_gemma_like(texts, vocabulary_size, character_coverage=1.0):
    """A Gemma-like SentencePiece model trained on `texts`, as serialized bytes.

    BPE with byte fallback, pad 0, eos 1, bos 2, unk 3, no dummy prefix, whitespace kept,
    digits split, identity normalisation, single-threaded (so reproducible).

    Example:
    >>> import sentencepiece
    >>> proto = train_gemma_like(["a red circle", "ein roter kreis"], vocabulary_size=300)
    >>> sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
    >>> sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()
    (0, 1, 2, 3)
    """
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocabulary_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=character_coverage,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
    )
    return model.getvalue()


def build(path=None, scenes_per_language=SCENES_PER_LANGUAGE):
    """Trains the vocabulary and returns its serialized model; writes it to `path` if given.

    Example:
    >>> import sentencepiece
    >>> sp = sentencepiece.SentencePieceProcessor(model_proto=build(scenes_per_language=2))
    >>> sp.vocab_size(), sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()
    (1000, 0, 1, 2, 3)
    """
    proto = train_gemma_like(training_texts(scenes_per_language), VOCABULARY_SIZE)
    if path is not None:
        with open(path, "wb") as f:
            f.write(proto)
    return proto


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else os.path.join(os.path.dirname(__file__), "scenes_spm.model")
    proto = build(path)
    print(f"Wrote {path} ({len(proto)} bytes).")


if __name__ == "__main__":
    main()
