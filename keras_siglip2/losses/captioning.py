"""Token cross-entropy for the LocCa / CapPa decoder, normalised as in big_vision.

big_vision's CapPa trainer (`trainers/proj/cappa/generative.py`) calls
`utils.weighted_softmax_xent(..., reduction=True, normalize=True)` with weights = (labels !=
pad) · label_masks: each example's weighted token losses are summed and divided by that
example's total weight (clipped at a tiny positive value, so an example without target tokens
gives 0), and the batch loss is the plain mean of these per-example losses. Every example
therefore weighs the same whatever its number of target tokens (a 5-token box counts as much as
a 60-token caption). `reduction="token_mean"` instead averages over all target tokens of the
batch (not what big_vision does; offered for comparison).
"""

from keras import ops

_TINY = 2e-38  # big_vision's clip on the normaliser: 0 / _TINY = 0 for empty examples.


def token_cross_entropy(logits, targets, loss_mask=None, reduction="none"):
    """Softmax cross-entropy of (B, T, V) `logits` against (B, T) int `targets`, in float32.

    Args:
        logits: (B, T, V) decoder outputs.
        targets: (B, T) int target ids.
        loss_mask: (B, T) weights, 1 on target positions; None = every position.
        reduction: "none" → per-example losses (B,), each the weighted mean over that
            example's tokens (0 when it has none); "mean" → their batch mean (big_vision's
            CapPa/LocCa loss); "token_mean" → sum over all weighted tokens / their total weight.

    Example:
    >>> logits = ops.log(ops.array([[[0.5, 0.5], [0.9, 0.1]]]))
    >>> loss = token_cross_entropy(logits, ops.array([[0, 1]]), ops.array([[1, 0]]))
    >>> ops.convert_to_numpy(loss).astype(float).round(4).tolist()
    [0.6931]
    """
    logits = ops.cast(logits, "float32")
    targets = ops.cast(targets, "int32")
    picked = ops.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = ops.logsumexp(logits, axis=-1) - picked
    weights = ops.ones_like(nll) if loss_mask is None else ops.cast(loss_mask, "float32")
    total = ops.sum(nll * weights, axis=-1)
    if reduction == "token_mean":
        return ops.sum(total) / ops.maximum(ops.sum(weights), _TINY)
    per_example = total / ops.maximum(ops.sum(weights, axis=-1), _TINY)
    if reduction == "mean":
        return ops.mean(per_example)
    if reduction != "none":
        raise ValueError(f"reduction must be 'none', 'mean' or 'token_mean'; got {reduction!r}.")
    return per_example
