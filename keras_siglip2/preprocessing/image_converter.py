"""Fixed-resolution image pipeline of the released SigLIP 2 checkpoints (big_vision demo).

`resize(S)|value_range(-1, 1)`: `tf.image.resize` bilinear without antialias to (S, S) (aspect
ratio not kept), cast back to the input dtype as big_vision's `resize` does (uint8: clipped to
[0, 255] and truncated), then [0, 255] → [-1, 1].
"""

import keras
import keras_hub
import numpy as np

from keras_siglip2 import preset_registry
from keras_siglip2.preprocessing.image_io import load_images, tf_to_rgb


def _preset_image_config(cls, preset, key):
    """The converter settings for `preset`: any handle `SigLIP2Backbone.from_preset` takes."""
    config = preset_registry.image_config(preset)
    if key not in config:
        other = "NaFlexImageConverter" if key == "image_size" else "SigLIP2ImageConverter"
        raise ValueError(
            f"{preset!r} uses the other image pipeline: use {other}.from_preset({preset!r})."
        )
    return config


def _call_pipeline(layer, inputs):
    """Runs `layer`'s TensorFlow pipeline eagerly (numpy out) or inside tf.data (tf out)."""
    import tensorflow as tf

    with tf.device("cpu"):
        if not tf.executing_eagerly():
            if not isinstance(inputs, tf.RaggedTensor):
                inputs = tf.convert_to_tensor(inputs)
                if inputs.shape.rank != 4 or layer._graph_takes_batches:
                    return layer._one_graph(inputs)
            return tf.map_fn(
                layer._one_graph, inputs, fn_output_signature=layer._output_signature()
            )
        images, batched = load_images(inputs)
        outs = [
            keras.tree.map_structure(lambda t: t.numpy(), layer._one_eager(tf.constant(x)))
            for x in images
        ]
        if not batched:
            return outs[0]
        return keras.tree.map_structure(lambda *xs: np.stack(xs), *outs)


def _tf_fixed(image, size):
    import tensorflow as tf

    dtype = image.dtype
    x = tf.image.resize(image, size, method="bilinear", antialias=False)
    x = tf.cast(tf.clip_by_value(x, dtype.min, dtype.max), dtype)  # uint8: truncates.
    return tf.cast(x, tf.float32) / 255.0 * 2.0 - 1.0


@keras.saving.register_keras_serializable(package="keras_siglip2")
class SigLIP2ImageConverter(keras_hub.layers.ImageConverter):
    """Images → (image_size, image_size, 3) float32 in [-1, 1], as big_vision's SigLIP 2 demo.

    `tf.image.resize` bilinear, no antialias, to a square (the aspect ratio is not kept); uint8
    images are cast back to uint8 after resizing (truncating), as big_vision's `resize` op
    does; then values go from [0, 255] to [-1, 1]. (keras-hub's and transformers' SigLIP
    converters resize differently; use this one for the released checkpoints' pixels.)

    Input: one image (numpy/tensor (H, W[, C]), PIL image, file path; see `load_image`) or a
    batch (a list of images of any sizes, or a (B, H, W, C) array). Called eagerly it returns
    a numpy array, (S, S, 3) or (B, S, S, 3), on every Keras backend. Inside `tf.data`
    (`dataset.map(converter)`) it takes (H, W, C) or (B, H, W, C) tf tensors of any size
    and returns tf tensors of static shape.

    Input values follow one set of rules, eagerly and inside `tf.data` alike (the same as
    `NaFlexImageConverter`; details in `keras_siglip2.preprocessing.image_io`): uint8 as it
    is; uint16 and 16-bit PIL images rescaled from [0, 65535]; other integers and floats must
    lie in [0, 255] (floats finite), else a ValueError saying what was found (inside
    `tf.data`, an InvalidArgumentError when the pipeline runs); alpha composited onto white;
    PIL modes I and F rejected (no fixed range: convert them yourself). Files are decoded in
    full (truncated or corrupt files: a ValueError naming the file) under a pixel limit
    checked from the header (`image_io.MAX_IMAGE_PIXELS`, PIL's default, settable).

    Args:
        image_size: int, or (height, width), the output size.

    Example:
    >>> converter = SigLIP2ImageConverter(image_size=224)
    >>> tuple(converter(np.full((300, 500, 3), 255, "uint8")).shape)
    (224, 224, 3)
    >>> float(converter([np.zeros((7, 9), "uint8")]).min())
    -1.0
    """

    _graph_takes_batches = True

    def __init__(self, image_size, **kwargs):
        size = (image_size,) * 2 if np.ndim(image_size) == 0 else tuple(image_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(
                f"image_size must be an int or (height, width) >= 1, got {image_size}."
            )
        super().__init__(
            image_size=tuple(int(s) for s in size), scale=1 / 127.5, offset=-1.0,
            crop_to_aspect_ratio=False, interpolation="bilinear", antialias=False, **kwargs,
        )

    def _one_eager(self, image):
        return _tf_fixed(image, self.image_size)

    def _one_graph(self, image):
        import tensorflow as tf

        if isinstance(image, tf.RaggedTensor):
            image = image.to_tensor()
        return _tf_fixed(tf_to_rgb(image), self.image_size)

    def _output_signature(self):
        import tensorflow as tf

        return tf.TensorSpec((*self.image_size, 3), tf.float32)

    def call(self, inputs):
        return _call_pipeline(self, inputs)

    def get_config(self):
        return {**keras.layers.Layer.get_config(self), "image_size": self.image_size}

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """The converter for a checkpoint: a preset name (e.g. `"siglip2_base_patch16_224"`),
        or any handle `SigLIP2Backbone.from_preset` takes (read without loading weights).

        `kwargs` override the preset's settings (e.g. `image_size=256`).
        """
        return cls(**{**_preset_image_config(cls, preset, "image_size"), **kwargs})
