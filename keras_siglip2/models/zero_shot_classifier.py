"""`SigLIP2ZeroShotClassifier`: raw images → probabilities of classes named in text."""

import os

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_siglip2._compat import TASK_CONFIG_FILE, TASK_WEIGHTS_FILE
from keras_siglip2.converters.file_errors import read_json
from keras_siglip2.evaluation.zero_shot import zero_shot_classifier
from keras_siglip2.models.backbone import SigLIP2Backbone
from keras_siglip2.models.preprocessor import IMAGES, SigLIP2Preprocessor, is_saved_preset

DEFAULT_TEMPLATES = ("a photo of a {}.",)


def _embedding_dim(backbone):
    return backbone.vision_encoder.output["pooled_output"].shape[-1]


class _ClassEmbeddings(keras.layers.Layer):
    """Holds the (C, E) class embeddings (a float32 weight); returns them whatever its input.

    Called on the image embeddings only to sit in the functional graph after them.
    """

    def __init__(self, num_classes, embedding_dim, **kwargs):
        super().__init__(dtype="float32", trainable=False, **kwargs)
        self.embeddings = self.add_weight(
            shape=(num_classes, embedding_dim), initializer="zeros", trainable=False,
            name="embeddings",
        )
        self.built = True

    def call(self, image_embeddings):
        return ops.convert_to_tensor(self.embeddings)

    def compute_output_spec(self, image_embeddings):
        return keras.KerasTensor(self.embeddings.shape, dtype="float32")


