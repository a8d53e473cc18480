"""SILC / DINO local-to-global self-distillation loss and the teacher-centre update.

With student logits s (B, S, K) for S (local) student views and teacher logits t (B, G, K)
for G (global) teacher views, both from DINO heads, and a running centre c (K,):

    p_t[b, g] = softmax((t[b, g] - c) / τ_t)          (no gradient to t or c)
    L = -(1/(B G S)) Σ_b Σ_g Σ_s Σ_k p_t[b, g, k] · log_softmax(s[b, s] / τ_s)_k

Every (teacher view, student view) pair counts. DINO skips the pairs where student and
teacher saw the same view; in SILC the student only sees local views and the teacher only
global ones, so no pair is excluded (pass the student's global-view logits as well and
they would be compared with themselves). Everything is computed in float32.
"""

from keras import ops


def _teacher_probs(teacher_logits, center, teacher_temperature):
    t = ops.stop_gradient(ops.cast(teacher_logits, "float32"))
    c = ops.stop_gradient(ops.cast(center, "float32"))
    return ops.softmax((t - c) / teacher_temperature, axis=-1)


def self_distillation_loss(
    student_logits, teacher_logits, center, student_temperature=0.1, teacher_temperature=0.04
):
    """Scalar cross-entropy between centred, sharpened teacher and student distributions.

    Args:
        student_logits: (B, S, K) head outputs for S student views of each image.
        teacher_logits: (B, G, K) EMA-teacher head outputs for G views.
        center: (K,) running centre of the teacher logits (see `updated_center`).
        student_temperature: τ_s.
        teacher_temperature: τ_t (sharpening; DINO warms it up from 0.04 to 0.07).

    Example:
    >>> z = keras.ops.zeros((2, 3, 4))  # uniform distributions: loss = log 4
    >>> round(float(self_distillation_loss(z, z[:, :2], keras.ops.zeros((4,)))), 4)
    1.3863
    """
    p_t = _teacher_probs(teacher_logits, center, teacher_temperature)
    log_p_s = ops.log_softmax(ops.cast(student_logits, "float32") / student_temperature, axis=-1)
    # Σ_g Σ_s p_t[g]·log p_s[s] = (Σ_g p_t[g])·(Σ_s log p_s[s]): no (G, S) pair tensor needed.
    cross = ops.sum(ops.mean(p_t, axis=1) * ops.mean(log_p_s, axis=1), axis=-1)
    return -ops.mean(cross)


def updated_center(center, teacher_logits, momentum=0.9, mask=None):
    """c ← m·c + (1 − m)·mean(teacher logits over every axis but the last), float32.

    `mask` (the teacher logits' leading shape, 1 = counted) leaves out entries such as
    NaFlex padding patches; by default every entry counts. The mean should be over the
    global batch: under data parallelism, all-reduce it (with sharded JAX arrays inside
    `jit` it already is).

    Example:
    >>> t = keras.ops.array([[[1.0, 3.0]], [[3.0, 5.0]]])  # (B=2, G=1, K=2)
    >>> [round(float(v), 4) for v in updated_center(keras.ops.zeros((2,)), t)]
    [0.2, 0.4]
    >>> [round(float(v), 4) for v in updated_center(keras.ops.zeros((2,)), t, mask=[[1], [0]])]
    [0.1, 0.3]
    """
    t = ops.stop_gradient(ops.cast(teacher_logits, "float32"))
    axes = tuple(range(len(t.shape) - 1))
    if mask is None:
        batch_mean = ops.mean(t, axis=axes)
    else:
        weights = ops.cast(mask, "float32")[..., None]
        batch_mean = ops.sum(t * weights, axis=axes) / ops.maximum(ops.sum(weights), 1.0)
    return momentum * ops.cast(center, "float32") + (1.0 - momentum) * batch_mean
