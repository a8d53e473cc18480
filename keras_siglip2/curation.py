"""Active data curation (ACID / JEST): keep the most learnable examples of a super-batch.

ACID (Udandarao et al. 2024, "Active Data Curation Effectively Distills Large-Scale
Multimodal Models", arXiv:2411.18674) and JEST (Evans et al. 2024, "Data curation via joint
example selection further accelerates multimodal learning", arXiv:2406.17711) score each
example of a large super-batch by its *learnability* — the student's loss minus a strong
reference model's loss — and train the student only on a learnable sub-batch. Both
draw the sub-batch jointly, chunk by chunk, rescoring against the chunks already drawn;
this module gives the example-level form those build on: each example is scored once
against the whole super-batch (one (B, B) logit matrix per model) and the top k, or a
softmax sample of k, are kept.

Everything is keras.ops with static shapes, so it runs inside a jitted train step:

    scores = learnability_scores(student_logits, reference_logits)   # (B,)
    indices = select_learnable(scores, k, temperature=0.1, seed=seed)
    sub_batch = gather_batch(super_batch, indices)
"""

import keras
import numpy as np
from keras import ops

from keras_siglip2.losses.sigmoid import sigmoid_loss


def per_example_sigmoid_loss(logits):
    """(B,) loss of each pair i inside the (B, B) super-batch logits.

    The SigLIP loss of row i (image i against every text) plus that of column i (text i
    against every image): the diagonal is the positive, everything else a negative, so the
    positive logit counts twice. The rows sum to B times the SigLIP loss, as do the columns.

    Example:
    >>> logits = keras.ops.array([[2.0, -3.0], [-1.0, 4.0]])
    >>> loss = per_example_sigmoid_loss(logits)
    >>> keras.ops.convert_to_numpy(loss).astype("float64").round(4).tolist()
    [0.6157, 0.3981]
    """
    return sigmoid_loss(logits) + sigmoid_loss(ops.transpose(logits))


def learnability_scores(student_logits, reference_logits):
    """(B,) learnability: the student's per-example loss minus the reference's.

    Both are (B, B) logit matrices of the same super-batch (pair i on the diagonal); see
    `per_example_sigmoid_loss`. High scores mark examples the student still gets wrong but
    the reference finds easy — neither noise (hard for both) nor already learnt.

    Example:
    >>> student = keras.ops.array([[0.0, 0.0], [0.0, 0.0]])
    >>> reference = keras.ops.array([[5.0, -5.0], [-5.0, 5.0]])
    >>> scores = learnability_scores(student, reference)
    >>> keras.ops.convert_to_numpy(scores).astype("float64").round(3).tolist()
    [2.746, 2.746]
    """
    return per_example_sigmoid_loss(student_logits) - per_example_sigmoid_loss(reference_logits)


def select_learnable(scores, k, temperature=None, seed=None):
    """(k,) int32 indices of the examples to train on.

    With `temperature=None`, the k highest scores (in decreasing order). Otherwise k
    examples drawn without replacement with probabilities ∝ softmax(scores / temperature),
    via the Gumbel top-k trick: top-k of `scores / temperature + Gumbel noise`. `seed` is
    an int (same seed, same draw), a `keras.random.SeedGenerator` (use one in a training
    loop, so each step draws anew), or None for Keras's global generator (not under jit).

    Example:
    >>> scores = keras.ops.array([0.1, 2.0, -1.0, 0.7])
    >>> keras.ops.convert_to_numpy(select_learnable(scores, 2)).tolist()
    [1, 3]
    >>> draw = select_learnable(scores, 3, temperature=1.0, seed=0)
    >>> sorted(set(keras.ops.convert_to_numpy(draw).tolist())) == sorted(
    ...     keras.ops.convert_to_numpy(draw).tolist())  # distinct indices
    True
    """
    scores = ops.cast(scores, "float32")
    if temperature is not None:
        tiny = float(np.finfo("float32").tiny)  # Keeps log(-log(u)) finite.
        u = keras.random.uniform(ops.shape(scores), minval=tiny, maxval=1.0, seed=seed)
        scores = scores / temperature - ops.log(-ops.log(u))
    return ops.cast(ops.top_k(scores, k, sorted=True)[1], "int32")


def gather_batch(batch, indices):
    """The sub-batch `indices` of a nested structure of arrays with leading dimension B.

    Example:
    >>> batch = {"images": np.arange(8.0).reshape(4, 2), "token_ids": np.arange(4)}
    >>> sub = gather_batch(batch, keras.ops.array([2, 0]))
    >>> keras.ops.convert_to_numpy(sub["token_ids"]).tolist()
    [2, 0]
    """
    return keras.tree.map_structure(
        lambda x: None if x is None else ops.take(x, indices, axis=0), batch
    )


class Curation(keras.layers.Layer):
    """ACID as a step on the batch: keeps the `fraction` most learnable examples.

    Each incoming batch is a super-batch; the student and the frozen `reference` backbone
    both score it (`learnability_scores`) and the top `fraction` of it is returned.

    Args:
        reference: a `SigLIP2Backbone` scoring learnability; frozen here.
        fraction: fraction of each super-batch kept (at least one example).

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> curation = Curation(toy_backbone(), fraction=0.5)
    >>> batch = {"images": np.zeros((4, 16, 16, 3), "float32"),
    ...          "token_ids": np.ones((4, 4), "int32")}
    >>> tuple(curation.curate(batch, toy_backbone())["token_ids"].shape)
    (2, 4)
    """

    def __init__(self, reference, fraction=0.5, **kwargs):
        super().__init__(**kwargs)
        reference.trainable = False
        self.reference = reference
        self.fraction = fraction
        self.built = True

    def curate(self, batch, student):
        """The sub-batch of `batch` that the `student` backbone should train on."""
        if any(isinstance(value, (tuple, list)) for value in batch.values()):
            raise ValueError("ACID curation keeps a subset of a batch's rows: give each input "
                             "as one array with a row per example, not LocCa length groups.")
        images = student.image_inputs(batch)
        inputs = {**(images if student.is_naflex else {"images": images}),
                  "token_ids": batch["token_ids"]}
        student_logits = ops.stop_gradient(student(inputs)["logits"])
        reference_logits = ops.stop_gradient(self.reference(inputs)["logits"])
        scores = learnability_scores(student_logits, reference_logits)
        keep = max(1, int(round(ops.shape(student_logits)[0] * self.fraction)))
        return gather_batch(batch, select_learnable(scores, keep))
