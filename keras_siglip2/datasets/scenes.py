"""Procedural grounded-caption scenes: sampling, rendering, numpy and tf.data access.

Example `index` of a split is a pure function of `(seed, split, index)`: its scene comes from
`numpy.random.default_rng([seed, split id, index, 0])` and its language (when not fixed) from
`[..., 1]`, so the image does not depend on the language and splits draw from disjoint seed
streams. Train and validation never contain the `HELD_OUT_PAIRS` (colour, shape) pairs; test
draws every pair uniformly, so about 8 / 56 of its objects are held-out compositions.
"""

import functools
import os

import numpy as np
from PIL import Image, ImageDraw

from keras_siglip2.datasets import captions
from keras_siglip2.datasets.captions import (
    BACKGROUNDS,
    COLOURS,
    LANGUAGES,
    SHAPES,
    SIZES,
    TEXTURES,
    SceneObject,
)
from keras_siglip2.tokenizer import SigLIP2Tokenizer

class_names = captions.class_names
prompt_templates = captions.prompt_templates

SPLITS = ("train", "validation", "test")
DEFAULT_NUM_EXAMPLES = {"validation": 1000, "test": 1000}
# One pair per colour, every shape at least once (triangle twice): 8 of the 56 pairs (14 %).
# Every colour keeps 6 shapes and every shape at least 6 colours in training.
HELD_OUT_PAIRS = (
    ("red", "triangle"), ("orange", "star"), ("yellow", "heart"), ("green", "circle"),
    ("blue", "square"), ("purple", "cross"), ("pink", "diamond"), ("brown", "triangle"),
)
NUM_SEGMENTATION_CLASSES = 1 + len(SHAPES)  # 0 is the background.
IMAGE_SIDE_RANGE = (64, 160)
MAX_OBJECTS = 6

COLOUR_RGB = np.array([
    (220, 30, 35), (245, 130, 20), (240, 215, 30), (40, 165, 60), (35, 80, 225),
    (135, 50, 190), (250, 135, 200), (125, 75, 35),
], np.float32)
BACKGROUND_RGB = np.array([(235, 235, 235), (128, 128, 128), (28, 28, 28)], np.float32)
# Object side as a fraction of the image's short side, per size.
SIZE_FRACTIONS = ((0.27, 0.32), (0.45, 0.52))
_TEXTURE_SHADE = 0.72  # stripes and dots: the object's colour, darkened (0.55 turned orange brown)
_HELD_OUT = {(COLOURS.index(c), SHAPES.index(s)) for c, s in HELD_OUT_PAIRS}
_ALL_PAIRS = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]
_TRAIN_PAIRS = [p for p in _ALL_PAIRS if p not in _HELD_OUT]
_SPM_PATH = os.path.join(os.path.dirname(__file__), "scenes_spm.model")


def _star(points=5, inner=0.45):
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], -1)


def _heart(n=40):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    xy = np.stack([x, y], -1)
    return 2 * (xy - xy.min(0)) / (xy.max(0) - xy.min(0)) - 1


_a = 0.33
# Outlines as (x, y) in [-1, 1] (y downwards); None is drawn as an ellipse.
_OUTLINES = (
    None,
    np.array([(-0.9, -0.9), (0.9, -0.9), (0.9, 0.9), (-0.9, 0.9)]),
    np.array([(0.0, -1.0), (1.0, 0.8), (-1.0, 0.8)]),
    np.array([(0.0, -1.0), (0.75, 0.0), (0.0, 1.0), (-0.75, 0.0)]),
    _star(),
    np.array([(-_a, -1), (_a, -1), (_a, -_a), (1, -_a), (1, _a), (_a, _a), (_a, 1), (-_a, 1),
              (-_a, _a), (-1, _a), (-1, -_a), (-_a, -_a)]),
    _heart(),
)


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: expected one of {SPLITS}.")


