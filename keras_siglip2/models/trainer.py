"""`SigLIP2Trainer`: the SigLIP 2 training recipe as one `keras.Model` for `fit`."""

import keras
from keras import ops

from keras_siglip2.curation import gather_batch, learnability_scores, select_learnable
from keras_siglip2.layers.dino_head import DINOHead
from keras_siglip2.layers.logits import l2_normalize
from keras_siglip2.locca_targets import DECODER_KEYS
from keras_siglip2.losses.captioning import token_cross_entropy
from keras_siglip2.losses.masked_prediction import masked_prediction_loss, random_patch_mask
from keras_siglip2.losses.self_distillation import self_distillation_loss, updated_center
from keras_siglip2.losses.collectives import batch_shards, scale_for_replicas
from keras_siglip2.losses.sigmoid import sharded_sigmoid_loss, sigmoid_loss

TERMS = ("sigmoid_loss", "locca_loss", "self_distillation_loss", "masked_prediction_loss")


def _clone(layer):
    """A same-architecture copy of `layer` holding a copy of its weights."""
    copy = layer.__class__.from_config(layer.get_config())
    if not copy.built:
        copy.build_from_config(layer.get_build_config())
    copy.set_weights(layer.get_weights())
    return copy


@keras.saving.register_keras_serializable(package="keras_siglip2")
def _zero_with_zero_gradients(weights):
    """0, with zero gradients for `weights`: a skipped term's variables still get updates
    (as unused ones do under JAX), on every backend, without the optimizer warning about
    variables that have no gradient."""
    return ops.cast(sum(ops.sum(w) for w in weights), "float32") * 0.0


