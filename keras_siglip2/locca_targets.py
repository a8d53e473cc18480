"""Decoder examples for SigLIP 2's LocCa losses, in TensorFlow ops (tf.data) or on numpy.

Tasks: CAP (caption the image), AREF (given a region caption, predict its box as 4 location
tokens) and GCAP (given a box, predict its region caption). Each example is decoded either
causally (teacher forcing) or in parallel from [MASK] inputs with bidirectional attention, as in
CapPa. With sequence = [task] + prefix + target + [eos] (P = len(prefix), G = len(target)):

| task | prefix | target |
|---|---|---|
| cap | – | caption |
| aref | region caption | 4 box tokens (y0, x0, y1, x1) |
| gcap | 4 box tokens | region caption |

- causal: input = sequence[:-1], target = sequence[1:], loss on positions P … P+G.
- parallel: input = [task] + prefix + [MASK] × (G+1), target (target + [eos]) at positions
  P+1 … P+G+1 (each token predicted at its own position), loss there.
Everything is padded with `pad_id` to `sequence_length` T. Truncation keeps P + G ≤ T − 2 in
both modes (so the causal layout ends in one pad): captions keep their first T − 2 tokens, region
captions their first T − 6; box tokens and eos are never cut (T ≥ 6).

Text ids come without eos/pad (`strip_text_ids` removes them from tokenizer output).
"""

import math

import numpy as np
import tensorflow as tf

TASKS = ("cap", "aref", "gcap")
# The decoder inputs of a LocCa example, as `SigLIP2Trainer` reads them from a batch.
DECODER_KEYS = ("decoder_input_ids", "decoder_target_ids", "decoder_loss_mask", "decoder_causal")
# The paper's share of examples in the causal (teacher-forced) layout; the rest are parallel.
CAUSAL_PROBABILITY = 0.5


def _numpy_mode(*values):
    """True when called eagerly on non-TensorFlow inputs: results are then returned as numpy."""
    tf_types = (tf.Tensor, tf.Variable, tf.RaggedTensor)
    return tf.executing_eagerly() and not any(isinstance(v, tf_types) for v in values)


def _maybe_numpy(result, numpy_mode):
    return tf.nest.map_structure(lambda t: t.numpy(), result) if numpy_mode else result


class LocCaVocabulary:
    """Decoder vocabulary: text ids, then location bins, then [MASK], [CAP], [AREF], [GCAP].

    Text ids are 0 … V_text − 1 (pad 0, eos 1 as in Gemma), location bin b is V_text + b.
    Coordinates in [0, 1] are quantised to `num_location_bins` equal bins and decoded to bin
    centres, so a round trip is exact to half a bin.

    Example:
    >>> vocab = LocCaVocabulary(text_vocabulary_size=1000, num_location_bins=10)
    >>> vocab.size, vocab.mask_id, vocab.task_ids
    (1014, 1010, (1011, 1012, 1013))
    >>> ids = vocab.encode_box([0.0, 0.26, 0.5, 1.0]); ids.tolist()
    [1000, 1002, 1005, 1009]
    >>> vocab.decode_box(ids).astype(float).round(3).tolist()
    [0.05, 0.25, 0.55, 0.95]
    """

    def __init__(self, text_vocabulary_size, num_location_bins=100, pad_id=0, eos_id=1):
        self.text_vocabulary_size = text_vocabulary_size
        self.num_location_bins = num_location_bins
        self.pad_id, self.eos_id = pad_id, eos_id

    @property
    def location_offset(self):
        return self.text_vocabulary_size

    @property
    def mask_id(self):
        return self.text_vocabulary_size + self.num_location_bins

    @property
    def cap_id(self):
        return self.mask_id + 1

    @property
    def aref_id(self):
        return self.mask_id + 2

    @property
    def gcap_id(self):
        return self.mask_id + 3

    @property
    def task_ids(self):
        """Prefix ids of the tasks in `TASKS` order (cap, aref, gcap)."""
        return (self.cap_id, self.aref_id, self.gcap_id)

    @property
    def size(self):
        return self.mask_id + 4

    def _encode_box(self, box):
        box = tf.cast(box, tf.float32)
        bins = tf.floor(box * self.num_location_bins)
        bins = tf.clip_by_value(bins, 0, self.num_location_bins - 1)
        return tf.cast(bins, tf.int32) + self.location_offset

    def encode_box(self, box):
        """(…, 4) box (y0, x0, y1, x1) in [0, 1] → (…, 4) int32 location-token ids."""
        return _maybe_numpy(self._encode_box(box), _numpy_mode(box))

    def decode_box(self, ids):
        """(…, 4) location-token ids → (…, 4) float32 bin-centre coordinates."""
        bins = tf.cast(ids, tf.float32) - self.location_offset
        return _maybe_numpy((bins + 0.5) / self.num_location_bins, _numpy_mode(ids))


