"""A pool of training scenes drawn and converted once, then reused with fresh draws per pass.

Drawing a scene, converting its image to NaFlex patches, making its local views and
tokenising its texts cost more CPU than the main job's training step uses per example
(docs/performance.md, the main job section). `ScenePool` does that work once per scene
and keeps the results as compact arrays: the global view's pixels as uint8, every
language's caption and referring expressions as token ids, the boxes, and `pool_views`
local views. Its `training_batches` then streams passes over the pool, each pass in its own
order, and draws per example what makes a reuse differ from the last: the caption's
language, the LocCa task and object, and which local views the student sees. Every draw is
seeded by (seed, example index), so a stream is reproducible and resumes from any index.
"""

import numpy as np

from keras_siglip2.datasets import scenes
from keras_siglip2.locca_targets import (
    CAUSAL_PROBABILITY,
    DECODER_KEYS,
    check_task_weights,
    sample_locca_example,
)
from keras_siglip2.preprocessing import LocalViews, NaFlexImageConverter

_IMAGE_KEYS = ("patches", "patch_coords", "patch_mask", "spatial_shapes")


class ScenePool:
    """`size` training scenes of `keras_siglip2.datasets.scenes`, converted once.

    Args:
        size: scenes in the pool (examples 0 … size − 1 of the split).
        tokenizer: the text tower's tokenizer (`scenes.tokenizer(...)`).
        image_converter: a `NaFlexImageConverter` for the global view.
        local_views: a `LocalViews` of a `NaFlexImageConverter`, or None (no SILC views);
            the pool keeps `pool_views` of its crops per scene, of which each example gets
            `local_views.num_views`.
        pool_views: local views kept per scene (≥ `local_views.num_views`).
        seed: the scenes drawn (`scenes.load`'s) and every per-example draw.
        split, num_objects: the scenes drawn (`scenes.load`'s).

    Example:
    >>> from keras_siglip2.locca_targets import LocCaVocabulary
    >>> tokenizer = scenes.tokenizer(sequence_length=16)
    >>> pool = ScenePool(4, tokenizer, NaFlexImageConverter(8, 16),
    ...                  LocalViews(NaFlexImageConverter(8, 4), 2))
    >>> vocab = LocCaVocabulary(tokenizer.vocabulary_size(), num_location_bins=32)
    >>> batch = next(iter(pool.training_batches(2, {"en": 1.0}, vocab, decoder_length=20)))
    >>> tuple(batch["patches"].shape), tuple(batch["local_views"]["patches"].shape)
    ((2, 16, 192), (2, 2, 4, 192))
    """

    def __init__(self, size, tokenizer, image_converter, local_views=None, pool_views=4,
                 seed=0, split="train", num_objects=(1, 4)):
        import tensorflow as tf

        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"`size` must be an int >= 1; got {size!r}.")
        if not isinstance(image_converter, NaFlexImageConverter):
            raise ValueError("ScenePool keeps NaFlex patches: give a NaFlexImageConverter.")
        if local_views is not None and not (
            isinstance(local_views, LocalViews)
            and isinstance(local_views.image_converter, NaFlexImageConverter)
            and local_views.num_views <= pool_views
        ):
            raise ValueError(
                "`local_views` must be a LocalViews of a NaFlexImageConverter with num_views "
                f"<= pool_views ({pool_views}); got {local_views!r}."
            )
        self.size, self.seed, self.local_views = size, seed, local_views
        self._last_order = (None, None)
        max_objects = scenes._check_arguments(split, seed, None, num_objects)[1]
        languages = scenes.LANGUAGES
        keep = LocalViews(local_views.image_converter, pool_views, local_views.scale,
                          local_views.ratio) if local_views is not None else None

        def render(index):
            ex = scenes.example_in_every_language(split, int(index), seed, num_objects)
            count = len(ex["boxes"])
            expressions = np.full((len(languages), max_objects), "", object)
            for row, code in enumerate(languages):
                expressions[row, :count] = ex["referring_expressions"][code]
            boxes = np.zeros((max_objects, 4), np.float32)
            boxes[:count] = ex["boxes"]
            return (ex["image"], np.array([ex["caption"][c] for c in languages], object),
                    expressions, boxes, np.int32(count))

        def convert(index):
            image, texts, expressions, boxes, count = tf.numpy_function(
                render, [index], [tf.uint8, tf.string, tf.string, tf.float32, tf.int32],
                stateful=False)
            image = tf.ensure_shape(image, (None, None, 3))
            out = {
                **_as_pixels(image_converter(image)),
                "captions": tf.ensure_shape(texts, (len(languages),)),
                "expressions": tf.ensure_shape(expressions, (len(languages), max_objects)),
                "boxes": tf.ensure_shape(boxes, (max_objects, 4)),
                "num_boxes": tf.ensure_shape(count, ()),
            }
            if keep is not None:
                views = keep(image, seed=tf.stack([tf.cast(seed, tf.int32),
                                                   tf.cast(index, tf.int32)]))
                out.update({f"view_{k}": v for k, v in _as_pixels(views).items()})
            return out

        def tokenize(batch):  # a batch of texts at a time: a tenth of the cost of one by one
            ids = {}
            for key in ("captions", "expressions"):
                texts = batch.pop(key)
                flat = tokenizer(tf.reshape(texts, [-1]))  # the tokenizer takes 1-D text
                ids[key] = tf.reshape(flat, tf.concat([tf.shape(texts), [-1]], 0))
            return {**batch, "caption_ids": ids["captions"], "expression_ids": ids["expressions"]}

        converted = tf.data.Dataset.range(size).map(
            convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        ).batch(256).map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        parts = [{k: v.numpy() for k, v in batch.items()} for batch in converted]
        self.arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        for key in ("caption_ids", "expression_ids"):  # a text vocabulary fits 16 bits
            if self.arrays[key].max() <= np.iinfo(np.int16).max:
                self.arrays[key] = self.arrays[key].astype(np.int16)

    def _order(self, epoch):
        """The pool's order in pass `epoch` (the current pass's kept: one draw per pass)."""
        last = self._last_order  # read once: tf.data threads may be in neighbouring passes
        if last[0] != epoch:
            last = (epoch, np.random.default_rng([self.seed, epoch, 3]).permutation(self.size))
            self._last_order = last
        return last[1]

    def _draw(self, index, weights):
        """Pool arrays of example `index`: its scene, language and local views."""
        epoch, slot = divmod(int(index), self.size)
        scene = self._order(epoch)[slot]
        rng = np.random.default_rng([self.seed, int(index), 2])
        language = rng.choice(len(weights), p=weights)
        a = self.arrays
        out = [a[k][scene] for k in _IMAGE_KEYS]
        out += [a["caption_ids"][scene, language], a["expression_ids"][scene, language],
                a["boxes"][scene][: a["num_boxes"][scene]]]
        if self.local_views is not None:
            pool_views = a["view_patches"].shape[1]
            chosen = np.sort(rng.choice(pool_views, self.local_views.num_views, replace=False))
            out += [a[f"view_{k}"][scene][chosen] for k in _IMAGE_KEYS]
        return out

    def referring_length(self, vocabulary, decoder_length):
        """The decoder length that holds every AREF and GCAP example of the pool, in either
        layout: its longest referring expression and 6 ids (task, box, eos or [MASK]s), at
        most `decoder_length`."""
        ids = self.arrays["expression_ids"]
        longest = ((ids != vocabulary.pad_id) & (ids != vocabulary.eos_id)).sum(-1).max()
        return min(int(longest) + 6, decoder_length)

    def training_batches(self, batch_size, language, vocabulary=None, decoder_length=None,
                         start=0, all_locca_tasks=False, locca_task_weights=None,
                         locca_causal_probability=CAUSAL_PROBABILITY, locca_batch_tasks=False,
                         locca_length_groups=False):
        """Batches for `SigLIP2Trainer.fit`, the keys `pipelines.training_batches` gives.

        Args:
            batch_size: examples per batch (the remainder of no pass is dropped: the stream
                is endless).
            language: a mapping from `scenes.LANGUAGES` codes to weights, or one code
                (`scenes.language_weights`).
            vocabulary, decoder_length: a `LocCaVocabulary` and the LocCa sequence length,
                or None for no decoder inputs.
            start: the index of the first example (resume a stream where it stopped).
            all_locca_tasks: one LocCa example of each task per scene, (B, 3, T), instead
                of one sampled task.
            locca_task_weights: the sampled task's odds, CAP / AREF / GCAP, for scenes with
                objects (`sample_locca_example`'s `task_weights`; None: uniform).
            locca_causal_probability: the share of LocCa examples in the causal layout
                (`sample_locca_example`'s `causal_probability`).
            locca_batch_tasks: the tasks drawn by batch, not by example: the first
                `caption_rows(batch_size, locca_task_weights)` examples of every batch
                caption, the others draw AREF or GCAP in their odds (an image without
                objects among them has nothing to learn). An example captions as often as
                with per-example draws, to the rounding of that count, and the decoder's
                long sequences sit in known rows.
            locca_length_groups: with `locca_batch_tasks`, each decoder key holds a pair,
                the captioning rows at `decoder_length` and the others at
                `referring_length(vocabulary, decoder_length)`, so that `LocCaTerm`
                computes nothing on their padding. For one device only: a batch split over
                devices would pair decoder rows with other rows' images.
        """
        import tensorflow as tf

        if vocabulary is not None and decoder_length is None:
            raise ValueError("Give `decoder_length` (the LocCa sequence length) with "
                             "`vocabulary`.")
        if locca_batch_tasks and (vocabulary is None or all_locca_tasks):
            raise ValueError("locca_batch_tasks draws one LocCa task per example: give a "
                             "vocabulary, without all_locca_tasks.")
        if locca_length_groups and not locca_batch_tasks:
            raise ValueError("locca_length_groups needs locca_batch_tasks=True (it cuts the "
                             "rows that do not caption).")
        odds = check_task_weights((1, 1, 1) if locca_task_weights is None else locca_task_weights)
        cap = caption_rows(batch_size, odds) if locca_batch_tasks else 0
        aref, gcap = odds[1:]
        weights = scenes.language_weights(language)
        a = self.arrays
        specs = [(a[k].dtype, a[k].shape[1:]) for k in _IMAGE_KEYS]
        specs += [(a["caption_ids"].dtype, a["caption_ids"].shape[2:]),
                  (a["expression_ids"].dtype, a["expression_ids"].shape[2:]),
                  (np.float32, (None, 4))]
        if self.local_views is not None:
            views = self.local_views.num_views
            specs += [(a[f"view_{k}"].dtype, (views, *a[f"view_{k}"].shape[2:]))
                      for k in _IMAGE_KEYS]

        def fn(index):
            values = tf.numpy_function(lambda i: self._draw(i, weights), [index],
                                       [tf.as_dtype(d) for d, _ in specs], stateful=False)
            for value, (_, shape) in zip(values, specs):
                value.set_shape(shape)
            values[4:6] = [tf.cast(v, tf.int32) for v in values[4:6]]
            batch = {"token_ids": values[4], **_from_pixels(dict(zip(_IMAGE_KEYS, values)))}
            if vocabulary is not None:
                example_seed = tf.stack([tf.cast(self.seed, tf.int32), tf.cast(index, tf.int32)])
                tasks = {"all_tasks": all_locca_tasks, "task_weights": locca_task_weights}
                if locca_batch_tasks:  # the draw that would have picked the task picks one
                    row = tf.math.floormod(tf.cast(index - start, tf.int32), batch_size)
                    u = tf.random.stateless_uniform([3], example_seed)[0]
                    tasks = {"task": tf.where(row < cap, 0,
                                              tf.where(u * (aref + gcap) < aref, 1, 2))}
                locca = sample_locca_example(values[4], values[6], values[5], example_seed,
                                             vocabulary, decoder_length,
                                             causal_probability=locca_causal_probability,
                                             **tasks)
                batch.update({k: locca[k] for k in DECODER_KEYS})
            if self.local_views is not None:
                batch["local_views"] = _from_pixels(dict(zip(_IMAGE_KEYS, values[7:])))
            return batch

        batches = (tf.data.Dataset.counter(int(start))
                   .map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                   .batch(batch_size, drop_remainder=True))
        if not locca_length_groups:
            return batches
        short = self.referring_length(vocabulary, decoder_length)

        def split(batch):
            for key in DECODER_KEYS:
                value = batch[key]
                rest = value[cap:, :short] if value.shape.rank == 2 else value[cap:]
                batch[key] = tuple(group for group, rows in
                                   ((value[:cap], cap), (rest, batch_size - cap)) if rows)
            return batch

        return batches.map(split)


