"""Greedy decoding with a `LocCaDecoder`: causal (one token per pass) or parallel (CapPa).

Both fill a (B, T) buffer, T = `decoder.sequence_length`, laid out as in training
(`keras_siglip2.locca_targets`): `prefix_ids` holds [task] + prefix, right-padded with `pad_id`,
and may differ in length per example.

- `greedy_decode`: causal attention; step s reads the logits at each example's last filled
  position and writes the argmax one position further, as the teacher-forced causal layout
  predicts token i + 1 at position i. One pass over the buffer fills the decoder's key/value
  cache (`LocCaDecoder.build_cache`), then each step runs the decoder on one token per
  example (`call_with_cache`); the loop is one compiled program (`predict_on_batch`). The
  tokens are those of `num_tokens` full causal passes (tests/test_cached_decoding.py).
- `parallel_decode`: one bidirectional pass over [task] + prefix + [MASK] × (num_tokens + 1)
  (the target and its eos slot, as the parallel training layout); each mask position predicts
  its own token.

`allowed_ids` restricts the argmax (e.g. to the location bins when decoding a box).
"""

import functools

import numpy as np
from keras import ops

from keras_siglip2.models.compiled import CompiledCall


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


def _allowed_mask(vocabulary_size, allowed_ids):
    if allowed_ids is None:
        return None
    allowed = np.zeros(vocabulary_size, bool)
    allowed[np.asarray(allowed_ids, "int64")] = True
    return allowed


def _argmax(logits, allowed):
    """Argmax over the last axis, over the `allowed` (V,) mask only when given."""
    if allowed is not None:
        logits = ops.where(allowed, logits, float("-inf"))
    return ops.cast(ops.argmax(logits, axis=-1), "int32")


def _cached_greedy(decoder, buffer, lengths, image, num_tokens, allowed):
    """The greedy loop on the decoder's key/value cache, in `keras.ops` (compiles).

    Row i's prefix fills cache slots 0 … lengths[i] − 1 in the prefill; its s-th decoded
    token goes to slot max(lengths) + s − 1 whatever the row, so every step writes one
    slot for the whole batch with `slice_update`, and each row attends to its prefix slots
    and the slots written so far (its pad slots stay masked). `image`: the image tokens,
    mask and positions, as `build_cache` takes them.
    """
    logits, cache = decoder.build_cache(buffer, *image)
    last = ops.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
    token = _argmax(last, allowed)
    tokens = ops.slice_update(
        ops.zeros((ops.shape(buffer)[0], num_tokens), "int32"), (0, 0), token[:, None]
    )
    slots = ops.arange(decoder.sequence_length, dtype="int32")[None]
    first_free = ops.max(lengths)

    def step(s, state):
        tokens, token, cache, keep = state
        slot = first_free + s - 1
        keep = ops.logical_or(keep, slots == slot)
        positions = (lengths + s - 1)[:, None]
        logits, cache = decoder.call_with_cache(
            token[:, None], positions, cache, slot, keep[:, None]
        )
        token = _argmax(logits[:, 0], allowed)
        return ops.slice_update(tokens, (0, s), token[:, None]), token, cache, keep

    state = (tokens, token, cache, slots < lengths[:, None])
    return ops.fori_loop(1, num_tokens, step, state)[0]


def _greedy_call(decoder, num_tokens, allowed, inputs):
    image = (inputs["image_tokens"], inputs.get("image_mask"), inputs.get("image_positions"))
    return _cached_greedy(
        decoder, inputs["buffer"], inputs["lengths"], image, num_tokens, allowed
    )


@functools.lru_cache(maxsize=8)  # Bounded: each entry keeps its decoder alive.
def _compiled(decoder, num_tokens, allowed_ids):
    """`_cached_greedy` as a `CompiledCall`, so `predict_on_batch` compiles it on each backend."""
    allowed = _allowed_mask(decoder.vocabulary_size, allowed_ids)
    greedy = functools.partial(_greedy_call, decoder, num_tokens, allowed)
    return CompiledCall(greedy, [decoder], name="cached_greedy")


def greedy_decode(
    decoder, image_tokens, image_mask, prefix_ids, num_tokens, allowed_ids=None, pad_id=0,
    image_positions=None,
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
        image_positions: (B, N, 2) centres of the image tokens' patches, for a decoder with
            `image_position_codes` (the vision encoder's `token_positions`).

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
    if num_tokens == 0:
        return np.zeros((len(lengths), 0), "int32")
    if allowed_ids is not None:
        allowed_ids = tuple(np.asarray(allowed_ids, "int64").tolist())
    inputs = {"buffer": buffer, "lengths": lengths, "image_tokens": image_tokens}
    if image_mask is not None:
        inputs["image_mask"] = image_mask
    if image_positions is not None:
        inputs["image_positions"] = image_positions
    model = _compiled(decoder, num_tokens, allowed_ids)
    return np.asarray(model.predict_on_batch(inputs), "int32")


def parallel_decode(
    decoder, image_tokens, image_mask, prefix_ids, num_tokens, mask_id, allowed_ids=None,
    pad_id=0, image_positions=None,
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
        buffer, image_tokens, image_mask=image_mask, causal=np.zeros(len(buffer), "int32"),
        image_positions=image_positions,
    )
    positions = lengths[:, None] + np.arange(num_tokens)[None]
    at_targets = ops.take_along_axis(logits, ops.convert_to_tensor(positions)[..., None], axis=1)
    allowed = _allowed_mask(decoder.vocabulary_size, allowed_ids)
    return ops.convert_to_numpy(_argmax(at_targets, allowed))