def _check_arguments(split, seed, language, num_objects):
    _check_split(split)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0; got {seed!r}.")
    _check_language(language)
    if isinstance(num_objects, (int, np.integer)):
        num_objects = (num_objects, num_objects)
    lo, hi = num_objects
    if not 1 <= lo <= hi <= MAX_OBJECTS:
        raise ValueError(
            f"`num_objects` must be an int or a (min, max) pair with 1 <= min <= max <= "
            f"{MAX_OBJECTS}; got {num_objects!r}."
        )
    return int(lo), int(hi)


def _check_language(language):
    if language is None or isinstance(language, str) and language in LANGUAGES:
        return
    if isinstance(language, dict) and set(language) <= set(LANGUAGES) and all(
        isinstance(w, (int, float, np.number)) and w >= 0 for w in language.values()
    ) and sum(language.values()) > 0:
        return
    raise ValueError(
        f"`language` must be None, one of {LANGUAGES} or a mapping from those codes to "
        f"weights >= 0 that do not all vanish; got {language!r}."
    )


def language_weights(language):
    """The probability of each of `LANGUAGES` under `language`: one code, a mapping from
    codes to weights (normalised here), or None (uniform).

    Example:
    >>> language_weights({"en": 3, "de": 1}).tolist()
    [0.75, 0.25, 0.0, 0.0, 0.0]
    """
    _check_language(language)
    if language is None:
        language = dict.fromkeys(LANGUAGES, 1.0)
    elif isinstance(language, str):
        language = {language: 1.0}
    weights = np.array([language.get(code, 0) for code in LANGUAGES], np.float64)
    return weights / weights.sum()


def _frozen(array):
    array.flags.writeable = False  # cached: callers must not change it
    return array


@functools.cache
def _mask(shape, side):
    """Boolean (side, side) mask of a shape filling its square (cached, read-only)."""
    canvas = Image.new("L", (side, side))
    draw = ImageDraw.Draw(canvas)
    if _OUTLINES[shape] is None:
        draw.ellipse((0, 0, side - 1, side - 1), fill=1)
    else:
        points = (_OUTLINES[shape] + 1) / 2 * (side - 1)
        draw.polygon([tuple(p) for p in points], fill=1)
    return _frozen(np.asarray(canvas, bool))


@functools.cache
def _texture(texture, side):
    """Boolean (side, side) map of the darkened pixels: none, stripes or dots (cached)."""
    y, x = np.mgrid[:side, :side]
    if texture == 1:
        period = max(4.0, side / 3.5)
        return _frozen((x + y) % period < period / 2)
    if texture == 2:
        spacing = max(5.0, side / 3)
        dy, dx = y % spacing - spacing / 2, x % spacing - spacing / 2
        return _frozen(dy**2 + dx**2 < (0.32 * spacing) ** 2)
    return _frozen(np.zeros((side, side), bool))


def _free_corner(rng, placed, side, height, width):
    """A top-left corner for a `side` square apart from the `placed` (top, left, side) ones."""
    gap = max(2, round(0.03 * min(height, width)))
    for _ in range(40):
        top, left = int(rng.integers(1, height - side)), int(rng.integers(1, width - side))
        if all(top + side + gap <= t or t + s + gap <= top or left + side + gap <= x or
               x + s + gap <= left for t, x, s in placed):
            return top, left
    return None