def caption_rows(batch_size, task_weights=None):
    """The captioning examples in a batch of `batch_size` whose LocCa tasks are drawn by
    batch (`ScenePool.training_batches`'s `locca_batch_tasks`): the batch's share of CAP,
    rounded.

    Example:
    >>> caption_rows(64, (1, 3, 1))  # 12.8
    13
    """
    weights = check_task_weights((1, 1, 1) if task_weights is None else task_weights)
    return round(batch_size * weights[0] / sum(weights))


def _as_pixels(converted):
    """A NaFlex converter's output with `patches` back as uint8 pixels (a quarter the bytes).

    The converter's patches are the resized image scaled to [-1, 1]; the stored pixels are that
    image rounded to whole values, as a resized image saved to a file would be.
    """
    import tensorflow as tf

    pixels = tf.round((converted["patches"] + 1.0) * 127.5)
    return {**converted, "patches": tf.cast(tf.clip_by_value(pixels, 0, 255), tf.uint8),
            "patch_coords": tf.cast(converted["patch_coords"], tf.int16),
            "patch_mask": tf.cast(converted["patch_mask"], tf.int8)}


def _from_pixels(stored):
    """The NaFlex inputs `SigLIP2NaFlexVisionEncoder` takes, from `_as_pixels`'s arrays."""
    import tensorflow as tf

    return {**stored, "patches": tf.cast(stored["patches"], tf.float32) / 255.0 * 2.0 - 1.0,
            "patch_coords": tf.cast(stored["patch_coords"], tf.int32),
            "patch_mask": tf.cast(stored["patch_mask"], tf.int32)}
