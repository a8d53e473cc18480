"""The loss terms of the SigLIP 2 recipe, each a layer owning its inputs, weights and loss.

`SigLIP2Trainer` runs the student's image tower once per batch (`StudentPass`) and asks
each term for its losses; a term holds the variables only it trains (the LocCa decoder;
the DINO heads, mask token, centres and EMA teacher of SILC / TIPS), so Keras tracks,
saves and restores them with the trainer.
"""

import dataclasses

import keras
from keras import ops

from keras_siglip2.layers.dino_head import DINOHead
from keras_siglip2.layers.logits import l2_normalize
from keras_siglip2.locca_targets import DECODER_KEYS
from keras_siglip2.losses.captioning import token_cross_entropy
from keras_siglip2.losses.collectives import batch_shards
from keras_siglip2.losses.masked_prediction import masked_prediction_loss, random_patch_mask
from keras_siglip2.losses.self_distillation import self_distillation_loss, updated_center
from keras_siglip2.losses.sigmoid import sharded_sigmoid_loss, sigmoid_loss


@dataclasses.dataclass(frozen=True)
class StudentPass:
    """The student's image pass over a batch, computed once and shared by every term.

    Attributes:
        backbone: the student `SigLIP2Backbone`.
        tokens: (B, N, D) patch embeddings, before the encoder.
        token_mask: (B, N) the valid patches (NaFlex padding is 0).
        token_positions: (B, N, 2) the centre of each token's patch in [0, 1] of its image.
        image: the vision encoder's `encode` outputs (`sequence_output`, `pooled_output`).

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> student = StudentPass.of(toy_backbone(), {"images": keras.ops.zeros((2, 16, 16, 3))})
    >>> tuple(student.tokens.shape), tuple(student.image["pooled_output"].shape)
    ((2, 4, 8), (2, 8))
    """

    backbone: object
    tokens: object
    token_mask: object
    token_positions: object
    image: dict

    @classmethod
    def of(cls, backbone, batch):
        """The pass of `backbone`'s image tower over `batch`'s images."""
        vision = backbone.vision_encoder
        inputs = backbone.image_inputs(batch)
        tokens, token_mask = vision.embed(inputs)
        return cls(backbone, tokens, token_mask, vision.token_positions(inputs),
                   vision.encode(tokens, token_mask))


class LossTerm(keras.layers.Layer):
    """A term (or terms sharing one computation) of the recipe's loss.

    Subclasses set `names` and implement `losses_of(batch, student, training)`, returning
    `{name: float32 scalar}`; the trainer weighs each by `loss_weights[name]`.

    Args:
        loss_weights: `{name: weight}` for this term's names.

    Example:
    >>> from keras_siglip2.models.locca_decoder import LocCaDecoder
    >>> decoder = LocCaDecoder(vocabulary_size=16, sequence_length=4, hidden_dim=8,
    ...                        num_layers=1, num_heads=2, intermediate_dim=16)
    >>> term = LocCaTerm(decoder, image_width=8, loss_weights={"locca_loss": 2.0})
    >>> zero = term.skipped_losses(None)["locca_loss"]
    >>> term.names, dict(term.loss_weights), float(keras.ops.convert_to_numpy(zero))
    (('locca_loss',), {'locca_loss': 2.0}, 0.0)
    """

    names = ()

    def __init__(self, loss_weights, **kwargs):
        super().__init__(**kwargs)
        self.loss_weights = {name: float(loss_weights[name]) for name in self.names}

    def losses_of(self, batch, student, training=False):
        """`{name: unweighted loss}` of `batch`, given the student's `StudentPass`."""
        raise NotImplementedError

    def skipped_losses(self, student):
        """`{name: 0}` with zero gradients for the variables only this term trains."""
        zero = _zero_with_zero_gradients(self.trainable_weights)
        return {name: zero for name in self.names}


@keras.saving.register_keras_serializable(package="keras_siglip2")
def _zero_with_zero_gradients(weights):
    """0, with zero gradients for `weights`: a skipped term's variables still get updates
    (as unused ones do under JAX), on every backend, without the optimizer warning about
    variables that have no gradient."""
    return ops.cast(sum(ops.sum(w) for w in weights), "float32") * 0.0


