"""Greedy decoding with a `LocCaDecoder`: causal (one token per pass) or parallel (CapPa).

Both fill a (B, T) buffer, T = `decoder.sequence_length`, laid out as in training
(`keras_siglip2.locca_targets`): `prefix_ids` holds [task] + prefix, right-padded with `pad_id`,
and may differ in length per example.

- `greedy_decode`: causal attention; pass s reads the logits at each example's last filled
  position and writes the argmax one position further (`num_tokens` passes), as the
  teacher-forced causal layout predicts token i + 1 at position i.
- `parallel_decode`: one bidirectional pass over [task] + prefix + [MASK] × (num_tokens + 1)
  (the target and its eos slot, as the parallel training layout); each mask position predicts
  its own token.

`allowed_ids` restricts the argmax (e.g. to the location bins when decoding a box).
"""

import numpy as np
from keras import ops


def _prefix_lengths(prefix_ids, pad_id, num_slots, sequence_length):
    prefix_ids = np.asarray(prefix_ids)
    if prefix_ids.ndim != 2:
        raise ValueError(f"prefix_ids must be (B, L) ids; got shape {prefix_ids.shape}.")
    filled = prefix_ids != pad_id
    lengths = filled.sum(axis=1)
    if not (filled == (np.arange(prefix_ids.shape[1]) < lengths[:, None])).all():
        raise ValueError(
            f"prefix_ids must be [task] + prefix followed only by pad ({pad_id}); a row has "
            "a pad before a token."
        )
    if lengths.min(initial=1) < 1:
        raise ValueError("Every row of prefix_ids needs at least its task token.")
    if lengths.max(initial=0) + num_slots > sequence_length:
        raise ValueError(
            f"A prefix of {lengths.max()} tokens plus {num_slots} decoded positions does not "
            f"fit the decoder's sequence_length {sequence_length}: decode fewer tokens or "
            "shorten the prefix."
        )
    buffer = np.full((len(prefix_ids), sequence_length), pad_id, "int32")
    width = min(prefix_ids.shape[1], sequence_length)
    buffer[:, :width] = prefix_ids[:, :width]
    return buffer, lengths.astype("int32")


def _argmax(logits, vocabulary_size, allowed_ids):
    """Argmax over the last axis, over `allowed_ids` only when given."""
    if allowed_ids is not None:
        allowed = np.zeros(vocabulary_size, bool)
        allowed[np.asarray(allowed_ids, "int64")] = True
        logits = ops.where(allowed, logits, float("-inf"))
    return ops.cast(ops.argmax(logits, axis=-1), "int32")


def greedy_decode(
    decoder, image_tokens, image_mask, prefix_ids, num_tokens, allowed_ids=None, pad_id=0
):
    """Greedy causal decoding of `num_tokens` tokens after each example's prefix.

    Args:
        decoder: a `LocCaDecoder`.
        image_tokens: (B, N, D) image-tower `sequence_output`.
        image_mask: (B, N) truthy on real image tokens (NaFlex), or None.
        prefix_ids: (B, L) [task] + prefix ids, right-padded with `pad_id`.
        num_tokens: tokens to decode; prefix length + num_tokens ≤ `decoder.sequence_length`.
        allowed_ids: optional ids the argmax is restricted to.
        pad_id: the pad id (0 in `LocCaVocabulary`).

    Returns:
        (B, num_tokens) int32 numpy array of the decoded ids (an eos is decoded like any
        token; cut what follows it for captions).

    Example:
    >>> from keras_siglip2.models.locca_decoder import LocCaDecoder
    >>> decoder = LocCaDecoder(vocabulary_size=20, sequence_length=8, hidden_dim=8,
    ...     num_layers=1, num_heads=2, intermediate_dim=16)
    >>> tokens = greedy_decode(decoder, np.ones((2, 4, 8), "float32"), None,
    ...     [[17, 5, 6], [17, 0, 0]], num_tokens=4, allowed_ids=range(10, 14))
    >>> tokens.shape, bool(((tokens >= 10) & (tokens < 14)).all())
    ((2, 4), True)
    """
    buffer, lengths = _prefix_lengths(prefix_ids, pad_id, num_tokens, decoder.sequence_length)
    buffer = ops.convert_to_tensor(buffer)
    columns = ops.arange(decoder.sequence_length, dtype="int32")[None]
    last = ops.convert_to_tensor(lengths - 1)
    decoded = []
    for _ in range(num_tokens):
        logits = decoder(buffer, image_tokens, image_mask=image_mask)
        at_last = ops.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]
        token = _argmax(at_last, decoder.vocabulary_size, allowed_ids)
        last = last + 1
        buffer = ops.where(columns == last[:, None], token[:, None], buffer)
        decoded.append(token)
    if not decoded:
        return np.zeros((len(lengths), 0), "int32")
    return ops.convert_to_numpy(ops.stack(decoded, axis=1))


def parallel_decode(
    decoder, image_tokens, image_mask, prefix_ids, num_tokens, mask_id, allowed_ids=None,
    pad_id=0,
):
    """One-pass parallel decoding from [MASK] inputs with bidirectional attention (CapPa).

    The input is [task] + prefix + [MASK] × (num_tokens + 1) + pad, the parallel training
    layout of a `num_tokens`-token target and its eos; the first `num_tokens` mask positions'
    argmaxes are returned. Arguments as `greedy_decode`, plus `mask_id`
    (`LocCaVocabulary.mask_id`).

    Example:
    >>> from keras_siglip2.models.locca_decoder import LocCaDecoder
    >>> decoder = LocCaDecoder(vocabulary_size=20, sequence_length=8, hidden_dim=8,
    ...     num_layers=1, num_heads=2, intermediate_dim=16)
    >>> parallel_decode(decoder, np.ones((2, 4, 8), "float32"), None, [[17, 5], [17, 0]],
    ...     num_tokens=4, mask_id=14).shape
    (2, 4)
    """
    buffer, lengths = _prefix_lengths(prefix_ids, pad_id, num_tokens + 1, decoder.sequence_length)
    columns = np.arange(decoder.sequence_length)[None]
    targets = (columns >= lengths[:, None]) & (columns <= lengths[:, None] + num_tokens)
    buffer = np.where(targets, mask_id, buffer).astype("int32")
    logits = decoder(
        buffer, image_tokens, image_mask=image_mask, causal=np.zeros(len(buffer), "int32")
    )
    positions = lengths[:, None] + np.arange(num_tokens)[None]
    at_targets = ops.take_along_axis(logits, ops.convert_to_tensor(positions)[..., None], axis=1)
    return ops.convert_to_numpy(_argmax(at_targets, decoder.vocabulary_size, allowed_ids))
