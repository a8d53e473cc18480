"""TIPS / iBOT masked patch prediction: loss, random patch masks and mask-token insertion.

The student sees its patch tokens with a random subset replaced by a learned mask token;
for each masked patch it predicts the EMA teacher's patch feature of the unmasked image.
With per-patch head logits s, t (B, N, K), mask m (B, N) (1 = masked) and centre c (K,):

    p_t[b, n] = softmax((t[b, n] - c) / τ_t)          (no gradient to t or c)
    ℓ[b, n]   = -Σ_k p_t[b, n, k] · log_softmax(s[b, n] / τ_s)_k
    L_b       = Σ_n m[b, n] ℓ[b, n] / Σ_n m[b, n]
    L         = mean of L_b over the images with at least one masked patch (0 if none)

iBOT instead averages L_b over all images (an image without masked patches adds 0); here
such images are left out of the mean. Everything is computed in float32.
"""

import keras
from keras import ops

from keras_siglip2.losses.self_distillation import _teacher_probs


def masked_prediction_loss(
    student_patch_logits,
    teacher_patch_logits,
    mask,
    center,
    student_temperature=0.1,
    teacher_temperature=0.04,
):
    """Scalar cross-entropy over the masked patches (see the module docstring).

    Args:
        student_patch_logits: (B, N, K) patch-head outputs for the masked student input.
        teacher_patch_logits: (B, N, K) EMA-teacher patch-head outputs, unmasked input.
        mask: (B, N), 1 where the patch was masked (and is predicted).
        center: (K,) running centre of the teacher patch logits.
        student_temperature: τ_s.
        teacher_temperature: τ_t.

    Example:
    >>> z = keras.ops.zeros((2, 3, 4))  # uniform distributions: loss = log 4
    >>> mask = keras.ops.array([[1, 0, 1], [0, 0, 0]])
    >>> round(float(masked_prediction_loss(z, z, mask, keras.ops.zeros((4,)))), 4)
    1.3863
    """
    p_t = _teacher_probs(teacher_patch_logits, center, teacher_temperature)
    log_p_s = ops.log_softmax(
        ops.cast(student_patch_logits, "float32") / student_temperature, axis=-1
    )
    mask = ops.cast(mask, "float32")
    per_patch = -ops.sum(p_t * log_p_s, axis=-1)
    count = ops.sum(mask, axis=-1)
    per_image = ops.sum(per_patch * mask, axis=-1) / ops.maximum(count, 1.0)
    has = ops.cast(count > 0, "float32")
    return ops.sum(per_image * has) / ops.maximum(ops.sum(has), 1.0)


def random_patch_mask(batch, num_patches, ratio, seed, valid_mask=None):
    """(batch, num_patches) int32 mask with round(ratio · n_valid) ones per row.

    The ones are drawn uniformly among each row's valid patches (`valid_mask` 1, all by
    default); padding is never masked. Rounding is half-to-even (numpy's `round`). Shapes
    are static, so it compiles (`jax.jit`, XLA) to one program: the rank of each patch in
    a row of random scores (padding scored above every valid patch) is compared with the
    row's count.

    Args:
        batch, num_patches: the static output shape.
        ratio: fraction of the valid patches to mask (SigLIP 2: 0.5).
        seed: an int, a `keras.random.SeedGenerator`, or (JAX, e.g. inside `jit`) a key.
        valid_mask: optional (batch, num_patches), 1 for real patches (NaFlex padding 0).

    Example:
    >>> m = random_patch_mask(2, 6, 0.5, seed=0, valid_mask=[[1] * 6, [1, 1, 1, 1, 0, 0]])
    >>> keras.ops.convert_to_numpy(keras.ops.sum(m, axis=-1)).tolist()
    [3, 2]
    """
    scores = keras.random.uniform((batch, num_patches), dtype="float32", seed=seed)
    if valid_mask is None:
        n_valid = ops.full((batch, 1), num_patches, dtype="float32")
    else:
        valid = ops.cast(valid_mask, "float32")
        scores = ops.where(valid > 0, scores, 2.0)
        n_valid = ops.sum(valid, axis=-1, keepdims=True)
    # Ranks are a permutation of 0..N-1 even with tied scores, so the count is exact.
    ranks = ops.argsort(ops.argsort(scores, axis=-1), axis=-1)
    count = ops.round(ratio * n_valid)
    return ops.cast(ops.cast(ranks, "float32") < count, "int32")


def apply_token_mask(tokens, mask, mask_token):
    """Tokens (B, N, D) with the positions where `mask` (B, N) is 1 set to `mask_token` (D,).

    As in iBOT, replace the patch embeddings before position embeddings are added.

    Example:
    >>> x = apply_token_mask(keras.ops.ones((1, 3, 2)), [[0, 1, 0]], keras.ops.zeros((2,)))
    >>> keras.ops.convert_to_numpy(x).tolist()
    [[[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]]
    """
    mask = ops.expand_dims(ops.cast(mask, "bool"), -1)
    return ops.where(mask, ops.cast(mask_token, tokens.dtype), tokens)
