"""`SigLIP2Backbone`: the image and text towers joined by the sigmoid logit head."""

import functools
import math

import keras
import keras_hub

from keras_siglip2 import preset_registry
from keras_siglip2.layers.logits import SigmoidLogits, l2_normalize
from keras_siglip2.models.compiled import CompiledCall, host_arrays, runs_traced
from keras_siglip2.models.naflex_vision_encoder import NAFLEX_KEYS, SigLIP2NaFlexVisionEncoder


def _fresh_inputs(model):
    """New `keras.Input`s shaped like `model`'s inputs, in the same structure."""
    return keras.tree.map_structure(
        lambda x: keras.Input(x.shape[1:], dtype=x.dtype, name=x.name), model.input
    )


def _image_embeddings(vision_encoder, images, return_tokens=False):
    outputs = vision_encoder(images)
    embeddings = l2_normalize(outputs["pooled_output"])
    if return_tokens:
        return {"embeddings": embeddings, "tokens": outputs["sequence_output"]}
    return embeddings


def _text_embeddings(text_encoder, token_ids):
    return l2_normalize(text_encoder(token_ids)["pooled_output"])


@keras.saving.register_keras_serializable(package="keras_siglip2")
class SigLIP2Backbone(keras_hub.models.Backbone):
    """SigLIP 2 two-tower model (fixed-resolution or NaFlex image tower).

    Inputs: a dict with `token_ids` (B, L) and either `images`
    (B, H, W, 3) for a fixed-resolution tower, or `patches`, `patch_coords`,
    `patch_mask`, `spatial_shapes` for a NaFlex tower.

    Outputs: a dict with `image_embeddings` (B, E) and `text_embeddings`
    (B, E), both L2-normalised, and `logits` (B, B) = exp(t) · cos + b
    (image i against text j).

    Args:
        vision_encoder: a `SigLIP2VisionEncoder` or `SigLIP2NaFlexVisionEncoder`.
        text_encoder: a `SigLIP2TextEncoder`.
        logit_scale_init: initial log-temperature t.
        logit_bias_init: initial bias b.

    Example:
    >>> from keras_siglip2 import SigLIP2VisionEncoder, SigLIP2TextEncoder
    >>> backbone = SigLIP2Backbone(
    ...     SigLIP2VisionEncoder(image_size=32, patch_size=16, hidden_dim=8,
    ...                          num_layers=1, num_heads=2, intermediate_dim=16),
    ...     SigLIP2TextEncoder(vocabulary_size=32, sequence_length=8, hidden_dim=8,
    ...                        num_layers=1, num_heads=2, intermediate_dim=16,
    ...                        embedding_dim=8))
    >>> out = backbone({"images": keras.ops.zeros((2, 32, 32, 3)),
    ...                 "token_ids": keras.ops.ones((2, 8), "int32")})
    >>> tuple(out["logits"].shape)
    (2, 2)
    """

    def __init__(
        self,
        vision_encoder,
        text_encoder,
        logit_scale_init=math.log(10.0),
        logit_bias_init=-10.0,
        dtype=None,
        **kwargs,
    ):
        image_dim = vision_encoder.output["pooled_output"].shape[-1]
        text_dim = text_encoder.output["pooled_output"].shape[-1]
        if image_dim != text_dim:
            raise ValueError(
                f"The image embedding width ({image_dim}) differs from the text "
                f"embedding width ({text_dim}): set the text encoder's embedding_dim "
                f"to {image_dim}."
            )
        self.vision_encoder = vision_encoder
        self.text_encoder = text_encoder
        self.logits_head = SigmoidLogits(logit_scale_init, logit_bias_init, name="logits")

        tower_inputs = _fresh_inputs(vision_encoder)
        if not isinstance(tower_inputs, dict):
            tower_inputs = {"images": tower_inputs}
        token_ids = _fresh_inputs(text_encoder)
        image_embeddings = l2_normalize(
            vision_encoder(self.image_inputs(tower_inputs))["pooled_output"]
        )
        text_embeddings = l2_normalize(text_encoder(token_ids)["pooled_output"])
        logits = self.logits_head(image_embeddings, text_embeddings)
        super().__init__(
            inputs={**tower_inputs, "token_ids": token_ids},
            outputs={
                "image_embeddings": image_embeddings,
                "text_embeddings": text_embeddings,
                "logits": logits,
            },
            dtype=dtype,
            **kwargs,
        )
        self.logit_scale_init = logit_scale_init
        self.logit_bias_init = logit_bias_init

    @classmethod
    def from_preset(cls, preset, source=None, load_weights=True, dtype=None, remat=None):
        """Loads a released or saved SigLIP 2 checkpoint.

        `preset` is a preset name (see `keras_siglip2.presets.PRESETS`),
        `hf://owner/name`, `kaggle://...`, a local directory in transformers',
        keras-hub's or our own format, or a big_vision `.npz` path or URL.
        `source` ("big_vision", "huggingface", "keras_hub") picks which
        published copy a preset name loads. With `load_weights=False`, a preset
        name gives a randomly initialised model of that architecture.

        For every source, `dtype` is the dtype policy of the backbone and both
        towers (e.g. `"bfloat16"`; default Keras's, or as saved by `save_to_preset`)
        and `remat` the towers' option (default False, or as saved).

        Example:
        >>> backbone = SigLIP2Backbone.from_preset(
        ...     "siglip2_base_patch16_224", dtype="bfloat16", remat=True)  # doctest: +SKIP
        >>> backbone.text_encoder.dtype_policy.name  # doctest: +SKIP
        'bfloat16'
        """
        return preset_registry.load_backbone(
            preset, source=source, load_weights=load_weights, dtype=dtype, remat=remat
        )

    @property
    def is_naflex(self):
        return isinstance(self.vision_encoder, SigLIP2NaFlexVisionEncoder)

    def image_inputs(self, batch):
        """The image tower's input in `batch`: `images`, or the dict of the NaFlex keys.

        Example:
        >>> from keras_siglip2.testing import toy_backbone
        >>> backbone = toy_backbone()
        >>> batch = {"images": keras.ops.zeros((2, 16, 16, 3)), "label": [0, 1]}
        >>> tuple(backbone.image_inputs(batch).shape)
        (2, 16, 16, 3)
        """
        keys = NAFLEX_KEYS if self.is_naflex else ("images",)
        missing = [key for key in keys if key not in batch]
        if missing:
            tower, converter = (("a NaFlex", "NaFlexImageConverter") if self.is_naflex
                                else ("a fixed-resolution", "SigLIP2ImageConverter"))
            raise KeyError(
                f"The batch has no {missing}, which {tower} image tower takes; it has "
                f"{sorted(batch)}. Map the images through {converter}."
            )
        return {key: batch[key] for key in keys} if self.is_naflex else batch["images"]

    def encode_images(self, images, compiled=True, return_tokens=False):
        """L2-normalised float32 image embeddings (B, E).

        Args:
            images: a (B, H, W, 3) array in [-1, 1] for a fixed-resolution tower; for
                NaFlex, the dict of `patches`, `patch_coords`, `patch_mask` and
                `spatial_shapes` (`NaFlexImageConverter`'s output; other keys are ignored).
            compiled: True runs the tower as one compiled program, made once per input
                shape (`jax.jit` on JAX, `tf.function` on TensorFlow, a `torch.export`
                program without autograd on PyTorch), and returns numpy. "max" also
                compiles the PyTorch program with `torch.compile`: faster calls after a
                first call of tens of seconds per input shape (elsewhere, as True). False
                runs the layers op by op and returns a backend tensor (for debugging, or to
                take gradients). Symbolic or traced inputs, and calls from inside another
                layer's call (a training step), always run the layers directly, as False
                does.
            return_tokens: also return the tower's un-pooled `sequence_output` (B, N, D):
                a dict with `embeddings` and `tokens`.

        Example:
        >>> from keras_siglip2.testing import toy_backbone
        >>> backbone = toy_backbone()
        >>> images = np.zeros((2, 16, 16, 3), "float32")
        >>> embeddings = backbone.encode_images(images)
        >>> type(embeddings).__name__, embeddings.shape
        ('ndarray', (2, 8))
        >>> eager = backbone.encode_images(images, compiled=False)
        >>> bool(np.allclose(keras.ops.convert_to_numpy(eager), embeddings, atol=1e-5))
        True
        >>> backbone.encode_images(images, return_tokens=True)["tokens"].shape
        (2, 4, 8)
        """
        if self.is_naflex and not isinstance(images, dict):
            raise ValueError(
                "This backbone has a NaFlex image tower: pass the dict that "
                "`NaFlexImageConverter` returns (patches, patch_coords, "
                "patch_mask, spatial_shapes), not an image array."
            )
        if isinstance(images, dict):
            images = self.image_inputs(images)
        encode = functools.partial(
            _image_embeddings, self.vision_encoder, return_tokens=return_tokens
        )
        key = "image_tokens" if return_tokens else "images"
        return self._run(key, encode, self.vision_encoder, images, compiled)

    def encode_text(self, token_ids, compiled=True):
        """L2-normalised float32 text embeddings (B, E) of `token_ids` (B, L).

        `compiled` as in `encode_images`: True (default) or "max" return numpy from one
        compiled program, False a backend tensor from the layers run op by op.

        Example:
        >>> from keras_siglip2.testing import toy_backbone
        >>> backbone = toy_backbone()
        >>> backbone.encode_text(np.ones((3, 4), "int32")).shape
        (3, 8)
        """
        encode = functools.partial(_text_embeddings, self.text_encoder)
        return self._run("text", encode, self.text_encoder, token_ids, compiled)

    def _run(self, key, encode, tower, inputs, compiled):
        """`encode(inputs)`, through the cached `CompiledCall` `key` when compiled applies."""
        if compiled not in (True, False, "max"):
            raise ValueError(f'compiled is True, False or "max"; got {compiled!r}.')
        if not compiled or runs_traced(inputs):
            return encode(inputs)
        # In the instance dict, out of Keras's tracking: not a layer of the backbone, so not
        # in its weights, config or saved presets.
        calls = vars(self).setdefault("_compiled_calls", {})
        if (key, compiled) not in calls:
            calls[key, compiled] = CompiledCall(
                encode, [tower], name=f"encode_{key}",
                torch_program="compile" if compiled == "max" else "export",
            )
        return calls[key, compiled].predict_on_batch(host_arrays(inputs))

    def get_config(self):
        return {
            **super().get_config(),
            "vision_encoder": keras.layers.serialize(self.vision_encoder),
            "text_encoder": keras.layers.serialize(self.text_encoder),
            "logit_scale_init": self.logit_scale_init,
            "logit_bias_init": self.logit_bias_init,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("vision_encoder", "text_encoder"):
            if isinstance(config[key], dict):
                config[key] = keras.layers.deserialize(config[key])
        return super().from_config(config)
