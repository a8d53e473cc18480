"""The SigLIP logit head: learned temperature and bias on cosine similarities."""

import math

import keras
from keras import ops


def l2_normalize(x):
    """x / (‖x‖ + 1e-8) along the last axis, in float32 (as big_vision)."""
    x = ops.cast(x, "float32")
    return x / (ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True)) + 1e-8)


@keras.saving.register_keras_serializable(package="keras_siglip2")
class SigmoidLogits(keras.layers.Layer):
    """logits[i, j] = exp(t) · ⟨image_i, text_j⟩ + b, always in float32.

    Args:
        logit_scale_init: initial log-temperature `t` (SigLIP: log 10).
        logit_bias_init: initial bias `b` (SigLIP: -10).

    Example:
    >>> head = SigmoidLogits()
    >>> z = l2_normalize(keras.ops.ones((2, 4)))
    >>> keras.ops.convert_to_numpy(head(z, z)).round(3).tolist()
    [[0.0, 0.0], [0.0, 0.0]]
    """

    def __init__(self, logit_scale_init=math.log(10.0), logit_bias_init=-10.0, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.logit_scale_init = logit_scale_init
        self.logit_bias_init = logit_bias_init

    def build(self, image_embeddings_shape=None, text_embeddings_shape=None):
        self.logit_scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.logit_scale_init),
            name="logit_scale",
        )
        self.logit_bias = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.logit_bias_init),
            name="logit_bias",
        )

    def call(self, image_embeddings, text_embeddings):
        cosine = ops.matmul(
            ops.cast(image_embeddings, "float32"),
            ops.transpose(ops.cast(text_embeddings, "float32")),
        )
        return cosine * ops.exp(self.logit_scale) + self.logit_bias

    def compute_output_shape(self, image_embeddings_shape, text_embeddings_shape):
        return (image_embeddings_shape[0], text_embeddings_shape[0])

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return {
            **config,
            "logit_scale_init": self.logit_scale_init,
            "logit_bias_init": self.logit_bias_init,
        }