def _layout(rng, num_objects):
    """Image height, width, background id and (size, top, left, side) of each object square.

    Large squares are placed first; one that finds no free place becomes small. When a small
    one finds none either, the placement starts again; after five tries the fullest one is kept
    (this drops objects only in small images crowded with 5 or 6 objects).
    """
    height, width = (int(v) for v in rng.integers(*IMAGE_SIDE_RANGE, endpoint=True, size=2))
    width = int(np.clip(width, max(IMAGE_SIDE_RANGE[0], -(-height // 2)), 2 * height))  # 1:2 … 2:1
    short = min(height, width)
    count = int(rng.integers(num_objects[0], num_objects[1], endpoint=True))
    sizes = sorted(rng.integers(len(SIZES), size=count).tolist(), reverse=True)
    best = []
    for _ in range(5):
        placed = []
        for drawn in sizes:
            for size in range(drawn, -1, -1):
                side = round(rng.uniform(*SIZE_FRACTIONS[size]) * short)
                corner = _free_corner(rng, [p[1:] for p in placed], side, height, width)
                if corner is not None:
                    placed.append((size, *corner, side))
                    break
        best = max(best, placed, key=len)
        if len(best) == count:
            break
    order = rng.permutation(len(best))  # caption order
    return height, width, int(rng.integers(len(BACKGROUNDS))), [best[i] for i in order]


def _objects(rng, split, squares, height, width):
    """`SceneObject`s (boxes tight around their masks), their masks and referring plan.

    In 30 % of the scenes with several objects the last object copies the first one's colour
    and shape (and in half of those its texture too), so that referring expressions often need
    the size, the texture or a spatial relation. Attributes are redrawn until every object has a
    unique referring expression; after every ten failed draws the last object is left out.
    """
    pairs = _ALL_PAIRS if split == "test" else _TRAIN_PAIRS
    for attempt in range(10 * len(squares)):
        squares_used = squares[: len(squares) - attempt // 10]
        looks = [(*pairs[rng.integers(len(pairs))], int(rng.integers(len(TEXTURES))))
                 for _ in squares_used]
        copy = rng.random()
        if len(looks) > 1 and copy < 0.3:
            looks[-1] = looks[0] if copy < 0.15 else (*looks[0][:2], looks[-1][2])
        objects, masks = [], []
        for (size, top, left, side), (colour, shape, texture) in zip(squares_used, looks):
            mask = _mask(shape, side)
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            box = np.array([top + rows[0], left + cols[0], top + rows[-1] + 1,
                            left + cols[-1] + 1], np.float32) / [height, width, height, width]
            objects.append(SceneObject(shape, colour, size, texture, tuple(box.tolist())))
            masks.append(mask)
        plan = captions.referring_plan(objects)
        if None not in plan:
            return objects, masks, plan, squares_used
    raise AssertionError("unreachable: a single object always has a referring expression")


def _render(rng, height, width, background, objects, masks, squares):
    """uint8 (H, W, 3) image and uint8 (H, W) segmentation (0 background, 1 + shape id)."""
    # Brightness varies more than hue, so that the background keeps its colour name.
    base = BACKGROUND_RGB[background] + rng.uniform(-12, 12) + rng.uniform(-4, 4, 3)
    image = np.broadcast_to(base.astype(np.float32), (height, width, 3)).copy()
    if rng.random() < 0.5:  # gentle linear gradient
        angle, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(10, 30)
        y, x = np.linspace(-0.5, 0.5, height), np.linspace(-0.5, 0.5, width)
        ramp = amplitude * (np.sin(angle) * y[:, None] + np.cos(angle) * x[None, :])
        image += ramp[..., None].astype(np.float32)
    segmentation = np.zeros((height, width), np.uint8)
    for obj, mask, (_, top, left, side) in zip(objects, masks, squares):
        colour = COLOUR_RGB[obj.colour] + rng.uniform(-12, 12, 3).astype(np.float32)
        pixels = np.where(_texture(obj.texture, side)[..., None], _TEXTURE_SHADE * colour, colour)
        image[top:top + side, left:left + side][mask] = pixels[mask]
        segmentation[top:top + side, left:left + side][mask] = 1 + obj.shape
    noise = rng.choice([0.0, 3.0, 6.0])
    if noise:
        image += noise * rng.standard_normal(image.shape, np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), segmentation


def example(split, index, seed=0, language=None, num_objects=(1, 4)):
    """Example `index` of `split`: a dict of numpy arrays and strings.

    Args:
        split: "train", "validation" or "test".
        index: int >= 0.
        seed: int >= 0; the dataset's seed.
        language: one of `LANGUAGES`; None to draw it uniformly per example; or a mapping
            from codes to weights to draw it from (e.g. SigLIP 2's mostly English mix,
            `{"en": 0.9, "de": 0.025, ...}`). The image does not depend on it.
        num_objects: int, or (min, max) objects per image (1 <= min <= max <= 6).

    Returns:
        image uint8 (H, W, 3); caption str; language str; boxes float32 (K, 4) as
        (y0, x0, y1, x1) in [0, 1] (tight around each object's pixels); referring_expressions
        list of K str; colour, shape, size, texture int32 (K,) (ids into `COLOURS`...);
        held_out bool (K,) (the object's (colour, shape) is in `HELD_OUT_PAIRS`);
        segmentation uint8 (H, W) (0 background, 1 + shape id).

    Example:
    >>> ex = example("train", 0, language="en", num_objects=2)
    >>> ex["image"].dtype, ex["boxes"].shape, len(ex["referring_expressions"])
    (dtype('uint8'), (2, 4), 2)
    >>> ex["caption"]
    'a large brown dotted cross at the top left and a small purple striped circle on the right
    on a grey background'
    >>> ex["referring_expressions"]
    ['the brown cross', 'the purple circle']
    """
    num_objects = _check_arguments(split, seed, language, num_objects)
    _check_index(index)
    key = [int(seed), SPLITS.index(split), int(index)]
    if not isinstance(language, str):
        draw = np.random.default_rng(key + [1])
        if language is None:
            language = LANGUAGES[draw.integers(len(LANGUAGES))]
        else:
            language = LANGUAGES[draw.choice(len(LANGUAGES), p=language_weights(language))]
    scene = _scene(split, key, num_objects)
    return {**scene.pop("fields"), "caption": scene["caption"](language), "language": language,
            "referring_expressions": scene["referring_expressions"](language)}


def example_in_every_language(split, index, seed=0, num_objects=(1, 4)):
    """`example` with `caption` and `referring_expressions` as dicts over `LANGUAGES` (the
    image and objects do not depend on the language; one render for all five).

    Example:
    >>> ex = example_in_every_language("train", 0, num_objects=2)
    >>> ex["caption"]["en"] == example("train", 0, language="en", num_objects=2)["caption"]
    True
    >>> sorted(ex["referring_expressions"]) == sorted(LANGUAGES)
    True
    """
    num_objects = _check_arguments(split, seed, None, num_objects)
    _check_index(index)
    scene = _scene(split, [int(seed), SPLITS.index(split), int(index)], num_objects)
    return {**scene["fields"], **{k: {code: scene[k](code) for code in LANGUAGES}
                                  for k in ("caption", "referring_expressions")}}


def _check_index(index):
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"`index` must be an int >= 0; got {index!r}.")


def _scene(split, key, num_objects):
    """The language-free fields of the scene of seed `key`, and its texts per language."""
    rng = np.random.default_rng(key + [0])
    height, width, background, squares = _layout(rng, num_objects)
    objects, masks, plan, squares = _objects(rng, split, squares, height, width)
    image, segmentation = _render(rng, height, width, background, objects, masks, squares)
    column = lambda name, dtype: np.array([getattr(o, name) for o in objects], dtype)  # noqa: E731
    return {
        "fields": {
            "image": image,
            "boxes": np.array([o.box for o in objects], np.float32),
            "colour": column("colour", np.int32),
            "shape": column("shape", np.int32),
            "size": column("size", np.int32),
            "texture": column("texture", np.int32),
            "held_out": np.array([(o.colour, o.shape) in _HELD_OUT for o in objects], bool),
            "segmentation": segmentation,
        },
        "caption": lambda language: captions.caption(objects, background, language),
        "referring_expressions": lambda language: captions.referring_expressions(
            objects, language, plan),
    }


_SIGNATURE = {
    "image": ("uint8", (None, None, 3)),
    "caption": ("string", ()),
    "language": ("string", ()),
    "boxes": ("float32", (None, 4)),
    "referring_expressions": ("string", (None,)),
    "colour": ("int32", (None,)),
    "shape": ("int32", (None,)),
    "size": ("int32", (None,)),
    "texture": ("int32", (None,)),
    "held_out": ("bool", (None,)),
    "segmentation": ("uint8", (None, None)),
}


def _num_examples(split, num_examples):
    """The number of examples to read, None for endless (the train default)."""
    if num_examples is None:
        return DEFAULT_NUM_EXAMPLES.get(split)
    if isinstance(num_examples, bool) or not isinstance(num_examples, (int, np.integer)) or (
        num_examples < 0
    ):
        raise ValueError(f"`num_examples` must be None or an int >= 0; got {num_examples!r}.")
    return int(num_examples)


def load(split, num_examples=None, seed=0, language=None, num_objects=(1, 4), start=0):
    """The split as a `tf.data.Dataset` of `example` dicts (strings as tf.string).

    Element i equals `example(split, start + i, ...)`. It maps `Dataset.range` (or `counter` when
    endless) through `tf.numpy_function` in parallel with `deterministic=True`, so the order
    and the values do not depend on the parallelism.

    Args:
        num_examples: examples to read; None reads 1000 for validation and test and is
            endless for train.
        seed, language, num_objects: as in `example`.
        start: the index of the first example: a resumed training run starts its stream
            where it stopped instead of replaying it.

    Example:
    >>> ds = load("validation", num_examples=2, language="ru")
    >>> [ex["caption"].numpy().decode() for ex in ds] == [
    ...     example("validation", i, language="ru")["caption"] for i in range(2)]
    True
    >>> next(iter(load("train", start=5)))["caption"] == example("train", 5)["caption"]
    <tf.Tensor: shape=(), dtype=bool, numpy=True>
    >>> ds.element_spec["boxes"]
    TensorSpec(shape=(None, 4), dtype=tf.float32, name=None)
    """
    import tensorflow as tf

    num_objects = _check_arguments(split, seed, language, num_objects)
    count = _num_examples(split, num_examples)
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"`start` must be an int >= 0; got {start!r}.")
    keys = list(_SIGNATURE)

    def generate(index):
        ex = example(split, int(index), seed, language, num_objects)
        ex["referring_expressions"] = np.array(ex["referring_expressions"], object)
        return [ex[k] for k in keys]

    def to_dict(index):
        values = tf.numpy_function(
            generate, [index], [tf.as_dtype(_SIGNATURE[k][0]) for k in keys], stateful=False
        )
        for value, key in zip(values, keys):
            value.set_shape(_SIGNATURE[key][1])
        return dict(zip(keys, values))

    indices = (tf.data.Dataset.counter(int(start)) if count is None
               else tf.data.Dataset.range(int(start), int(start) + count))
    return indices.map(to_dict, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def numpy_batches(split, batch_size, num_examples=None, seed=0, language=None,
                  num_objects=(1, 4), drop_remainder=False):
    """Batches of `example` dicts as plain Python: each field is a list of batch_size values.

    Examples are read in index order; `num_examples` as in `load`. The last, smaller batch
    is kept unless `drop_remainder`.

    Example:
    >>> batches = numpy_batches("test", batch_size=2, num_examples=3, language="zh")
    >>> [len(batch["image"]) for batch in batches]
    [2, 1]
    """
    num_objects = _check_arguments(split, seed, language, num_objects)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
        batch_size < 1
    ):
        raise ValueError(f"`batch_size` must be an int >= 1; got {batch_size!r}.")
    count = _num_examples(split, num_examples)
    start = 0
    while count is None or start < count:
        stop = start + batch_size if count is None else min(start + batch_size, count)
        if stop - start < batch_size and drop_remainder:
            return
        examples = [example(split, i, seed, language, num_objects) for i in range(start, stop)]
        yield {key: [ex[key] for ex in examples] for key in _SIGNATURE}
        start = stop


def tokenizer(sequence_length=32, **kwargs):
    """A `SigLIP2Tokenizer` on the dataset's shipped SentencePiece vocabulary.

    The vocabulary (`scenes_spm.model`, built by `keras_siglip2.datasets.vocabulary`) has
    Gemma's special ids (pad 0, eos 1, bos 2, unk 3) and covers every character of the five
    languages; `kwargs` go to `SigLIP2Tokenizer`.

    Example:
    >>> tok = tokenizer(sequence_length=8)
    >>> ids = tok("the red circle")
    >>> ids.shape, int(ids[list(ids).index(1) + 1:].sum()), tok.vocabulary_size()
    ((8,), 0, 1000)
    """
    return SigLIP2Tokenizer(proto=_SPM_PATH, sequence_length=sequence_length, **kwargs)