@keras.saving.register_keras_serializable(package="keras_siglip2")
class SigLIP2ZeroShotClassifier(keras_hub.models.Task):
    """Zero-shot image classifier: class names and prompt templates in, probabilities out.

    Each class embedding is the prompt ensemble `zero_shot_classifier` computes (the
    L2-normalised mean over `templates` of the text embeddings of "template(class name)"),
    computed once when the classifier is built and kept as a non-trainable weight (saved with
    the task). `predict(images)` preprocesses raw images with the preprocessor's image
    converter and returns (B, C) float32 probabilities

        p[i, c] = sigmoid(exp(t) · cos(image_i, class_c) + b)

    with the backbone's learned temperature t and bias b: SigLIP's own sigmoid, one
    independent yes/no per class, so a row does not sum to 1 (an image may match several
    classes or none). Rank classes by it (argmax) as by a softmax; do not read it as a
    distribution over the classes.

    `predict` takes a (B, H, W, C) array of raw images (uint8, or values in [0, 255]; see
    `SigLIP2ImageConverter`), a list of images of any sizes / PIL images / file paths
    (converted eagerly), or a `tf.data.Dataset` of such batches. Calling the model directly
    (`classifier(inputs)`) takes the preprocessed image inputs (`preprocessor({"images": x})`).

    Args:
        backbone: a `SigLIP2Backbone` (fixed-resolution or NaFlex).
        preprocessor: a `SigLIP2Preprocessor`; its tokenizer encodes the prompts. None
            (then give `class_embeddings`) makes `predict` take preprocessed inputs.
        class_names: the C class names.
        templates: prompt templates, each with one `{}` for the class name.
        class_embeddings: optional (C, E) embeddings to use instead of computing them.

    Examples:
    >>> import tempfile
    >>> from keras_siglip2.testing import save_tiny_random_checkpoint
    >>> path = save_tiny_random_checkpoint(tempfile.mkdtemp())  # a stand-in checkpoint
    >>> classifier = SigLIP2ZeroShotClassifier.from_preset(
    ...     path, class_names=["cube", "ball", "tree"], templates=["a {}.", "a photo of a {}."])
    >>> probabilities = classifier.predict(np.zeros((4, 90, 120, 3), "uint8"), verbose=0)
    >>> probabilities.shape, probabilities.dtype.name
    ((4, 3), 'float32')
    >>> saved = tempfile.mkdtemp()
    >>> classifier.save_to_preset(saved)
    >>> restored = SigLIP2ZeroShotClassifier.from_preset(saved)
    >>> restored.class_names
    ['cube', 'ball', 'tree']
    >>> np.allclose(restored.predict(np.zeros((4, 90, 120, 3), "uint8"), verbose=0),
    ...             probabilities, atol=1e-6)
    True
    """

    backbone_cls = SigLIP2Backbone
    preprocessor_cls = SigLIP2Preprocessor

    def __init__(self, backbone, preprocessor, class_names, templates=DEFAULT_TEMPLATES,
                 class_embeddings=None, **kwargs):
        class_names, templates = [str(n) for n in class_names], list(templates)
        if class_embeddings is None:
            if preprocessor is None:
                raise ValueError(
                    "Without a preprocessor (whose tokenizer encodes the prompts), give the "
                    "`class_embeddings` (e.g. from `zero_shot_classifier`)."
                )
            if preprocessor.sequence_length != backbone.text_encoder.sequence_length:
                raise ValueError(
                    f"The preprocessor makes {preprocessor.sequence_length} tokens; the text "
                    f"tower takes {backbone.text_encoder.sequence_length}: set the "
                    "preprocessor's `sequence_length` to the tower's."
                )
            class_embeddings = zero_shot_classifier(
                backbone, preprocessor.tokenizer, class_names, templates
            )
        class_embeddings = np.asarray(keras.ops.convert_to_numpy(class_embeddings), "float32")
        expected = (len(class_names), _embedding_dim(backbone))
        if class_embeddings.shape != expected:
            raise ValueError(
                f"`class_embeddings` must have shape {expected} (classes, embedding width); "
                f"got {class_embeddings.shape}."
            )

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.class_embeddings_layer = _ClassEmbeddings(*expected, name="class_embeddings")
        self.class_embeddings_layer.embeddings.assign(class_embeddings)

        # === Functional Model ===
        keys = sorted(backbone.input.keys() - {"token_ids"})
        inputs = {key: backbone.input[key] for key in keys}
        image_embeddings = backbone.encode_images(inputs)
        class_embeddings = self.class_embeddings_layer(image_embeddings)
        logits = backbone.logits_head(image_embeddings, class_embeddings)
        super().__init__(inputs=inputs, outputs=ops.sigmoid(logits), **kwargs)

        # === Config ===
        self.class_names = class_names
        self.templates = templates

    @property
    def class_embeddings(self):
        """The (C, E) float32 class embeddings, as numpy."""
        return keras.ops.convert_to_numpy(self.class_embeddings_layer.embeddings)

    def preprocess_samples(self, x, y=None, sample_weight=None):
        if self.preprocessor is not None and not isinstance(x, dict):
            x = {IMAGES: x}
        return super().preprocess_samples(x, y=y, sample_weight=sample_weight)

    def predict(self, x=None, batch_size=None, **kwargs):
        if self.preprocessor is not None and isinstance(x, (list, tuple)):
            # Images of any sizes, PIL images, paths: one eager conversion, then the model.
            inputs = self.preprocessor({IMAGES: list(x)})
            return keras.Model.predict(self, inputs, batch_size=batch_size, **kwargs)
        rank = len(getattr(x, "shape", (0,) * 4))
        if self.preprocessor is not None and rank != 4:
            raise ValueError(
                f"predict takes a batch of images, (B, H, W, C); got shape {tuple(x.shape)}. "
                "Add the batch axis for one image (`images[None]`), and a channel axis to "
                "grey images (`images[..., None]`)."
            )
        return super().predict(x, batch_size=batch_size, **kwargs)

    def get_config(self):
        return {
            **super().get_config(), "class_names": self.class_names, "templates": self.templates,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "preprocessor"):
            if isinstance(config.get(key), dict):
                config[key] = keras.layers.deserialize(config[key])
        if "class_embeddings" not in config:
            # They are weights, restored by `load_weights` / `from_preset` as the backbone's.
            shape = (len(config["class_names"]), _embedding_dim(config["backbone"]))
            config["class_embeddings"] = np.zeros(shape, "float32")
        return cls(**config)

    @classmethod
    def from_preset(cls, preset, class_names=None, templates=None, source=None,
                    load_weights=True, dtype=None, **kwargs):
        """A classifier from a saved one, or from any checkpoint and class names.

        A directory written by `save_to_preset` loads as saved (class embeddings included,
        not recomputed). Any handle `SigLIP2Backbone.from_preset` takes (a preset name,
        `hf://`, a saved backbone, ...) with `class_names` (and `templates`, default
        `DEFAULT_TEMPLATES`) builds one; class names or templates other than a saved
        classifier's recompute its embeddings. `source`, `load_weights` and `dtype` are as
        for `SigLIP2Backbone.from_preset`; `kwargs` go to the constructor.
        """
        local = os.path.expanduser(os.fspath(preset))
        saved = None
        if os.path.isdir(local) and is_saved_preset(local, TASK_CONFIG_FILE, cls):
            saved = read_json(os.path.join(local, TASK_CONFIG_FILE))["config"]
        if class_names is None:
            if saved is None:
                raise ValueError(
                    f"'{preset}' holds no saved {cls.__name__}: pass `class_names` (and "
                    "`templates`) to build one from its checkpoint."
                )
            class_names = saved["class_names"]
        if templates is None:
            templates = saved["templates"] if saved is not None else DEFAULT_TEMPLATES
        class_names, templates = [str(n) for n in class_names], list(templates)
        backbone = SigLIP2Backbone.from_preset(
            preset, source=source, load_weights=load_weights, dtype=dtype
        )
        if "preprocessor" not in kwargs:
            kwargs["preprocessor"] = SigLIP2Preprocessor.from_preset(preset, source=source)
        weights = os.path.join(local, TASK_WEIGHTS_FILE)
        if (
            saved is not None and load_weights and os.path.isfile(weights)
            and (class_names, templates) == (saved["class_names"], saved["templates"])
        ):
            shape = (len(class_names), _embedding_dim(backbone))
            task = cls(backbone, class_names=class_names, templates=templates,
                       class_embeddings=np.zeros(shape, "float32"), **kwargs)
            task.load_task_weights(weights)
            return task
        return cls(backbone, class_names=class_names, templates=templates, **kwargs)