class SigmoidTerm(LossTerm):
    """`sigmoid_loss`: the pairwise image-text sigmoid loss of the student's embeddings.

    Args:
        loss_weights: `{"sigmoid_loss": weight}`.
        chunk_size: compute the loss `chunk_size` texts at a time (memory O(B·chunk));
            None for the dense loss. A batch split over devices always uses
            `sharded_sigmoid_loss`, chunked by this.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone()
    >>> batch = {"images": keras.ops.zeros((2, 16, 16, 3)),
    ...          "token_ids": keras.ops.ones((2, 4), "int32")}
    >>> term = SigmoidTerm({"sigmoid_loss": 1.0})
    >>> sorted(term.losses_of(batch, StudentPass.of(backbone, batch)))
    ['sigmoid_loss']
    """

    names = ("sigmoid_loss",)

    def __init__(self, loss_weights, chunk_size=None, **kwargs):
        super().__init__(loss_weights, **kwargs)
        self.chunk_size = chunk_size
        self.built = True

    def losses_of(self, batch, student, training=False):
        image_embeddings = l2_normalize(student.image["pooled_output"])
        text_embeddings = student.backbone.encode_text(batch["token_ids"])
        head = student.backbone.logits_head
        if self.chunk_size is None and batch_shards() == 1:
            loss = ops.mean(sigmoid_loss(head(image_embeddings, text_embeddings)))
        else:
            loss = sharded_sigmoid_loss(
                image_embeddings, text_embeddings, head.logit_scale, head.logit_bias,
                self.chunk_size,
            )
        return {"sigmoid_loss": loss}

    def skipped_losses(self, student):
        backbone = student.backbone  # its text tower and logits head train on this term only
        weights = [*backbone.text_encoder.trainable_weights,
                   *backbone.logits_head.trainable_weights]
        return {"sigmoid_loss": _zero_with_zero_gradients(weights)}


class LocCaTerm(LossTerm):
    """`locca_loss`: LocCa captioning, referring expressions and grounded captioning.

    A `LocCaDecoder` cross-attends to the student's patch tokens; the batch holds its
    inputs and targets (`keras_siglip2.locca_targets.DECODER_KEYS`): one example per image
    (B, T), or several, e.g. one per task (B, tasks, T), all read from one tower pass. Each
    key may instead hold a tuple of length groups, consecutive rows of the batch each at its
    own length (`ScenePool.training_batches`'s `locca_length_groups`): the decoder runs on
    each group, and the loss is the mean over the batch's examples as before. A causal
    example's loss does not depend on the padding after it, so cutting padding changes it
    only by rounding.

    Args:
        decoder: a `LocCaDecoder`; built here for images of width `image_width` if unbuilt.
        image_width: the width of the student's patch tokens.
        loss_weights: `{"locca_loss": weight}`.

    Example:
    >>> from keras_siglip2.models.locca_decoder import LocCaDecoder
    >>> decoder = LocCaDecoder(vocabulary_size=16, sequence_length=4, hidden_dim=8,
    ...                        num_layers=1, num_heads=2, intermediate_dim=16)
    >>> term = LocCaTerm(decoder, image_width=8, loss_weights={"locca_loss": 1.0})
    >>> decoder.built, len(term.trainable_weights) == len(decoder.trainable_weights)
    (True, True)
    """

    names = ("locca_loss",)

    def __init__(self, decoder, image_width, loss_weights, **kwargs):
        super().__init__(loss_weights, **kwargs)
        if not decoder.built:
            decoder.build((None, decoder.sequence_length), (None, None, image_width))
        self.decoder = decoder
        self.built = True

    def losses_of(self, batch, student, training=False):
        missing = [k for k in DECODER_KEYS if k not in batch]
        if missing:
            raise ValueError(
                f"The batch lacks {missing}, which the LocCa decoder trains on: "
                "build them with keras_siglip2.locca_targets, or pass decoder=None."
            )
        image = (student.image["sequence_output"], student.token_mask, student.token_positions)
        if not isinstance(batch["decoder_input_ids"], (tuple, list)):
            return {"locca_loss": ops.mean(self._example_losses(batch, image))}
        losses, start = [], 0
        for g, ids in enumerate(batch["decoder_input_ids"]):
            rows = ids.shape[0]
            group = {k: batch[k][g] for k in DECODER_KEYS}
            losses.append(self._example_losses(
                group, [None if x is None else x[start:start + rows] for x in image]))
            start += rows
        if image[0].shape[0] is not None and start != image[0].shape[0]:
            raise ValueError(f"The LocCa length groups hold {start} rows for a batch of "
                             f"{image[0].shape[0]} images: each image needs its row.")
        return {"locca_loss": ops.mean(ops.concatenate(losses))}

    def _example_losses(self, batch, image):
        """Each decoder example's loss, (B,) or (B · tasks,)."""
        decoder_batch = {k: batch[k] for k in DECODER_KEYS}
        shape = tuple(decoder_batch["decoder_input_ids"].shape)
        if len(shape) == 3:  # (B, tasks, T): every task of each image, on one pass of the tower.
            decoder_batch = {k: ops.reshape(v, (-1, *tuple(v.shape)[2:]))
                             for k, v in decoder_batch.items()}
            image = [None if x is None else ops.repeat(x, shape[1], axis=0) for x in image]
        logits = self.decoder(
            decoder_batch["decoder_input_ids"], image[0], image_mask=image[1],
            causal=decoder_batch["decoder_causal"], image_positions=image[2],
        )
        return token_cross_entropy(
            logits, decoder_batch["decoder_target_ids"], decoder_batch["decoder_loss_mask"],
        )


