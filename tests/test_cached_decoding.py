"""Cached greedy decoding gives the tokens of full causal passes, random and trained decoders."""

import numpy as np
import pytest

import keras
from keras import ops
from keras_siglip2.evaluation import greedy_decode
from keras_siglip2.evaluation.referring import aref_prefix_ids
from keras_siglip2.locca_targets import make_locca_example
from keras_siglip2.losses.captioning import token_cross_entropy
from keras_siglip2.models.locca_decoder import LocCaDecoder
from test_evaluation import DECODER_LENGTH, VOCAB, _hand_greedy

# Tiny torch ops run much slower on a loaded 2-core machine with a thread per core.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

IMAGE_WIDTH = 24  # ≠ hidden_dim: the cache holds the projected image tokens' keys/values.
LOCATION_IDS = list(range(VOCAB.location_offset, VOCAB.mask_id))
# Referring prompts (text + eos) of 0 to 4 tokens: prefixes of 1 to 5 of the 10 positions.
PROMPTS = np.array([[5, 6, 1, 0, 0], [7, 8, 9, 10, 1], [1, 0, 0, 0, 0], [3, 1, 0, 0, 0]])


def _decoder():
    keras.utils.set_random_seed(0)
    return LocCaDecoder(
        vocabulary_size=VOCAB.size, sequence_length=DECODER_LENGTH, hidden_dim=16,
        num_layers=2, num_heads=2, intermediate_dim=32,
    )


def _trained_decoder(images, steps=12):
    """A decoder after a few Adam steps on captions and boxes, so its logits are peaked."""
    rng = np.random.default_rng(1)
    examples = [
        make_locca_example(
            ("cap", "aref")[i % 2], rng.integers(2, 20, rng.integers(2, 6)),
            np.sort(rng.uniform(0, 1, 4)), rng.integers(2, 20, 3), True, VOCAB, DECODER_LENGTH,
        )
        for i in range(len(images))
    ]
    stack = lambda key: np.stack([ex[key] for ex in examples])  # noqa: E731
    decoder = _decoder()
    tokens = keras.Input((DECODER_LENGTH,), dtype="int32")
    image = keras.Input(images.shape[1:])
    model = keras.Model([tokens, image], decoder(tokens, image))

    def loss(y, logits):  # y packs (targets, loss mask) on the last axis.
        return token_cross_entropy(logits, ops.cast(y[..., 0], "int32"), y[..., 1])

    model.compile(keras.optimizers.Adam(1e-2), loss=loss)
    x = [stack("decoder_input_ids"), images]
    y = np.stack([stack("decoder_target_ids"), stack("decoder_loss_mask")], -1)
    losses = [float(model.train_on_batch(x, y.astype("float32"))) for _ in range(steps)]
    assert losses[-1] < losses[0]
    return decoder


def _inputs():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 6, IMAGE_WIDTH)).astype("float32")
    mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0]])
    return images, mask


def _assert_cached_equals_uncached(decoder, images, mask):
    captions = [[VOCAB.cap_id]] * 4
    caption_prefix = np.full((4, 1), VOCAB.cap_id, "int32")
    box_prefix = aref_prefix_ids(PROMPTS, VOCAB, DECODER_LENGTH)
    box_prefixes = [[int(t) for t in row if t != VOCAB.pad_id] for row in box_prefix]
    for image_mask in (None, mask):
        got = greedy_decode(decoder, images, image_mask, caption_prefix, DECODER_LENGTH - 1)
        expected = _hand_greedy(decoder, images, image_mask, captions, DECODER_LENGTH - 1)
        np.testing.assert_array_equal(got, expected)
        got = greedy_decode(decoder, images, image_mask, box_prefix, 4, LOCATION_IDS)
        expected = _hand_greedy(decoder, images, image_mask, box_prefixes, 4, LOCATION_IDS)
        np.testing.assert_array_equal(got, expected)
    return got


def test_cached_greedy_equals_full_passes_on_a_random_decoder():
    _assert_cached_equals_uncached(_decoder(), *_inputs())


def test_cached_greedy_equals_full_passes_on_a_trained_decoder():
    images, mask = _inputs()
    decoder = _trained_decoder(images)
    boxes = _assert_cached_equals_uncached(decoder, images, mask)
    assert np.isin(boxes, LOCATION_IDS).all()
    # Retrained weights reach the compiled decoding (no stale copy of the first ones).
    before = greedy_decode(decoder, images, None, np.full((4, 1), VOCAB.cap_id), 8)
    decoder.set_weights([w * 1.5 for w in decoder.get_weights()])
    after = greedy_decode(decoder, images, None, np.full((4, 1), VOCAB.cap_id), 8)
    captions = [[VOCAB.cap_id]] * 4
    np.testing.assert_array_equal(after, _hand_greedy(decoder, images, None, captions, 8))
    assert (after != before).any()


def test_cached_greedy_passes_the_image_positions_to_a_decoder_with_position_codes():
    keras.utils.set_random_seed(0)
    decoder = LocCaDecoder(
        vocabulary_size=VOCAB.size, sequence_length=DECODER_LENGTH, hidden_dim=16,
        num_layers=2, num_heads=2, intermediate_dim=32, image_position_codes=True,
    )
    images, mask = _inputs()
    positions = np.random.default_rng(3).uniform(0, 1, (*images.shape[:2], 2))
    prefix = aref_prefix_ids(PROMPTS, VOCAB, DECODER_LENGTH)
    prefixes = [[int(t) for t in row if t != VOCAB.pad_id] for row in prefix]
    got = greedy_decode(decoder, images, mask, prefix, 4, LOCATION_IDS,
                        image_positions=positions)
    placed = lambda *args, **kwargs: decoder(*args, image_positions=positions, **kwargs)  # noqa: E731
    np.testing.assert_array_equal(got, _hand_greedy(placed, images, mask, prefixes, 4,
                                                    LOCATION_IDS))


def test_cache_steps_give_the_full_pass_logits():
    decoder, (images, mask) = _decoder(), _inputs()
    tokens = np.random.default_rng(2).integers(0, VOCAB.size, (4, DECODER_LENGTH))
    full = ops.convert_to_numpy(decoder(tokens, images, image_mask=mask))
    logits, cache = decoder.build_cache(tokens, images, mask)
    np.testing.assert_allclose(ops.convert_to_numpy(logits), full, atol=1e-5)
    # Position 6 rewritten at slot 9 (the slot order does not matter), slots 6-8 masked.
    keep = (np.arange(DECODER_LENGTH) < 6) | (np.arange(DECODER_LENGTH) == 9)
    step, cache = decoder.call_with_cache(
        tokens[:, 6:7], np.full((4, 1), 6), cache, 9, np.broadcast_to(keep, (4, 1, 10))
    )
    np.testing.assert_allclose(ops.convert_to_numpy(step)[:, 0], full[:, 6], atol=1e-5)
    keys_values = ops.convert_to_numpy(cache["keys_values"][0])
    np.testing.assert_allclose(keys_values[:, :, 9], keys_values[:, :, 6], atol=1e-6)
