"""`SigLIP2Trainer`: the SigLIP 2 training recipe as one `keras.Model` for `fit`."""

import keras
from keras import ops

from keras_siglip2.curation import Curation
from keras_siglip2.losses.collectives import scale_for_replicas
from keras_siglip2.models.loss_terms import (
    LocCaTerm,
    SelfSupervisedTerms,
    SigmoidTerm,
    StudentPass,
)

_DEFAULT_WEIGHTS = {"sigmoid_loss": 1.0, "locca_loss": 1.0, "self_distillation_loss": 1.0,
                    "masked_prediction_loss": 0.25}


class SigLIP2Trainer(keras.Model):
    """SigLIP 2 pretraining / fine-tuning with `fit`: every loss term of the recipe.

    The loss is Σ_k weight_k · term_k over the terms, each a `LossTerm` layer
    (`keras_siglip2.models.loss_terms`) that owns its variables:
    - `sigmoid_loss` (`SigmoidTerm`): the pairwise image-text sigmoid loss;
    - `locca_loss` (`LocCaTerm`): LocCa captioning / referring expressions /
      grounded captioning from a `LocCaDecoder` cross-attending to the patch tokens;
    - `self_distillation_loss` and `masked_prediction_loss`
      (`SelfSupervisedTerms`, one EMA teacher pass for both): SILC, the student
      sees `local_views` and matches the teacher's view of the batch's images;
      TIPS, the student sees `mask_ratio` of its patch tokens replaced by a
      learned mask token and predicts the teacher's per-patch head outputs there.
    The student's image tower runs once per batch and every term reads it.
    `weight_k` are constants. Each term is logged in `fit`'s history under its
    name. The schedule is `skipped_terms`: terms named there are not computed
    (logged as 0); `AuxiliaryLossSchedule` sets it, and each change retraces
    the train step once. With `ema_decay`, the teacher moves inside the
    compiled train step: each step first applies the previous step's update,
    `teacher = d · teacher + (1 − d) · student` (no per-step host work, and a
    resumed run applies the update its backup was written before); without it,
    an `EMATeacher` callback can move it through `ema_pairs`.

    With a `reference` backbone (ACID active curation), each incoming batch is
    a super-batch from which `Curation` keeps the `curation_fraction` most
    learnable examples (student loss − reference loss) for the update.

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
        self.distillation_dim = distillation_dim
        self.mask_ratio = mask_ratio
        self.head_hidden_dim = head_hidden_dim
        self.head_bottleneck_dim = head_bottleneck_dim
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.center_momentum = center_momentum
        self.curation_fraction = curation_fraction
        self.loss_chunk_size = loss_chunk_size
        self.seed = seed
        if ema_decay is not None and not 0.0 <= float(ema_decay) <= 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1] (or be None); got {ema_decay!r}.")
        self.ema_decay = None if ema_decay is None else float(ema_decay)

        names = ["sigmoid_loss"]
        if decoder is not None:
            names.append("locca_loss")
        if distillation_dim is not None:
            names += ["self_distillation_loss", "masked_prediction_loss"]
        unknown = set(loss_weights or {}) - set(names)
        if unknown:
            raise ValueError(
                f"loss_weights names {sorted(unknown)}, which this trainer does not "
                f"compute; its terms are {names} (a decoder enables locca_loss, "
                "distillation_dim the self-distillation and masked-prediction terms)."
            )
        weights = {**_DEFAULT_WEIGHTS, **(loss_weights or {})}
        self.sigmoid = SigmoidTerm(weights, chunk_size=loss_chunk_size)
        width = backbone.vision_encoder.hidden_dim
        self.locca = None if decoder is None else LocCaTerm(decoder, width, weights)
        self.term_trackers = {t: keras.metrics.Mean(name=t) for t in names}
        self._skipped_terms = frozenset()
        self.self_supervised = None if distillation_dim is None else SelfSupervisedTerms(
            backbone.vision_encoder, distillation_dim, weights, mask_ratio=mask_ratio,
            head_hidden_dim=head_hidden_dim, head_bottleneck_dim=head_bottleneck_dim,
            student_temperature=student_temperature, teacher_temperature=teacher_temperature,
            center_momentum=center_momentum, seed=seed,
        )
        self.curation = None if reference is None else Curation(reference, curation_fraction)
        # Every variable exists by now (e.g. BackupAndRestore on TF needs a built model).
        self.built = True

    @property
    def loss_terms(self):
        """The `LossTerm` layers, in the order their losses are logged and summed."""
        return [t for t in (self.sigmoid, self.locca, self.self_supervised) if t is not None]

    @property
    def terms(self):
        """The names of the loss terms this trainer computes."""
        return [name for term in self.loss_terms for name in term.names]

    @property
    def loss_weights(self):
        """`{term name: weight}`."""
        return {name: w for term in self.loss_terms for name, w in term.loss_weights.items()}

    @property
    def decoder(self):
        """The `LocCaDecoder`, or None."""
        return None if self.locca is None else self.locca.decoder

    @property
    def reference(self):
        """The ACID reference backbone, or None."""
        return None if self.curation is None else self.curation.reference

    @property
    def skipped_terms(self):
        """The names of the terms left out of the step (logged as 0), a frozenset.

        This is the schedule of the recipe (`AuxiliaryLossSchedule` sets it): assigning
        a new set retraces the train step once, so a skipped term costs no compute.
        """
        return self._skipped_terms

    @skipped_terms.setter
    def skipped_terms(self, names):
        names = frozenset(names)
        unknown = names - set(self.terms)
        if unknown:
            raise ValueError(f"Unknown term(s) {sorted(unknown)}; the terms are {self.terms}.")
        if names == self._skipped_terms:
            return
        self._skipped_terms = names
        if self.train_function is not None:
            self.make_train_function(force=True)
        self.test_function = None  # rebuilt by the next evaluate

    @property
    def ema_pairs(self):
        """(teacher, student) variable pairs, for an `EMATeacher` callback."""
        if self.self_supervised is None:
            return []
        return self.self_supervised.ema_pairs(self.backbone.vision_encoder)

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

    def call(self, x, training=False):
        """The unweighted loss terms of batch `x`: a dict of float32 scalars."""
        if training and self.ema_decay is not None and self.self_supervised is not None:
            self.self_supervised.move_teacher(self.backbone.vision_encoder, self.ema_decay)
        if training and self.curation is not None:
            x = self.curation.curate(x, self.backbone)
        student = StudentPass.of(self.backbone, x)
        losses = {}
        for term in self.loss_terms:
            skipped = self._skipped_terms.intersection(term.names)
            if len(skipped) == len(term.names):
                losses.update(term.skipped_losses(student))
                continue
            for name, value in term.losses_of(x, student, training).items():
                # Computed with a skipped sibling: 0, with zero gradients, as when skipped.
                losses[name] = value * 0.0 if name in skipped else value
        return losses

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = ops.zeros((), "float32")
        weights = self.loss_weights
        for term, value in y_pred.items():
            self.term_trackers[term].update_state(value)
            total = total + weights[term] * value
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
