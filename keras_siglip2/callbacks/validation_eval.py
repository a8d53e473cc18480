"""`ValidationEvaluation`: a few zero-shot, retrieval and referring measures after every
epoch, into `fit`'s logs and a CSV file."""

import os
import time

import keras

from keras_siglip2 import evaluation
from keras_siglip2.callbacks.csv_rows import append_row, read_columns
from keras_siglip2.callbacks.ema_teacher import optimizer_step
from keras_siglip2.datasets import scenes
from keras_siglip2.pipelines import referring_batches
from keras_siglip2.scene_evaluation import (
    attribute_batches,
    attribute_classifiers,
    caption_batches,
)


class ValidationEvaluation(keras.callbacks.Callback):
    """Measures the model being trained on `num_scenes` validation scenes after every epoch.

    Adds to the epoch's logs, so to `fit`'s History, `keras.callbacks.TensorBoard` and any
    callback after this one:
    - `val_colour`, `val_shape`: zero-shot top-1 accuracy on single-object scenes (English
      class names ensembled over the templates, as `main_job.evaluate` on the test split);
    - `val_t2i_r1`: text→image recall@1 of the English captions of `num_scenes` scenes of
      1 to 4 objects, among those scenes;
    - `val_box_iou`: the mean IoU of the box that the LocCa decoder reads from each
      object's referring expression in those scenes, in whole batches (only when the model
      has a `decoder` and a `vocabulary` is given).

    The model is `fit`'s (a `SigLIP2Trainer`: its `backbone` and `decoder`). The scenes are
    drawn and converted once, at the first evaluation, and kept as numpy batches; each
    evaluation then runs the towers (compiled) and the decoder on them. Nothing of the
    training state but the weights is read and nothing random is drawn, so a run trains to
    the same weights with or without it. `seconds` lists each evaluation's wall time.

    With a `path`, appends `epoch, step, <metric>...` (epoch counted from 1, step the
    optimizer's) to that CSV file after every evaluation; `read(path)` keeps the last row
    written for each epoch, so a run resumed from a backup keeps its earlier epochs' rows.
    Placed after `TrainingBackup`, it never measures weights that the backup rejects.

    Args:
        tokenizer: the model's tokenizer (`scenes.tokenizer(...)` for the main job).
        image_converter: the model's image converter.
        num_scenes: validation scenes per measure (≥ 1).
        vocabulary: the decoder's `LocCaVocabulary`, for `val_box_iou`.
        path: the CSV file, or None.
        seed: the dataset seed.
        batch_size: images per compiled call.

    Example:
    >>> from keras_siglip2.main_job import MainJobConfig, build_trainer, image_converters
    >>> config = MainJobConfig(width=8, depth=1, num_heads=2, text_depth=1, locca=False,
    ...                        self_distillation=False, max_num_patches=16, text_length=16)
    >>> tokenizer = scenes.tokenizer(sequence_length=16)
    >>> trainer, _ = build_trainer(config, tokenizer.vocabulary_size())
    >>> callback = ValidationEvaluation(tokenizer, image_converters(config)[0], num_scenes=8)
    >>> callback.set_model(trainer)
    >>> logs = {}
    >>> callback.on_epoch_end(0, logs)
    >>> sorted(logs)
    ['val_colour', 'val_shape', 'val_t2i_r1']
    """

    def __init__(self, tokenizer, image_converter, num_scenes=256, vocabulary=None, path=None,
                 seed=0, batch_size=64):
        super().__init__()
        if isinstance(num_scenes, bool) or not isinstance(num_scenes, int) or num_scenes < 1:
            raise ValueError(f"num_scenes must be an int >= 1; got {num_scenes!r}.")
        self.tokenizer, self.image_converter = tokenizer, image_converter
        self.num_scenes, self.vocabulary, self.seed = num_scenes, vocabulary, seed
        self.batch_size = batch_size
        self.path = None if path is None else os.fspath(path)
        self.seconds = []
        self._sets = None

    def _batches(self, with_boxes):
        """The validation sets as lists of numpy batches, drawn and converted once."""
        if self._sets is None:
            size = self.batch_size
            examples = scenes.load("validation", self.num_scenes, seed=self.seed,
                                   language="en").cache()
            sets = {
                "attributes": attribute_batches("validation", self.num_scenes,
                                                self.image_converter, size, self.seed),
                "captions": caption_batches(examples, self.tokenizer, self.image_converter,
                                            size),
            }
            if with_boxes:
                sets["referring"] = referring_batches(examples, self.tokenizer,
                                                      self.image_converter, size)
            self._sets = {k: list(evaluation.numpy_batches(v)) for k, v in sets.items()}
            if with_boxes:  # the objects' last, smaller batch would compile the decoding again
                full = [b for b in self._sets["referring"] if len(b["box"]) == size]
                self._sets["referring"] = full or self._sets["referring"]
        return self._sets

    def evaluate(self):
        """The measures of the model's current weights, as a dict `val_<name>` → value."""
        model = self.model
        backbone, decoder = model.backbone, getattr(model, "decoder", None)
        with_boxes = decoder is not None and self.vocabulary is not None
        sets = self._batches(with_boxes)
        results = {}
        for attribute, classifier in attribute_classifiers(backbone, self.tokenizer).items():
            accuracy = evaluation.zero_shot_accuracy(
                backbone, classifier, sets["attributes"], label_key=attribute, top_k=(1,)
            )
            results[f"val_{attribute}"] = accuracy["top1_accuracy"]
        recall = evaluation.retrieval_recall(backbone, sets["captions"], ks=(1,))
        results["val_t2i_r1"] = recall["text_to_image_recall@1"]
        if with_boxes:
            boxes = evaluation.referring_box_iou(backbone, decoder, self.vocabulary,
                                                 sets["referring"])
            results["val_box_iou"] = boxes["mean_iou"]
        return results

    def on_train_begin(self, logs=None):
        if self.path is None or not os.path.exists(self.path):
            return
        with open(self.path, "rb+") as f:  # a row that a kill cut short
            text = f.read()
            if text and not text.endswith(b"\n"):
                f.truncate(text.rfind(b"\n") + 1)

    def on_epoch_end(self, epoch, logs=None):
        start = time.monotonic()
        results = self.evaluate()
        self.seconds.append(time.monotonic() - start)
        if logs is not None:
            logs.update(results)
        if self.path is not None:
            row = {"epoch": epoch + 1, "step": optimizer_step(self.model), **results}
            append_row(self.path, row)

    @staticmethod
    def read(path):
        """The CSV as a dict of columns (`epoch`, `step`, the measures), one row per epoch
        (the last one written), in epoch order."""
        return read_columns(path, "epoch", integers=("step",))