def strip_text_ids(ids, pad_id=0, eos_id=1):
    """Drops pad and eos ids from a 1-D tokenizer output (e.g. `[5, 7, 1, 0, 0]` → `[5, 7]`).

    Example:
    >>> strip_text_ids([5, 7, 1, 0, 0]).tolist()
    [5, 7]
    """
    tensor = tf.cast(ids, tf.int32)
    kept = tf.boolean_mask(tensor, (tensor != pad_id) & (tensor != eos_id))
    return _maybe_numpy(kept, _numpy_mode(ids))


def _assemble(task_index, prefix, target, causal, vocab, length):
    """The causal or parallel layout of [task] + prefix + target + [eos] (see module doc)."""
    task_id = tf.gather(tf.constant(vocab.task_ids, tf.int32), task_index)[None]
    eos = tf.constant([vocab.eos_id], tf.int32)
    p, g1 = tf.size(prefix), tf.size(target) + 1
    sequence = tf.concat([task_id, prefix, target, eos], 0)
    pad = lambda x: tf.reshape(  # noqa: E731
        tf.pad(x, [[0, length - tf.size(x)]], constant_values=vocab.pad_id), [length]
    )
    positions = tf.range(length)
    span = lambda start: tf.cast(  # noqa: E731
        (positions >= start) & (positions < start + g1), tf.float32
    )
    masks = tf.fill([g1], vocab.mask_id)
    causal = tf.cast(causal, tf.bool)
    return {
        "decoder_input_ids": tf.where(
            causal, pad(sequence[:-1]), pad(tf.concat([task_id, prefix, masks], 0))
        ),
        "decoder_target_ids": tf.where(
            causal,
            pad(sequence[1:]),
            pad(tf.concat([tf.fill([p + 1], vocab.pad_id), target, eos], 0)),
        ),
        "decoder_loss_mask": tf.where(causal, span(p), span(p + 1)),
        "decoder_causal": tf.cast(causal, tf.int32),
        "decoder_task": tf.cast(task_index, tf.int32),
    }


def make_locca_example(task, caption_ids, box, region_ids, causal, vocab, sequence_length):
    """One decoder example (layouts in the module docstring).

    Args:
        task: "cap", "aref" or "gcap", or its index in `TASKS` (an int or int tensor).
        caption_ids: (L,) image caption text ids, without eos/pad.
        box: (4,) y0, x0, y1, x1 in [0, 1] (None for "cap").
        region_ids: (L',) the box's region caption ids, without eos/pad (None for "cap").
        causal: bool/int (or tensor): causal (teacher-forced) or parallel layout.
        vocab: a `LocCaVocabulary`.
        sequence_length: T ≥ 6.

    Returns:
        dict of `decoder_input_ids` (T,) int32, `decoder_target_ids` (T,) int32,
        `decoder_loss_mask` (T,) float32, `decoder_causal` () int32, `decoder_task` () int32:
        numpy when called eagerly on non-tensors, else tensors (works inside `Dataset.map`).

    Example:
    >>> vocab = LocCaVocabulary(text_vocabulary_size=10, num_location_bins=4)
    >>> ex = make_locca_example("gcap", None, [0, 0, 0.5, 1], [7, 8], False, vocab, 10)
    >>> ex["decoder_input_ids"].tolist(), ex["decoder_target_ids"].tolist()
    ([17, 10, 10, 12, 13, 14, 14, 14, 0, 0], [0, 0, 0, 0, 0, 7, 8, 1, 0, 0])
    """
    if sequence_length < 6:
        raise ValueError(f"sequence_length must be at least 6; got {sequence_length}.")
    numpy_mode = _numpy_mode(task, caption_ids, box, region_ids, causal)
    as_ids = lambda x: tf.zeros([0], tf.int32) if x is None else tf.cast(x, tf.int32)  # noqa: E731
    caption, region = as_ids(caption_ids), as_ids(region_ids)
    box_ids = vocab._encode_box(tf.zeros([4]) if box is None else box)
    no_prefix = tf.zeros([0], tf.int32)
    branches = [
        lambda: (no_prefix, caption[: sequence_length - 2]),
        lambda: (region[: sequence_length - 6], box_ids),
        lambda: (box_ids, region[: sequence_length - 6]),
    ]
    if isinstance(task, str):
        task = TASKS.index(task)
    if isinstance(task, (int, np.integer)):
        prefix, target = branches[int(task)]()
    else:
        prefix, target = tf.switch_case(tf.cast(task, tf.int32), branches)
    example = _assemble(task, prefix, target, causal, vocab, sequence_length)
    return _maybe_numpy(example, numpy_mode)