def _clone(layer):
    """A same-architecture copy of `layer` holding a copy of its weights."""
    copy = layer.__class__.from_config(layer.get_config())
    if not copy.built:
        copy.build_from_config(layer.get_build_config())
    copy.set_weights(layer.get_weights())
    return copy


class SelfSupervisedTerms(LossTerm):
    """SILC's `self_distillation_loss` and TIPS's `masked_prediction_loss`, on one teacher pass.

    An EMA teacher of the student's image tower sees the batch's images (the global view).
    SILC: the student sees `local_views`; its global DINO head's outputs on them are
    pulled towards the teacher's on the global view (centring, sharpening). TIPS: the
    student sees `mask_ratio` of its patch tokens replaced by a learned mask token and
    predicts the teacher's per-patch head outputs there. The patch masks come from a seed
    held in a weight, so a resumed run draws the masks an uninterrupted one would.

    Args:
        vision_encoder: the student's image tower, which the teacher starts as a copy of.
        distillation_dim: prototypes of the DINO heads.
        loss_weights: `{"self_distillation_loss": w, "masked_prediction_loss": w}`.
        mask_ratio: fraction of patches the TIPS student sees masked.
        head_hidden_dim, head_bottleneck_dim: DINO head sizes.
        student_temperature, teacher_temperature, center_momentum: DINO's.
        seed: seed of the patch masks.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone()
    >>> terms = SelfSupervisedTerms(
    ...     backbone.vision_encoder, 8, {"self_distillation_loss": 1.0,
    ...                                  "masked_prediction_loss": 0.25},
    ...     head_hidden_dim=16, head_bottleneck_dim=8, seed=0)
    >>> batch = {"images": keras.ops.zeros((2, 16, 16, 3)),
    ...          "local_views": keras.ops.zeros((2, 2, 16, 16, 3))}
    >>> losses = terms.losses_of(batch, StudentPass.of(backbone, batch))
    >>> sorted(losses), len(terms.ema_pairs(backbone.vision_encoder)) > 0
    (['masked_prediction_loss', 'self_distillation_loss'], True)
    """

    names = ("self_distillation_loss", "masked_prediction_loss")

    def __init__(
        self,
        vision_encoder,
        distillation_dim,
        loss_weights,
        mask_ratio=0.5,
        head_hidden_dim=256,
        head_bottleneck_dim=64,
        student_temperature=0.1,
        teacher_temperature=0.04,
        center_momentum=0.9,
        seed=None,
        **kwargs,
    ):
        super().__init__(loss_weights, **kwargs)
        self.distillation_dim = distillation_dim
        self.mask_ratio = mask_ratio
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.center_momentum = center_momentum
        width = vision_encoder.hidden_dim
        head_args = dict(
            out_dim=distillation_dim, hidden_dim=head_hidden_dim,
            bottleneck_dim=head_bottleneck_dim,
        )
        self.global_head = DINOHead(**head_args, name="global_head")
        self.patch_head = DINOHead(**head_args, name="patch_head")
        for head in (self.global_head, self.patch_head):
            head.build((None, width))
        self.teacher = _clone(vision_encoder)
        self.teacher_global_head = _clone(self.global_head)
        self.teacher_patch_head = _clone(self.patch_head)
        for layer in (self.teacher, self.teacher_global_head, self.teacher_patch_head):
            layer.trainable = False
        self.mask_token = self.add_weight(
            shape=(width,), initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="mask_token",
        )
        self.global_center = self.add_weight(
            shape=(distillation_dim,), initializer="zeros", trainable=False,
            name="global_center",
        )
        self.patch_center = self.add_weight(
            shape=(distillation_dim,), initializer="zeros", trainable=False,
            name="patch_center",
        )
        generator = keras.random.SeedGenerator(seed)
        # Checkpoints hold weights, not seed-generator states: keeping the state
        # in a weight makes a resumed run draw the masks an uninterrupted one would.
        generator.state = self.add_weight(
            shape=generator.state.shape, dtype=generator.state.dtype,
            initializer=keras.initializers.Constant(ops.convert_to_numpy(generator.state)),
            trainable=False, name="mask_seed",
        )
        object.__setattr__(self, "_mask_seeds", generator)  # untracked: no duplicate state
        self.teacher_steps = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="teacher_steps"
        )
        self.built = True

    def ema_pairs(self, vision_encoder):
        """(teacher, student) variable pairs, for the student tower `vision_encoder`."""
        pairs = []
        for teacher, student in (
            (self.teacher, vision_encoder),
            (self.teacher_global_head, self.global_head),
            (self.teacher_patch_head, self.patch_head),
        ):
            pairs += list(zip(teacher.weights, student.weights, strict=True))
        return pairs

    def move_teacher(self, vision_encoder, decay):
        """The EMA update that followed the previous train step (none before the first):
        `teacher = decay · teacher + (1 − decay) · student`, in float32."""
        steps = self.teacher_steps  # the optimizer's iterations are not visible here on JAX
        decay = ops.where(ops.greater(steps, 0.0), decay, 1.0)
        steps.assign(steps + 1.0)
        for teacher, student in self.ema_pairs(vision_encoder):
            value = decay * ops.cast(teacher, "float32") + (1.0 - decay) * ops.cast(
                ops.stop_gradient(student), "float32")
            teacher.assign(ops.cast(value, teacher.dtype))

    def losses_of(self, batch, student, training=False):
        if "local_views" not in batch:
            raise ValueError(
                "Self-distillation needs `local_views` in the batch (B, V, ...): make "
                "them with keras_siglip2.preprocessing.LocalViews, or set "
                "distillation_dim=None."
            )
        vision = student.backbone.vision_encoder
        images = student.backbone.image_inputs(batch)
        teacher = self.teacher.encode(*self.teacher.embed(images))
        teacher = keras.tree.map_structure(ops.stop_gradient, teacher)
        teacher_global = self.teacher_global_head(teacher["pooled_output"])[:, None]

        views = batch["local_views"]
        num_views = keras.tree.flatten(views)[0].shape[1]
        flat = keras.tree.map_structure(
            lambda v: ops.reshape(v, (-1, *v.shape[2:])), views
        )
        local = vision.encode(*vision.embed(flat))["pooled_output"]
        student_local = ops.reshape(
            self.global_head(local), (-1, num_views, self.distillation_dim)
        )
        distill = self_distillation_loss(
            student_local, teacher_global, self.global_center,
            self.student_temperature, self.teacher_temperature,
        )

        key_mask = student.token_mask
        batch_size, num_patches = ops.shape(student.tokens)[:2]
        mask = random_patch_mask(
            batch_size, num_patches, self.mask_ratio, self._mask_seeds, valid_mask=key_mask
        )
        masked = vision.encode(*vision.embed(images, mask, self.mask_token))
        teacher_patches = self.teacher_patch_head(teacher["sequence_output"])
        predicted = masked_prediction_loss(
            self.patch_head(masked["sequence_output"]), teacher_patches, mask,
            self.patch_center, self.student_temperature, self.teacher_temperature,
        )
        if training:
            self.global_center.assign(
                updated_center(self.global_center, teacher_global, self.center_momentum)
            )
            self.patch_center.assign(updated_center(
                self.patch_center, teacher_patches, self.center_momentum, mask=key_mask
            ))
        return {"self_distillation_loss": distill, "masked_prediction_loss": predicted}
