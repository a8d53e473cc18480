"""Embedded, procedurally generated grounded-caption dataset (no downloads).

`scenes` draws images of 1–4 coloured shapes (7 shapes, 8 colours, 2 sizes, 3 textures) on
plain, gradient or noisy backgrounds, 64–160 px per side with aspect ratios from 1:2 to 2:1.
Each example has a caption naming every object with its attributes and coarse position, one
box, attribute ids and a uniquely identifying referring expression per object, and a
per-pixel shape segmentation. Text comes in English, German, Spanish, Russian and Chinese
(`captions` holds the grammar). Splits are disjoint seed streams; eight (colour, shape) pairs
are held out of train and validation and appear in test. `scenes.tokenizer()` tokenizes the
texts with the shipped SentencePiece vocabulary (`vocabulary` rebuilds it).

Example:
>>> from keras_siglip2.datasets import scenes
>>> ex = scenes.example("train", 7, language="es")
>>> sorted(ex)[:4], ex["image"].dtype
(['boxes', 'caption', 'colour', 'held_out'], dtype('uint8'))
"""

__all__ = ["captions", "scenes", "vocabulary"]