class SigLIP2Trainer(keras.Model):
    """SigLIP 2 pretraining / fine-tuning with `fit`: every loss term of the recipe.

    The loss is Σ_k weight_k · gate_k · term_k over the terms
    - `sigmoid_loss`: the pairwise image-text sigmoid loss (always on);
    - `locca_loss`: LocCa captioning / referring expressions / grounded
      captioning from a `LocCaDecoder` cross-attending to the patch tokens;
    - `self_distillation_loss` (SILC): an EMA teacher of the image tower sees
      the batch's images (the global view); the student sees `local_views`;
      DINO heads, centring and sharpening;
    - `masked_prediction_loss` (TIPS): the student sees `mask_ratio` of its
      patch tokens replaced by a learned mask token and predicts the
      teacher's per-patch head outputs there.
    `weight_k` are constants; the gates are variables that callbacks flip
    (`AuxiliaryLossSchedule`) without recompiling. With `ema_decay`, the teacher
    moves inside the compiled train step: each step first applies the previous
    step's update, `teacher = d · teacher + (1 − d) · student` (no per-step host
    work, and a resumed run applies the update its backup was written before);
    without it, the `EMATeacher` callback moves it through `ema_pairs`. Each
    term is logged in `fit`'s history under its name, as gate_k · term_k (0
    while a term is off). Terms in `skipped_terms` (a set of names, which
    `AuxiliaryLossSchedule` keeps equal to the gated-off ones) are not computed
    at all: changing it needs
    `make_train_function(force=True)`, one retrace.

    With a `reference` backbone (ACID active curation), each incoming batch is
    a super-batch from which the `curation_fraction` most learnable examples
    (student loss − reference loss) are kept for the update.

    Inputs (a dict; `fit(dataset)` without labels): the backbone's inputs
    (`images` or the NaFlex keys, and `token_ids`), plus `decoder_input_ids`,
    `decoder_target_ids`, `decoder_loss_mask`, `decoder_causal` when a decoder
    is given (see `keras_siglip2.locca_targets`), plus `local_views` when
    self-distillation is on: (B, V, H, W, 3), or for NaFlex a dict of the
    NaFlex keys with a leading (B, V).

    Args:
        backbone: a `SigLIP2Backbone` (the student).
        decoder: a `LocCaDecoder`, or None for no LocCa term.
        distillation_dim: prototypes of the DINO heads; None turns SILC and
            TIPS off (no teacher is built).
        loss_weights: dict of term weights; defaults 1, 1, 1, 0.25.
        mask_ratio: fraction of patches the TIPS student sees masked.
        head_hidden_dim, head_bottleneck_dim: DINO head sizes.
        student_temperature, teacher_temperature, center_momentum: DINO's.
        reference: a frozen `SigLIP2Backbone` scoring learnability (ACID).
        curation_fraction: fraction of each super-batch kept.
        ema_decay: the teacher's EMA decay d in [0, 1], updated inside the train
            step; None leaves the teacher to the `EMATeacher` callback.
        loss_chunk_size: compute the sigmoid loss `chunk` texts at a time
            (memory O(B·chunk)); None for the dense loss. A batch split over
            devices (`keras.distribution` on JAX, `tf.distribute` on
            TensorFlow) always uses `sharded_sigmoid_loss`, chunked by this.
        seed: seed of the patch masks.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone()
    >>> trainer = SigLIP2Trainer(backbone)
    >>> trainer.compile(optimizer="adam")
    >>> data = {"images": keras.ops.zeros((4, 16, 16, 3)),
    ...         "token_ids": keras.ops.ones((4, 4), "int32")}
    >>> history = trainer.fit(data, batch_size=4, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['loss', 'sigmoid_loss']
    """

    def __init__(
        self,
        backbone,
        decoder=None,
        distillation_dim=None,
        loss_weights=None,
        mask_ratio=0.5,
        head_hidden_dim=256,
        head_bottleneck_dim=64,
        student_temperature=0.1,
        teacher_temperature=0.04,
        center_momentum=0.9,
        reference=None,
        curation_fraction=0.5,
        loss_chunk_size=None,
        seed=None,
        ema_decay=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.decoder = decoder
        self.distillation_dim = distillation_dim
        self.mask_ratio = mask_ratio
        self.head_hidden_dim = head_hidden_dim
        self.head_bottleneck_dim = head_bottleneck_dim
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.center_momentum = center_momentum
        self.reference = reference
        self.curation_fraction = curation_fraction
        self.loss_chunk_size = loss_chunk_size
        self.seed = seed
        if ema_decay is not None and not 0.0 <= float(ema_decay) <= 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1] (or be None); got {ema_decay!r}.")
        self.ema_decay = None if ema_decay is None else float(ema_decay)

        if decoder is not None and not decoder.built:
            decoder.build(
                (None, decoder.sequence_length),
                (None, None, backbone.vision_encoder.hidden_dim),
            )
        self.terms = ["sigmoid_loss"]
        if decoder is not None:
            self.terms.append("locca_loss")
        if distillation_dim is not None:
            self.terms += ["self_distillation_loss", "masked_prediction_loss"]
        defaults = {"sigmoid_loss": 1.0, "locca_loss": 1.0, "self_distillation_loss": 1.0,
                    "masked_prediction_loss": 0.25}
        unknown = set(loss_weights or {}) - set(self.terms)
        if unknown:
            raise ValueError(
                f"loss_weights names {sorted(unknown)}, which this trainer does not "
                f"compute; its terms are {self.terms} (a decoder enables locca_loss, "
                "distillation_dim the self-distillation and masked-prediction terms)."
            )
        self.loss_weights = {t: float((loss_weights or {}).get(t, defaults[t])) for t in self.terms}
        self.term_gates = {
            t: self.add_weight(shape=(), initializer="ones", trainable=False, name=f"{t}_gate")
            for t in self.terms
        }
        self.term_trackers = {t: keras.metrics.Mean(name=t) for t in self.terms}
        # Terms left out of the compiled step (logged as 0): AuxiliaryLossSchedule sets this
        # while their gates are off, so the teacher and masked passes cost nothing then.
        self.skipped_terms = frozenset()

        if distillation_dim is not None:
            vision = backbone.vision_encoder
            width = vision.hidden_dim
            head_args = dict(
                out_dim=distillation_dim, hidden_dim=head_hidden_dim,
                bottleneck_dim=head_bottleneck_dim,
            )
            self.global_head = DINOHead(**head_args, name="global_head")
            self.patch_head = DINOHead(**head_args, name="patch_head")
            for head in (self.global_head, self.patch_head):
                head.build((None, width))
            self.teacher = _clone(vision)
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
        if reference is not None:
            reference.trainable = False
        # Every variable exists by now (e.g. BackupAndRestore on TF needs a built model).
        self.built = True

    @property
    def ema_pairs(self):
        """(teacher, student) variable pairs that `EMATeacher` updates."""
        if self.distillation_dim is None:
            return []
        pairs = []
        for teacher, student in (
            (self.teacher, self.backbone.vision_encoder),
            (self.teacher_global_head, self.global_head),
            (self.teacher_patch_head, self.patch_head),
        ):
            pairs += list(zip(teacher.weights, student.weights, strict=True))
        return pairs

    def zero_grad(self, set_to_none=True):
        """PyTorch backend: clears the gradient of every trainable variable before a step.

        `torch.nn.Module.zero_grad` reaches registered parameters only, and the variables of
        keras-hub-style towers (keras-hub's own `SigLIPVisionEncoder` too, Keras 3.15 /
        keras-hub 0.32) are not registered: without this their gradients would add up over
        the steps of `fit`, and a resumed run would differ from an uninterrupted one.
        """
        super().zero_grad(set_to_none)
        for variable in self.trainable_variables:
            variable.value.grad = None

    def _curate(self, x):
        """Keeps the most learnable examples of the super-batch `x` (ACID)."""
        backbone, reference = self.backbone, self.reference
        student_logits = ops.stop_gradient(backbone(self._backbone_inputs(x))["logits"])
        reference_logits = ops.stop_gradient(reference(self._backbone_inputs(x))["logits"])
        scores = learnability_scores(student_logits, reference_logits)
        batch = ops.shape(student_logits)[0]
        keep = max(1, int(round(batch * self.curation_fraction)))
        return gather_batch(x, select_learnable(scores, keep))

    def _backbone_inputs(self, x):
        images = self.backbone.image_inputs(x)
        return {**(images if self.backbone.is_naflex else {"images": images}),
                "token_ids": x["token_ids"]}

    def _move_teacher(self):
        """The EMA update that followed the previous train step (none before the first)."""
        steps = self.teacher_steps  # the optimizer's iterations are not visible here on JAX
        decay = ops.where(ops.greater(steps, 0.0), self.ema_decay, 1.0)
        steps.assign(steps + 1.0)
        for teacher, student in self.ema_pairs:
            value = decay * ops.cast(teacher, "float32") + (1.0 - decay) * ops.cast(
                ops.stop_gradient(student), "float32")
            teacher.assign(ops.cast(value, teacher.dtype))

    def call(self, x, training=False):
        """The unweighted loss terms of batch `x`: a dict of float32 scalars."""
        if training and self.ema_decay is not None and self.distillation_dim is not None:
            self._move_teacher()
        if self.reference is not None and training:
            x = self._curate(x)
        vision = self.backbone.vision_encoder
        tokens, key_mask = vision.embed(self.backbone.image_inputs(x))
        image = vision.encode(tokens, key_mask)
        image_embeddings = l2_normalize(image["pooled_output"])
        text_embeddings = self.backbone.encode_text(x["token_ids"])
        head = self.backbone.logits_head
        if self.loss_chunk_size is None and batch_shards() == 1:
            logits = head(image_embeddings, text_embeddings)
            terms = {"sigmoid_loss": ops.mean(sigmoid_loss(logits))}
        else:
            terms = {"sigmoid_loss": sharded_sigmoid_loss(
                image_embeddings, text_embeddings, head.logit_scale, head.logit_bias,
                self.loss_chunk_size,
            )}
        if self.decoder is not None and "locca_loss" in self.skipped_terms:
            terms["locca_loss"] = _zero_with_zero_gradients(self.decoder.trainable_weights)
        elif self.decoder is not None:
            missing = [k for k in DECODER_KEYS if k not in x]
            if missing:
                raise ValueError(
                    f"The batch lacks {missing}, which the LocCa decoder trains on: "
                    "build them with keras_siglip2.locca_targets, or pass decoder=None."
                )
            logits = self.decoder(
                x["decoder_input_ids"], image["sequence_output"], image_mask=key_mask,
                causal=x["decoder_causal"],
            )
            terms["locca_loss"] = token_cross_entropy(
                logits, x["decoder_target_ids"], x["decoder_loss_mask"], reduction="mean"
            )
        if self.distillation_dim is not None:
            if {"self_distillation_loss", "masked_prediction_loss"} <= self.skipped_terms:
                zero = _zero_with_zero_gradients([
                    self.mask_token, *self.global_head.trainable_weights,
                    *self.patch_head.trainable_weights,
                ])
                terms.update(self_distillation_loss=zero, masked_prediction_loss=zero)
            else:
                terms.update(self._self_supervised_terms(x, tokens, key_mask, training))
        return terms

    def _self_supervised_terms(self, x, tokens, key_mask, training):
        if "local_views" not in x:
            raise ValueError(
                "Self-distillation needs `local_views` in the batch (B, V, ...): make "
                "them with keras_siglip2.preprocessing.LocalViews, or set "
                "distillation_dim=None."
            )
        vision, images = self.backbone.vision_encoder, self.backbone.image_inputs(x)
        teacher = self.teacher.encode(*self.teacher.embed(images))
        teacher = keras.tree.map_structure(ops.stop_gradient, teacher)
        teacher_global = self.teacher_global_head(teacher["pooled_output"])[:, None]

        views = x["local_views"]
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

        batch, num_patches = ops.shape(tokens)[:2]
        mask = random_patch_mask(
            batch, num_patches, self.mask_ratio, self._mask_seeds, valid_mask=key_mask
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

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = ops.zeros((), "float32")
        for term, value in y_pred.items():
            gated = self.term_gates[term] * value
            self.term_trackers[term].update_state(gated)
            total = total + self.loss_weights[term] * gated
        for extra in self.losses:  # e.g. weight regularisers
            total = total + ops.cast(extra, "float32")
        return scale_for_replicas(total)

    @property
    def metrics(self):
        return [*super().metrics, *self.term_trackers.values()]

    def get_config(self):
        config = {
            **super().get_config(),
            "backbone": keras.layers.serialize(self.backbone),
            "decoder": keras.layers.serialize(self.decoder) if self.decoder else None,
            "reference": keras.layers.serialize(self.reference) if self.reference else None,
        }
        for name in (
            "distillation_dim", "loss_weights", "mask_ratio", "head_hidden_dim",
            "head_bottleneck_dim", "student_temperature", "teacher_temperature",
            "center_momentum", "curation_fraction", "loss_chunk_size", "seed", "ema_decay",
        ):
            config[name] = getattr(self, name)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "decoder", "reference"):
            if config.get(key) is not None:
                config[key] = keras.layers.deserialize(config[key])
        return cls(**config)