def sample_locca_example(
    caption_ids, boxes, region_ids, seed, vocab, sequence_length,
    causal_probability=CAUSAL_PROBABILITY, all_tasks=False, task_weights=None, task=None,
):
    """A random LocCa example for one image, from TensorFlow ops only (for `Dataset.map`).

    An image without boxes always gets CAP. An image with at least one box draws CAP, AREF or
    GCAP in proportion to `task_weights` (three numbers in `TASKS` order; None: uniform), or
    takes the given `task` (its index in `TASKS`, an int or int tensor). The
    object is uniform over the K boxes, and the layout causal with probability
    `causal_probability`; all drawn with stateless ops from `seed`, so equal seeds give equal
    examples (numpy results when called eagerly on numpy inputs). Pads and eos are stripped
    from the text ids, so tokenizer outputs can go in as is. A given AREF or GCAP of an image
    without boxes has an all-zero `decoder_loss_mask`.

    `all_tasks=True` gives one example of each task in `TASKS` order instead (`task_weights`
    must then be None), every value with a leading axis of 3; each draws its own object and
    layout. Without boxes, the AREF and GCAP rows have an all-zero `decoder_loss_mask`.

    Args:
        caption_ids: (L,) image caption ids.
        boxes: (K, 4) y0, x0, y1, x1 in [0, 1]; K may be 0.
        region_ids: (K, L') region caption ids (dense, padded, or ragged).
        seed: (2,) int stateless seed, e.g. `(pipeline_seed, example_index)`.
        vocab, sequence_length: as in `make_locca_example`.

    Example:
    >>> vocab = LocCaVocabulary(text_vocabulary_size=10, num_location_bins=4)
    >>> ex = sample_locca_example([5, 6, 1, 0], tf.zeros([0, 4]), tf.zeros([0, 3], tf.int32),
    ...                           [0, 3], vocab, 8)
    >>> int(ex["decoder_task"])  # no boxes: always captioning
    0
    >>> ex = sample_locca_example([5, 6, 1, 0], [[0.1, 0.2, 0.5, 0.6]], [[7, 8, 1]], [0, 3],
    ...                           vocab, 8, all_tasks=True)
    >>> ex["decoder_input_ids"].shape, ex["decoder_task"].tolist()
    ((3, 8), [0, 1, 2])
    >>> ex = sample_locca_example([5, 6, 1, 0], [[0.1, 0.2, 0.5, 0.6]], [[7, 8, 1]], [0, 3],
    ...                           vocab, 8, task_weights=(0, 1, 0))  # AREF only
    >>> int(ex["decoder_task"])
    1
    """
    numpy_mode = _numpy_mode(caption_ids, boxes, region_ids, seed)
    if sum(x is not None and x is not False for x in (all_tasks, task_weights, task)) > 1:
        raise ValueError("all_tasks, task_weights and task each choose the task: give one.")
    if task_weights is not None:
        task_weights = check_task_weights(task_weights)
    args = (caption_ids, boxes, region_ids, vocab, sequence_length, causal_probability)
    if all_tasks:
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), len(TASKS))
        rows = [_draw(*args, seeds[i], task=i) for i in range(len(TASKS))]
        example = {k: tf.stack([row[k] for row in rows]) for k in rows[0]}
    else:
        example = _draw(*args, seed, task=task, task_weights=task_weights)
    return _maybe_numpy(example, numpy_mode)


