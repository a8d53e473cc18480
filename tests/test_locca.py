"""LocCa decoder, its token cross-entropy and the LocCa example builders."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import value_and_grad

import keras
from keras import ops
from keras_siglip2.locca_targets import (
    TASKS,
    LocCaVocabulary,
    locca_map_fn,
    make_locca_example,
    sample_locca_example,
    strip_text_ids,
)
from keras_siglip2.losses.captioning import token_cross_entropy
from keras_siglip2.models.locca_decoder import LocCaDecoder

TINY = dict(
    vocabulary_size=40, sequence_length=8, hidden_dim=16, num_layers=2, num_heads=2,
    intermediate_dim=32,
)


# Tiny torch ops run much slower on a loaded 2-core machine with a thread per core.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_decoder(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return LocCaDecoder(**{**TINY, **kwargs})


def np_logits(decoder, *args, **kwargs):
    return ops.convert_to_numpy(decoder(*args, **kwargs))


@pytest.mark.parametrize("image_width", [16, 24])
def test_decoder_shapes_dtypes_and_config(rng, image_width):
    decoder = tiny_decoder()
    tokens = rng.integers(0, 40, (2, 8)).astype("int32")
    image = rng.normal(size=(2, 5, image_width)).astype("float32")
    logits = decoder(tokens, image, causal=np.array([1, 0]))
    assert tuple(logits.shape) == (2, 8, 40)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert (decoder.image_projection is None) == (image_width == 16)
    # Shorter inputs use the first positions of the position table.
    assert tuple(decoder(tokens[:, :5], image).shape) == (2, 5, 40)
    clone = LocCaDecoder.from_config(decoder.get_config())
    clone(tokens, image)
    clone.set_weights(decoder.get_weights())
    np.testing.assert_allclose(np_logits(clone, tokens, image), np_logits(decoder, tokens, image))


def test_decoder_saves_and_loads_with_its_image_projection(rng, tmp_path):
    decoder = tiny_decoder(num_layers=1)
    tokens, image = keras.Input((8,), dtype="int32"), keras.Input((5, 24))
    causal = keras.Input((), dtype="int32")
    model = keras.Model([tokens, image, causal], decoder(tokens, image, causal=causal))
    x = [rng.integers(0, 40, (2, 8)), rng.normal(size=(2, 5, 24)), np.array([1, 0])]
    model.save(tmp_path / "decoder.keras")
    loaded = keras.saving.load_model(tmp_path / "decoder.keras")
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)), atol=1e-6
    )


def test_causal_attention_is_causal_per_example(rng):
    decoder = tiny_decoder()
    tokens = rng.integers(0, 40, (2, 8)).astype("int32")
    image = rng.normal(size=(2, 5, 16)).astype("float32")
    changed = tokens.copy()
    changed[:, 5] = (changed[:, 5] + 7) % 40
    causal = np.array([1, 0])
    before = np_logits(decoder, tokens, image, causal=causal)
    after = np_logits(decoder, changed, image, causal=causal)
    np.testing.assert_allclose(after[0, :5], before[0, :5], atol=1e-6)  # causal: past untouched
    assert np.abs(after[0, 5:] - before[0, 5:]).max() > 1e-3
    assert np.abs(after[1, :5] - before[1, :5]).min() > 0  # bidirectional: every position moves
    assert np.abs(after[1, :5] - before[1, :5]).max() > 1e-3
    np.testing.assert_allclose(
        np_logits(decoder, tokens, image), np_logits(decoder, tokens, image, causal=[1, 1]),
        atol=1e-6,
    )


def test_cross_attention_ignores_masked_image_tokens(rng):
    decoder = tiny_decoder()
    tokens = rng.integers(0, 40, (2, 8)).astype("int32")
    image = rng.normal(size=(2, 5, 24)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    garbage = np.where(mask[..., None] > 0, image, rng.normal(size=image.shape) * 1e3)
    garbage = garbage.astype("float32")
    clean = np_logits(decoder, tokens, image, image_mask=mask, causal=[1, 0])
    noisy = np_logits(decoder, tokens, garbage, image_mask=mask, causal=[1, 0])
    np.testing.assert_allclose(noisy, clean, atol=1e-5)
    unmasked = np_logits(decoder, tokens, garbage) - np_logits(decoder, tokens, image)
    assert np.abs(unmasked).max() > 1e-2


def test_mixed_bfloat16_gives_finite_float32_logits(rng):
    tokens = rng.integers(0, 40, (2, 8)).astype("int32")
    image = rng.normal(size=(2, 5, 24)).astype("float32")
    full = tiny_decoder()
    mixed = tiny_decoder(dtype="mixed_bfloat16")
    reference = np_logits(full, tokens, image, causal=[1, 0])
    mixed(tokens, image)
    mixed.set_weights(full.get_weights())
    logits = mixed(tokens, image, image_mask=np.ones((2, 5)), causal=[1, 0])
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    logits = ops.convert_to_numpy(logits)
    assert np.isfinite(logits).all()
    assert np.abs(logits - reference).max() < 0.05 * np.abs(reference).max()


def np_token_cross_entropy(logits, targets, mask):
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    counts = mask.sum(-1)
    return (nll * mask).sum(-1) / np.maximum(counts, 1), nll


def test_token_cross_entropy_matches_numpy_values_and_gradient(rng):
    logits = rng.normal(size=(3, 5, 7)).astype("float32") * 3
    targets = rng.integers(0, 7, (3, 5)).astype("int32")
    mask = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], "float32")
    expected, nll = np_token_cross_entropy(logits.astype("float64"), targets, mask)
    got = ops.convert_to_numpy(token_cross_entropy(logits, targets, mask))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got[1] == 0.0
    mean = token_cross_entropy(logits, targets, mask, reduction="mean")
    np.testing.assert_allclose(ops.convert_to_numpy(mean), expected.mean(), rtol=1e-5)
    token_mean = token_cross_entropy(logits, targets, mask, reduction="token_mean")
    np.testing.assert_allclose(
        ops.convert_to_numpy(token_mean), (nll * mask).sum() / mask.sum(), rtol=1e-5
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(token_cross_entropy(logits, targets)), nll.mean(-1), rtol=1e-5
    )
    with pytest.raises(ValueError, match="reduction"):
        token_cross_entropy(logits, targets, mask, reduction="sum")

    value, (grad,) = value_and_grad(
        lambda x: token_cross_entropy(x, targets, mask, reduction="mean"), logits
    )
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    weights = mask / np.maximum(mask.sum(-1, keepdims=True), 1) / len(mask)
    expected_grad = weights[..., None] * (probs - np.eye(7)[targets])
    np.testing.assert_allclose(value, expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6)
    assert np.all(grad[1] == 0)


def test_box_quantisation_round_trip(rng):
    vocab = LocCaVocabulary(text_vocabulary_size=1000, num_location_bins=100)
    assert (vocab.size, vocab.mask_id, vocab.task_ids) == (1104, 1100, (1101, 1102, 1103))
    boxes = np.concatenate([rng.uniform(size=(50, 4)), [[0, 0, 1, 1], [0.005, 0.01, 0.995, 0.999]]])
    ids = vocab.encode_box(boxes)
    assert ids.dtype == np.int32 and ids.min() >= 1000 and ids.max() < 1100
    assert np.abs(vocab.decode_box(ids) - boxes).max() <= 0.5 / 100 + 1e-6
    assert isinstance(vocab.encode_box(tf.constant(boxes)), tf.Tensor)


# V_text 10, 4 bins: locations 10-13, [MASK] 14, [CAP] 15, [AREF] 16, [GCAP] 17; eos 1, pad 0.
# Box (0, .3, .6, 1) → bins (0, 1, 2, 3) → ids 10 11 12 13. (input, target, loss mask).
LAYOUTS = {
    ("cap", 1, 10): (
        [15, 5, 6, 7, 0, 0, 0, 0, 0, 0], [5, 6, 7, 1, 0, 0, 0, 0, 0, 0], [0, 3]),
    ("cap", 0, 10): (
        [15, 14, 14, 14, 14, 0, 0, 0, 0, 0], [0, 5, 6, 7, 1, 0, 0, 0, 0, 0], [1, 4]),
    ("aref", 1, 10): (
        [16, 8, 9, 10, 11, 12, 13, 0, 0, 0], [8, 9, 10, 11, 12, 13, 1, 0, 0, 0], [2, 6]),
    ("aref", 0, 10): (
        [16, 8, 9, 14, 14, 14, 14, 14, 0, 0], [0, 0, 0, 10, 11, 12, 13, 1, 0, 0], [3, 7]),
    ("gcap", 1, 10): (
        [17, 10, 11, 12, 13, 8, 9, 0, 0, 0], [10, 11, 12, 13, 8, 9, 1, 0, 0, 0], [4, 6]),
    ("gcap", 0, 10): (
        [17, 10, 11, 12, 13, 14, 14, 14, 0, 0], [0, 0, 0, 0, 0, 8, 9, 1, 0, 0], [5, 7]),
    # Truncated to T = 7: the caption keeps T - 2 tokens, the region caption T - 6.
    ("cap", 1, 7): ([15, 2, 3, 4, 5, 6, 0], [2, 3, 4, 5, 6, 1, 0], [0, 5]),
    ("cap", 0, 7): ([15, 14, 14, 14, 14, 14, 14], [0, 2, 3, 4, 5, 6, 1], [1, 6]),
    ("aref", 1, 7): ([16, 2, 10, 11, 12, 13, 0], [2, 10, 11, 12, 13, 1, 0], [1, 5]),
    ("aref", 0, 7): ([16, 2, 14, 14, 14, 14, 14], [0, 0, 10, 11, 12, 13, 1], [2, 6]),
    ("gcap", 1, 7): ([17, 10, 11, 12, 13, 2, 0], [10, 11, 12, 13, 2, 1, 0], [4, 5]),
    ("gcap", 0, 7): ([17, 10, 11, 12, 13, 14, 14], [0, 0, 0, 0, 0, 2, 1], [5, 6]),
}
SMALL_VOCAB = LocCaVocabulary(text_vocabulary_size=10, num_location_bins=4)
BOX = [0.0, 0.3, 0.6, 1.0]


def layout_inputs(length):
    if length == 10:
        return [5, 6, 7], [8, 9]
    return list(range(2, 10)), list(range(2, 10))


@pytest.mark.parametrize("task,causal,length", list(LAYOUTS))
def test_example_layouts(task, causal, length):
    inputs, targets, (start, stop) = LAYOUTS[task, causal, length]
    loss_mask = [float(start <= i <= stop) for i in range(length)]
    caption, region = layout_inputs(length)
    args = (caption, BOX, region)
    ex = make_locca_example(task, *args, bool(causal), SMALL_VOCAB, length)
    assert ex["decoder_input_ids"].tolist() == inputs
    assert ex["decoder_target_ids"].tolist() == targets
    assert ex["decoder_loss_mask"].tolist() == loss_mask
    assert (int(ex["decoder_causal"]), int(ex["decoder_task"])) == (causal, TASKS.index(task))
    # Same result in graph mode with the task and mode as tensors (as inside Dataset.map).
    graph = tf.function(
        lambda t, c: make_locca_example(t, *map(tf.constant, args), c, SMALL_VOCAB, length)
    )(tf.constant(TASKS.index(task)), tf.constant(causal))
    for key, value in graph.items():
        np.testing.assert_array_equal(value.numpy(), ex[key])
        assert value.shape == ex[key].shape


def test_example_validation_and_strip():
    assert strip_text_ids(np.array([5, 7, 1, 0, 0])).tolist() == [5, 7]
    with pytest.raises(ValueError, match="at least 6"):
        make_locca_example("aref", [], BOX, [3], True, SMALL_VOCAB, 5)


def toy_dataset(num_examples=48, seed=0):
    rng = np.random.default_rng(seed)
    features = []
    for i in range(num_examples):
        k = 0 if i % 4 == 0 else int(rng.integers(1, 4))
        lo = rng.uniform(0, 0.5, (k, 2))
        features.append({
            "caption_ids": np.pad(rng.integers(2, 10, 5), (0, 3)).astype("int32"),
            "boxes": np.concatenate([lo, lo + rng.uniform(0, 0.5, (k, 2))], 1).astype("float32"),
            "region_ids": np.pad(rng.integers(2, 10, (k, 3)), ((0, 0), (0, 2))).astype("int32"),
        })
    signature = {
        "caption_ids": tf.TensorSpec([8], tf.int32),
        "boxes": tf.TensorSpec([None, 4], tf.float32),
        "region_ids": tf.TensorSpec([None, 5], tf.int32),
    }
    return tf.data.Dataset.from_generator(lambda: iter(features), output_signature=signature)


def run_sampler(seed):
    fn = locca_map_fn(SMALL_VOCAB, 12, seed=seed)
    ds = toy_dataset().enumerate().map(fn, num_parallel_calls=2, deterministic=True)
    return [tf.nest.map_structure(lambda t: t.numpy(), ex) for ex in ds]


def test_tf_data_sampler_is_deterministic_and_covers_tasks_and_modes():
    first, again, other = run_sampler(3), run_sampler(3), run_sampler(4)
    key = lambda exs: [  # noqa: E731
        (ex["decoder_input_ids"].tolist(), ex["decoder_target_ids"].tolist()) for ex in exs
    ]
    assert key(first) == key(again) and key(first) != key(other)
    tasks = [int(ex["decoder_task"]) for ex in first]
    assert set(tasks) == {0, 1, 2} and {int(ex["decoder_causal"]) for ex in first} == {0, 1}
    for ex in first:
        assert ex["decoder_input_ids"].shape == (12,) and ex["decoder_loss_mask"].sum() > 0
        if len(ex["boxes"]) == 0:
            assert int(ex["decoder_task"]) == 0
        if int(ex["decoder_task"]) == 1:  # AREF targets decode to one of the image's boxes.
            box_ids = ex["decoder_target_ids"][ex["decoder_loss_mask"] > 0][:4]
            error = np.abs(SMALL_VOCAB.decode_box(box_ids) - ex["boxes"]).max(-1)
            assert error.min() <= 0.5 / 4 + 1e-6
    # Ragged region captions and eager numpy inputs work too, giving numpy results.
    ragged = sample_locca_example(
        tf.constant([5, 6, 1]), tf.constant([[0.1, 0.1, 0.4, 0.4]]),
        tf.ragged.constant([[7, 8, 9, 1]]), [0, 1], SMALL_VOCAB, 12,
    )
    assert ragged["decoder_input_ids"].shape == (12,)
    eager = sample_locca_example([5, 6, 1], np.zeros((0, 4)), np.zeros((0, 2)), [0, 1],
                                 SMALL_VOCAB, 12)
    assert isinstance(eager["decoder_input_ids"], np.ndarray)
    assert eager["decoder_target_ids"][eager["decoder_loss_mask"] > 0].tolist() == [5, 6, 1]


def _drawn_tasks(boxes, count, **kwargs):
    """The task `sample_locca_example` draws for seeds (7, 0) … (7, count - 1)."""
    regions = [[7, 8, 1], [9, 1, 0]][: len(boxes)]
    draw = lambda i: sample_locca_example(  # noqa: E731
        [5, 6, 1, 0], tf.reshape(tf.constant(boxes, tf.float32), [-1, 4]),
        tf.reshape(tf.constant(regions, tf.int32), [-1, 3]), tf.stack([7, tf.cast(i, tf.int32)]),
        SMALL_VOCAB, 12, **kwargs,
    )["decoder_task"]
    return np.concatenate(list(tf.data.Dataset.range(count).map(draw).batch(count)))


def test_task_weights_set_the_odds_of_the_drawn_task():
    boxes = [[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.9]]
    shares = np.bincount(_drawn_tasks(boxes, 4000, task_weights=(1, 2, 1)), minlength=3) / 4000
    np.testing.assert_allclose(shares, [0.25, 0.5, 0.25], atol=0.03)
    assert set(_drawn_tasks(boxes, 300, task_weights=(0, 1, 1)).tolist()) == {1, 2}
    assert set(_drawn_tasks(boxes, 300, task_weights=[0, 0, 5]).tolist()) == {2}
    # An image without boxes gets captioning whatever the weights.
    assert set(_drawn_tasks([], 100, task_weights=(0, 1, 1)).tolist()) == {0}


def test_uniform_task_draws_are_those_of_runs_from_before_task_weights():
    # The tasks drawn for these seeds by the sampler before `task_weights` existed (commit
    # 8a17a9c): a run started then resumes to the same stream.
    before = [int(t) for t in "200212220222100201222211210112010221222121221222121201101201"]
    boxes = [[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.9]]
    assert _drawn_tasks(boxes, 60).tolist() == before
    assert _drawn_tasks(boxes, 60, task_weights=(1, 1, 1)).tolist() == before


@pytest.mark.parametrize("weights", [(1, 2), (1, -1, 1), (0, 0, 0), (1, float("nan"), 1), "121"])
def test_bad_task_weights_are_refused(weights):
    with pytest.raises(ValueError, match="task_weights must be three finite numbers >= 0"):
        sample_locca_example([5, 1], [[0, 0, 1, 1]], [[7, 1]], [0, 1], SMALL_VOCAB, 8,
                             task_weights=weights)


@pytest.mark.parametrize("choices", [dict(all_tasks=True, task_weights=(1, 2, 1)),
                                     dict(task=1, task_weights=(1, 2, 1)),
                                     dict(all_tasks=True, task=0)])
def test_all_tasks_task_weights_and_task_are_one_at_a_time(choices):
    with pytest.raises(ValueError, match="all_tasks, task_weights and task each choose"):
        sample_locca_example([5, 1], [[0, 0, 1, 1]], [[7, 1]], [0, 1], SMALL_VOCAB, 8,
                             **choices)


def test_a_given_task_is_the_examples_task_and_needs_boxes_to_be_learnt():
    for task in (0, 1, 2, tf.constant(1), tf.constant(2)):
        for boxes, regions in (([[0.1, 0.2, 0.5, 0.6]], [[7, 8, 1]]), ([], np.zeros([0, 3]))):
            ex = sample_locca_example([5, 6, 1], np.reshape(boxes, (-1, 4)), regions, [0, 4],
                                      SMALL_VOCAB, 12, task=task)
            assert int(ex["decoder_task"]) == int(task)
            learnt = float(np.asarray(ex["decoder_loss_mask"]).sum())
            assert (learnt > 0) == (len(boxes) > 0 or int(task) == 0)


def test_all_tasks_gives_one_example_of_each_task_per_image():
    examples = [tf.nest.map_structure(lambda t: t.numpy(), ex) for ex in toy_dataset()]
    seen_causal = set()
    for i, ex in enumerate(examples):
        args = (ex["caption_ids"], ex["boxes"], ex["region_ids"], [3, i], SMALL_VOCAB, 12)
        rows = sample_locca_example(*args, all_tasks=True)
        assert rows["decoder_input_ids"].shape == (3, 12)
        assert rows["decoder_task"].tolist() == [0, 1, 2]
        again = sample_locca_example(*args, all_tasks=True)
        for key in rows:
            np.testing.assert_array_equal(rows[key], again[key])
        seen_causal.update(rows["decoder_causal"].tolist())
        caption = rows["decoder_target_ids"][0][rows["decoder_loss_mask"][0] > 0]
        assert caption.tolist() == [t for t in ex["caption_ids"].tolist() if t > 1] + [1]
        has_boxes = len(ex["boxes"]) > 0
        # AREF and GCAP rows teach something exactly when the image has a box.
        assert (rows["decoder_loss_mask"][1:].sum(-1) > 0).tolist() == [has_boxes] * 2
        if has_boxes:  # the AREF row's target decodes to one of the image's boxes
            box_ids = rows["decoder_target_ids"][1][rows["decoder_loss_mask"][1] > 0][:4]
            error = np.abs(SMALL_VOCAB.decode_box(box_ids) - ex["boxes"]).max(-1)
            assert error.min() <= 0.5 / 4 + 1e-6
    assert seen_causal == {0, 1}


def test_tiny_decoder_learns_captions():
    vocab = LocCaVocabulary(text_vocabulary_size=24, num_location_bins=8)
    rng = np.random.default_rng(0)
    batch = 8
    examples = [
        make_locca_example(
            "cap", rng.integers(2, 24, rng.integers(3, 7)), None, None, i % 2, vocab, 10
        )
        for i in range(batch)
    ]
    stack = lambda key: np.stack([ex[key] for ex in examples])  # noqa: E731
    image = rng.normal(size=(batch, 4, 16)).astype("float32")
    keras.utils.set_random_seed(0)
    decoder = LocCaDecoder(vocab.size, 10, 32, 1, 4, 64)
    inputs = {
        "token_ids": keras.Input(name="token_ids", shape=(10,), dtype="int32"),
        "image": keras.Input(name="image", shape=(4, 16)),
        "causal": keras.Input(name="causal", shape=(), dtype="int32"),
    }
    model = keras.Model(
        inputs, decoder(inputs["token_ids"], inputs["image"], causal=inputs["causal"])
    )

    def loss(y, logits):  # y packs (targets, loss mask) on the last axis.
        return token_cross_entropy(logits, ops.cast(y[..., 0], "int32"), y[..., 1])

    model.compile(keras.optimizers.Adam(5e-3), loss=loss)
    x = {"token_ids": stack("decoder_input_ids"), "image": image, "causal": stack("decoder_causal")}
    y = np.stack([stack("decoder_target_ids"), stack("decoder_loss_mask")], -1).astype("float32")
    losses = [float(model.train_on_batch(x, y)) for _ in range(30)]
    assert losses[0] > 2.5 and losses[-1] < losses[0] / 10, losses



def test_position_codes_let_the_decoder_tell_image_tokens_apart_by_place(rng):
    tokens = rng.integers(0, 40, (2, 8)).astype("int32")
    image = rng.normal(size=(2, 5, 24)).astype("float32")
    positions = rng.uniform(0, 1, (2, 5, 2)).astype("float32")
    order = np.array([3, 0, 4, 1, 2])
    # Cross-attention alone cannot see where a token is: reordering the tokens changes nothing.
    plain = tiny_decoder()
    np.testing.assert_allclose(np_logits(plain, tokens, image[:, order]),
                               np_logits(plain, tokens, image), atol=1e-5)
    coded = tiny_decoder(image_position_codes=True)
    logits = np_logits(coded, tokens, image, image_positions=positions)
    # Tokens and their places reordered together: the same set, the same logits.
    np.testing.assert_allclose(
        np_logits(coded, tokens, image[:, order], image_positions=positions[:, order]),
        logits, atol=1e-5)
    # The same tokens at other places: other logits.
    moved = np_logits(coded, tokens, image, image_positions=positions[:, order])
    assert np.abs(moved - logits).max() > 1e-3
    clone = LocCaDecoder.from_config(coded.get_config())
    clone(tokens, image, image_positions=positions)
    clone.set_weights(coded.get_weights())
    np.testing.assert_allclose(np_logits(clone, tokens, image, image_positions=positions),
                               logits, atol=1e-6)
    assert len(coded.weights) == len(plain.weights)  # the codes are fixed, not learned
    with pytest.raises(ValueError, match="pass image_positions"):
        coded(tokens, image)
    with pytest.raises(ValueError, match="hidden_dim divisible by 4; got 18"):
        tiny_decoder(hidden_dim=18, image_position_codes=True)


def test_locca_term_reads_every_task_of_an_image_from_one_tower_pass(rng):
    from keras_siglip2.models.loss_terms import LocCaTerm, StudentPass
    from keras_siglip2.testing import toy_backbone

    keras.utils.set_random_seed(0)
    backbone = toy_backbone()  # 16 px images in 8 px patches: 4 tokens of width 8
    decoder = tiny_decoder(image_position_codes=True)
    term = LocCaTerm(decoder, image_width=8, loss_weights={"locca_loss": 1.0})
    batch = {
        "images": rng.uniform(-1, 1, (2, 16, 16, 3)).astype("float32"),
        "decoder_input_ids": rng.integers(2, 40, (2, 3, 8)).astype("int32"),
        "decoder_target_ids": rng.integers(2, 40, (2, 3, 8)).astype("int32"),
        "decoder_loss_mask": (rng.uniform(size=(2, 3, 8)) < 0.6).astype("float32"),
        "decoder_causal": np.array([[1, 0, 1], [0, 1, 1]], "int32"),
    }
    student = StudentPass.of(backbone, batch)
    got = float(ops.convert_to_numpy(term.losses_of(batch, student)["locca_loss"]))
    # Each (image, task) row on its own, against its own image's tokens and places.
    tokens = ops.convert_to_numpy(student.image["sequence_output"])
    places = ops.convert_to_numpy(student.token_positions)
    losses = []
    for b in range(2):
        for k in range(3):
            logits = np_logits(decoder, batch["decoder_input_ids"][b, k][None], tokens[b][None],
                               causal=batch["decoder_causal"][b, k][None],
                               image_positions=places[b][None])[0]
            logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
                -1, keepdims=True)) - logits.max(-1, keepdims=True)
            ce = -logp[np.arange(8), batch["decoder_target_ids"][b, k]]
            mask = batch["decoder_loss_mask"][b, k]
            losses.append((ce * mask).sum() / max(mask.sum(), 1e-9))
    np.testing.assert_allclose(got, np.mean(losses), rtol=1e-5)


def test_locca_term_gives_the_same_loss_on_length_groups(rng):
    from keras_siglip2.models.loss_terms import LocCaTerm, StudentPass
    from keras_siglip2.testing import toy_backbone

    keras.utils.set_random_seed(0)
    backbone = toy_backbone()
    term = LocCaTerm(tiny_decoder(image_position_codes=True), image_width=8,
                     loss_weights={"locca_loss": 1.0})
    lengths = np.array([8, 7, 3, 5, 2])  # rows 2 … 4 fit in 5 positions
    filled = np.arange(8)[None] < lengths[:, None]
    batch = {
        "images": rng.uniform(-1, 1, (5, 16, 16, 3)).astype("float32"),
        "decoder_input_ids": np.where(filled, rng.integers(2, 40, (5, 8)), 0).astype("int32"),
        "decoder_target_ids": np.where(filled, rng.integers(2, 40, (5, 8)), 0).astype("int32"),
        "decoder_loss_mask": (filled & (rng.uniform(size=(5, 8)) < 0.8)).astype("float32"),
        "decoder_causal": np.ones(5, "int32"),
    }
    student = StudentPass.of(backbone, batch)
    grouped = {k: (v[:2], v[2:, :5] if v.ndim == 2 else v[2:]) if k.startswith("decoder_")
               else v for k, v in batch.items()}
    losses = [float(ops.convert_to_numpy(term.losses_of(b, student)["locca_loss"]))
              for b in (batch, grouped)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
    short = {k: (v[:2], v[2:4]) if k.startswith("decoder_") else v for k, v in batch.items()}
    with pytest.raises(ValueError, match="length groups hold 4 rows for a batch of 5 images"):
        term.losses_of(short, student)