def check_task_weights(task_weights, name="task_weights"):
    """`task_weights` as a tuple of three floats, or a one-line error (about `name`) saying
    what is wrong.

    Example:
    >>> check_task_weights([1, 2, 1])
    (1.0, 2.0, 1.0)
    """
    try:
        weights = () if isinstance(task_weights, str) else tuple(float(w) for w in task_weights)
    except (TypeError, ValueError):
        weights = ()
    if len(weights) != len(TASKS) or not all(math.isfinite(w) and w >= 0 for w in weights) \
            or not sum(weights) > 0:
        raise ValueError(f"{name} must be three finite numbers >= 0 (CAP, AREF, GCAP), not "
                         f"all zero; got {task_weights!r}.")
    return weights


def _draw(caption_ids, boxes, region_ids, vocab, sequence_length, causal_probability, seed,
          task=None, task_weights=None):
    """`sample_locca_example`'s draw in TensorFlow ops, of a sampled or of a given task."""
    uniform = tf.random.stateless_uniform([3], tf.cast(seed, tf.int32))
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    if not isinstance(region_ids, tf.RaggedTensor):
        region_ids = tf.cast(region_ids, tf.int32)
    num_boxes = tf.shape(boxes)[0]
    has_boxes = num_boxes > 0
    pick = lambda u, n: tf.clip_by_value(  # noqa: E731
        tf.cast(u * tf.cast(n, tf.float32), tf.int32), 0, tf.maximum(n - 1, 0)
    )
    index = pick(uniform[1], num_boxes)
    strip = lambda x: strip_text_ids(tf.convert_to_tensor(x), vocab.pad_id, vocab.eos_id)  # noqa: E731
    empty = tf.zeros([0], tf.int32)
    box = tf.cond(has_boxes, lambda: tf.gather(boxes, index), lambda: tf.zeros([4], boxes.dtype))
    region = tf.cond(has_boxes, lambda: strip(region_ids[index]), lambda: empty)
    causal = uniform[2] < causal_probability
    if task is None:  # CAP without boxes, else task i when uniform[0] is in its share
        weights = np.ones(len(TASKS)) if task_weights is None else np.asarray(task_weights)
        thresholds = (np.cumsum(weights)[:-1] / weights.sum()).astype("float32")
        drawn = tf.where(has_boxes, tf.reduce_sum(tf.cast(uniform[0] >= thresholds, tf.int32)), 0)
    else:
        drawn = task
    example = make_locca_example(
        drawn, strip(caption_ids), box, region, causal, vocab, sequence_length,
    )
    if task is not None:  # AREF or GCAP of an image without boxes: nothing to learn.
        example["decoder_loss_mask"] *= tf.cast(has_boxes | (drawn == 0), tf.float32)
    return example


def locca_map_fn(
    vocab, sequence_length, seed=0, caption_key="caption_ids", boxes_key="boxes",
    region_ids_key="region_ids", causal_probability=CAUSAL_PROBABILITY,
):
    """`fn(index, features)` for `dataset.enumerate().map(fn)`: adds the `decoder_*` features.

    Example i is sampled with the stateless seed (seed, i), so the pipeline is deterministic by
    `seed` whatever the map's parallelism.

    Example:
    >>> vocab = LocCaVocabulary(text_vocabulary_size=10, num_location_bins=4)
    >>> ds = tf.data.Dataset.from_tensors({"caption_ids": [5, 6, 1, 0],
    ...     "boxes": [[0.1, 0.1, 0.5, 0.5]], "region_ids": [[7, 1]]})
    >>> ex = next(iter(ds.enumerate().map(locca_map_fn(vocab, 8))))
    >>> sorted(k for k in ex if k.startswith("decoder_"))[:2]
    ['decoder_causal', 'decoder_input_ids']
    """

    def fn(index, features):
        example = sample_locca_example(
            features[caption_key], features[boxes_key], features[region_ids_key],
            tf.stack([tf.cast(seed, tf.int32), tf.cast(index, tf.int32)]),
            vocab, sequence_length, causal_probability,
        )
        return {**features, **example}

    return fn
