"""Evaluators: zero-shot, retrieval, LocCa decoding and referring boxes, the linear probes."""

import functools

import numpy as np
import pytest
import tensorflow as tf

import keras
from keras import ops

from conftest import TINY_TEXT, naflex_batch, tiny_backbone
from keras_siglip2.evaluation import (
    box_iou,
    dense_probe_miou,
    fit_ridge_classifier,
    greedy_decode,
    linear_probe_accuracy,
    mean_iou,
    numpy_batches,
    parallel_decode,
    patch_labels,
    recall_at_k,
    referring_box_iou,
    retrieval_recall,
    zero_shot_accuracy,
    zero_shot_classifier,
)
from keras_siglip2.evaluation.batches import encode_image_batch, encode_text_batch
from keras_siglip2.evaluation import referring
from keras_siglip2.evaluation.referring import aref_prefix_ids
from keras_siglip2.locca_targets import LocCaVocabulary, make_locca_example
from keras_siglip2.models.locca_decoder import LocCaDecoder

VOCAB = LocCaVocabulary(TINY_TEXT["vocabulary_size"], num_location_bins=8)
DECODER_LENGTH = 10


# Tiny torch ops run much slower on a loaded 2-core machine with a thread per core.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _l2(x):
    x = np.asarray(x, "float32")
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-8)


class FakeBackbone:
    """Towers with known outputs: `images` (B, N, D) are the patch tokens (embedding: their
    normalised mean), a text's embedding is `text_table[its first token id]`, normalised."""

    is_naflex = False

    def __init__(self, text_table=None):
        self.text_table = np.asarray(text_table, "float32") if text_table is not None else None

    def image_inputs(self, batch):
        return batch["images"]

    def encode_images(self, images, return_tokens=False):
        tokens = np.asarray(images)
        embeddings = _l2(tokens.mean(axis=1))
        return {"embeddings": embeddings, "tokens": tokens} if return_tokens else embeddings

    def encode_text(self, token_ids):
        return _l2(self.text_table[np.asarray(token_ids)[:, 0]])


def _unit(degrees):
    radians = np.deg2rad(np.asarray(degrees, "float64"))
    return np.stack([np.cos(radians), np.sin(radians)], -1).astype("float32")


def _np(x):
    return ops.convert_to_numpy(x)


@functools.cache
def _backbone(naflex):
    """One tiny backbone per tower kind, so its predict functions compile once per shape."""
    return tiny_backbone(naflex)


def _images(naflex, seed=0):
    """Three images in the tower's input format (always one shape per tower kind)."""
    if naflex:
        return naflex_batch([(2, 3), (4, 4), (3, 3)], 16, seed=seed)
    rng = np.random.default_rng(seed)
    return {"images": rng.uniform(-1, 1, (3, 32, 32, 3)).astype("float32")}


def _reference_embeddings(backbone, images, token_ids):
    """Image and text embeddings from the whole backbone's graph (3 of each)."""
    out = backbone.predict_on_batch({**images, "token_ids": token_ids})
    return out["image_embeddings"], out["text_embeddings"]


# Batches and the shared helpers.


def test_numpy_batches_reads_datasets_and_iterables():
    data = {"label": np.arange(5), "x": np.ones((5, 2), "float32")}
    batches = list(numpy_batches(tf.data.Dataset.from_tensor_slices(data).batch(2)))
    assert [b["label"].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert isinstance(batches[0]["x"], np.ndarray)
    tensors = [{"label": ops.convert_to_tensor(np.array([7, 8]))}]
    assert next(numpy_batches(tensors))["label"].tolist() == [7, 8]
    with pytest.raises(TypeError, match="dicts"):
        list(numpy_batches([np.zeros(3)]))


@pytest.mark.parametrize("naflex", [False, True])
def test_image_helpers_match_the_backbone(naflex):
    backbone = _backbone(naflex)
    batch = {**_images(naflex), "label": np.array([0, 1, 2])}
    inputs = backbone.image_inputs(batch)
    if naflex:
        assert sorted(inputs) == ["patch_coords", "patch_mask", "patches", "spatial_shapes"]
    else:
        assert inputs is batch["images"]
    out = encode_image_batch(backbone, batch)
    assert out["tokens"].shape == (3, 16, 16)
    expected_mask = batch["patch_mask"].astype(bool) if naflex else np.ones((3, 16), bool)
    np.testing.assert_array_equal(out["token_mask"], expected_mask)
    with pytest.raises(KeyError, match="NaFlex" if naflex else "images"):
        backbone.image_inputs({"label": batch["label"]})
    # Texts go 2 at a time, the last chunk padded: the same as the backbone's embeddings.
    token_ids = np.random.default_rng(1).integers(2, 64, (3, 8)).astype("int32")
    image_embeddings, text_embeddings = _reference_embeddings(
        backbone, _images(naflex), token_ids
    )
    np.testing.assert_allclose(out["embeddings"], image_embeddings, atol=1e-5)
    np.testing.assert_allclose(
        encode_text_batch(backbone, token_ids, batch_size=2), text_embeddings, atol=1e-5
    )


# Zero-shot classification.


def test_zero_shot_classifier_averages_normalised_prompts_by_hand():
    texts = ["a cat", "the cat", "a dog", "the dog"]
    table = [[9, 9, 9], [3, 0, 0], [0, 2, 0], [0, 0, 1], [0, 0, 5]]  # row 0: padding
    backbone = FakeBackbone(table)
    tokenizer = lambda batch: np.array([[texts.index(t) + 1, 1] for t in batch])  # noqa: E731
    for batch_size in (3, 256):  # 4 texts: a padded chunk, or one call
        classifier = zero_shot_classifier(
            backbone, tokenizer, ["cat", "dog"], ["a {}", "the {}"], batch_size=batch_size
        )
        s = 0.5**0.5
        np.testing.assert_allclose(classifier, [[s, s, 0], [0, 0, 1]], atol=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        zero_shot_classifier(backbone, tokenizer, ["cat"], ["a photo"])


def test_zero_shot_accuracy_by_hand():
    classifier = np.array([[1, 0], [0, 1], [-1, 0]], "float32")
    # Scores: image 0 ranks its class 1st, 1 and 2 2nd, 3 3rd; image 4 (zero vector) ties all.
    images = np.array([[1, 0.1], [0.2, 1], [-1, 0.5], [0, -1], [0, 0]], "float32")[:, None]
    labels = np.array([0, 0, 1, 1, 2])
    dataset = tf.data.Dataset.from_tensor_slices({"images": images, "label": labels}).batch(2)
    result = zero_shot_accuracy(FakeBackbone(), classifier, dataset, top_k=(1, 2, 3))
    assert result == {
        "top1_accuracy": 1 / 5, "top2_accuracy": 3 / 5, "top3_accuracy": 1.0, "num_examples": 5,
    }
    with pytest.raises(ValueError, match="top_k"):
        zero_shot_accuracy(FakeBackbone(), classifier, dataset, top_k=(1, 5))
    with pytest.raises(ValueError, match="class indices"):
        zero_shot_accuracy(
            FakeBackbone(), classifier, [{"images": images, "label": labels + 1}], top_k=(1,)
        )


def test_zero_shot_accuracy_of_a_real_backbone_on_its_own_embeddings():
    backbone, images = _backbone(False), _images(False)
    token_ids = np.ones((3, 8), "int32")
    classifier, _ = _reference_embeddings(backbone, images, token_ids)  # class c: image c
    batches = [{**images, "label": np.arange(3)}]
    assert zero_shot_accuracy(backbone, classifier, batches, top_k=(1,))["top1_accuracy"] == 1
    batches = [{**images, "label": np.array([1, 2, 0])}]
    assert zero_shot_accuracy(backbone, classifier, batches, top_k=(1,))["top1_accuracy"] == 0


# Retrieval.

# Similarities (image rows, text columns) and each text's image; ranks worked out by hand.
SIMILARITY = np.array([
    [0.9, 0.5, 0.8, 0.1, 0.2],
    [0.7, 0.1, 0.6, 0.3, 0.95],
    [0.2, 0.3, 0.1, 0.4, 0.0],
])
OWNERS = [0, 0, 1, 2, 2]


@pytest.mark.parametrize("chunk_size", [1, 2, 1024])
def test_recall_at_k_by_hand(chunk_size):
    result = recall_at_k(np.eye(3), SIMILARITY.T, OWNERS, ks=(1, 2, 3), chunk_size=chunk_size)
    assert result == pytest.approx({
        # Image 1's caption (0.6) is beaten by two others' (0.7, 0.95).
        "image_to_text_recall@1": 2 / 3, "image_to_text_recall@2": 2 / 3,
        "image_to_text_recall@3": 1.0,
        # Text 2 ranks 2nd (0.8 > 0.6), text 4 3rd (0.2, 0.95 > 0.0).
        "text_to_image_recall@1": 3 / 5, "text_to_image_recall@2": 4 / 5,
        "text_to_image_recall@3": 1.0,
    })


def test_recall_at_k_ties_and_uncaptioned_images_count_as_misses():
    similarity = np.array([[0.5, 0.5], [0.1, 0.2]])  # images × texts
    # Both texts are image 0's: image 1 has no caption, a miss at every k.
    result = recall_at_k(np.eye(2), similarity.T, [0, 0], ks=(1, 2))
    assert result["image_to_text_recall@1"] == result["image_to_text_recall@2"] == 0.5
    # Image 0's caption ties a wrong one (0.5): rank 2.
    result = recall_at_k(np.eye(2), similarity.T, [0, 1], ks=(1, 2))
    assert result["image_to_text_recall@1"] == 0.5 and result["image_to_text_recall@2"] == 1
    # A text scoring its image as high as another (0.5, 0.5): rank 2.
    result = recall_at_k(np.eye(2), np.array([[0.5, 0.5]]), [1], ks=(1, 2))
    assert result["text_to_image_recall@1"] == 0 and result["text_to_image_recall@2"] == 1
    with pytest.raises(ValueError, match="index"):
        recall_at_k(np.eye(2), similarity.T, [0, 2])


def test_retrieval_recall_with_several_captions_per_image_by_hand():
    # Unit vectors at angles (degrees): images 0, 90, 180; texts as below (id = text + 1).
    text_angles = [10, 100, 60, 170, 45]
    table = np.concatenate([np.zeros((1, 2)), _unit(text_angles)])
    images = _unit([0, 90, 180])[:, None]
    batches = [
        {"images": images[:2], "token_ids": np.array([[[1, 1], [2, 1]], [[3, 1], [0, 0]]])},
        {"images": images[2:], "token_ids": np.array([[[4, 1], [5, 1]]])},
    ]
    result = retrieval_recall(FakeBackbone(table), batches, ks=(1, 2))
    assert result == pytest.approx({
        # Image 90°: its caption at 60° is beaten by image 0's at 100°.
        "image_to_text_recall@1": 2 / 3, "image_to_text_recall@2": 1.0,
        # Texts at 100° (image 0) and 45° (image 2) rank their image 3rd.
        "text_to_image_recall@1": 3 / 5, "text_to_image_recall@2": 3 / 5,
        "num_images": 3, "num_texts": 5,
    })


def test_retrieval_recall_one_caption_per_image_matches_the_backbone():
    backbone = _backbone(False)
    rng = np.random.default_rng(0)
    images = [_images(False, seed)["images"] for seed in (0, 1)]
    token_ids = [rng.integers(2, 64, (3, 8)).astype("int32") for _ in range(2)]
    dataset = tf.data.Dataset.from_tensor_slices(
        {"images": np.concatenate(images), "token_ids": np.concatenate(token_ids)}
    )
    result = retrieval_recall(backbone, dataset.batch(3), ks=(1, 3))
    references = [_reference_embeddings(backbone, {"images": i}, t)
                  for i, t in zip(images, token_ids)]
    expected = recall_at_k(
        np.concatenate([r[0] for r in references]), np.concatenate([r[1] for r in references]),
        np.arange(6), ks=(1, 3),
    )
    assert result == pytest.approx({**expected, "num_images": 6, "num_texts": 6}, abs=1e-6)
    with pytest.raises(ValueError, match="token_ids must be"):
        retrieval_recall(backbone, [{"images": images[0], "token_ids": token_ids[0][:2]}])


# Box IoU.


def test_box_iou_by_hand():
    a = [[0, 0, 0.5, 0.5], [0, 0, 1, 1], [0, 0, 0.2, 0.2], [0.5, 0.5, 0.1, 0.9], [0.1] * 4]
    b = [[0.25, 0.25, 0.75, 0.75], [0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 1], [0.1] * 4]
    # 0.0625 / (0.25 + 0.25 - 0.0625); contained; disjoint; inverted; both empty.
    np.testing.assert_allclose(box_iou(a, b), [1 / 7, 0.25, 0, 0, 0])
    assert box_iou([0.1, 0.2, 0.3, 0.6], [0.1, 0.2, 0.3, 0.6]) == 1


# Greedy and parallel decoding.


def _decoder(seed=0):
    keras.utils.set_random_seed(seed)
    return LocCaDecoder(
        vocabulary_size=VOCAB.size, sequence_length=DECODER_LENGTH, hidden_dim=16,
        num_layers=1, num_heads=2, intermediate_dim=32,
    )


def _pick(logits, allowed_ids):
    if allowed_ids is None:
        return int(np.argmax(logits))
    allowed = np.asarray(allowed_ids)
    return int(allowed[np.argmax(logits[allowed])])


def _padded(sequences):
    return np.array([list(q) + [0] * (DECODER_LENGTH - len(q)) for q in sequences], "int32")


def _hand_greedy(decoder, images, mask, prefixes, num_tokens, allowed_ids=None):
    """Python lists grown one token per full forward pass, each read at its own length."""
    sequences = [list(p) for p in prefixes]
    for _ in range(num_tokens):
        logits = _np(decoder(_padded(sequences), images, image_mask=mask))
        for i, sequence in enumerate(sequences):
            sequence.append(_pick(logits[i, len(sequence) - 1], allowed_ids))
    return [q[len(p):] for q, p in zip(sequences, prefixes)]


def _hand_parallel(decoder, images, mask, prefixes, num_tokens, allowed_ids=None):
    inputs = _padded([list(p) + [VOCAB.mask_id] * (num_tokens + 1) for p in prefixes])
    logits = _np(decoder(inputs, images, image_mask=mask, causal=np.zeros(len(prefixes))))
    return [[_pick(logits[i, len(p) + j], allowed_ids) for j in range(num_tokens)]
            for i, p in enumerate(prefixes)]


PREFIXES = [[VOCAB.aref_id, 5, 6, 7], [VOCAB.cap_id], [VOCAB.gcap_id, 9, 3]]


@pytest.mark.parametrize("mode", ["greedy", "parallel"])
def test_decoding_equals_a_hand_loop_with_full_forward_passes(mode):
    decoder = _decoder()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 5, 16)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    prefix_ids = np.zeros((3, 4), "int32")
    for row, prefix in zip(prefix_ids, PREFIXES):
        row[: len(prefix)] = prefix
    location_ids = list(range(VOCAB.location_offset, VOCAB.mask_id))
    hand = _hand_greedy if mode == "greedy" else _hand_parallel
    for allowed_ids in (None, location_ids):
        if mode == "greedy":
            got = greedy_decode(decoder, images, mask, prefix_ids, 5, allowed_ids)
        else:
            got = parallel_decode(decoder, images, mask, prefix_ids, 5, VOCAB.mask_id, allowed_ids)
        assert got.shape == (3, 5) and got.dtype == np.int32
        np.testing.assert_array_equal(got, hand(decoder, images, mask, PREFIXES, 5, allowed_ids))
        if allowed_ids is None:
            unrestricted = got
    assert np.isin(got, location_ids).all()
    assert not np.isin(unrestricted, location_ids).all()  # the restriction changed something


def test_decoding_rejects_bad_prefixes():
    decoder, images = _PlannedDecoder(), np.zeros((2, 4, 16), "float32")
    with pytest.raises(ValueError, match="sequence_length"):
        greedy_decode(decoder, images, None, [[VOCAB.cap_id, 8]] * 2, DECODER_LENGTH - 1)
    with pytest.raises(ValueError, match="sequence_length"):  # + the eos slot
        parallel_decode(decoder, images, None, [[VOCAB.cap_id]] * 2, DECODER_LENGTH - 1, 0)
    with pytest.raises(ValueError, match="pad before"):
        greedy_decode(decoder, images, None, [[VOCAB.cap_id, 0, 8]] * 2, 2)
    with pytest.raises(ValueError, match="task token"):
        parallel_decode(decoder, images, None, [[0, 0]] * 2, 2, VOCAB.mask_id)
    assert not decoder.calls


class _PlannedDecoder:
    """Predicts location bin p % 8 at position p, whatever the input; records its inputs.

    A plain callable: enough for `parallel_decode` (one decoder call) and for the argument
    checks, but `greedy_decode` needs a real decoder's cache (`_planned_locca_decoder`).
    """

    sequence_length, vocabulary_size = DECODER_LENGTH, VOCAB.size
    image_position_codes = False

    def __init__(self):
        self.calls = []

    def __call__(self, token_ids, image_tokens, image_mask=None, causal=None,
                 image_positions=None):
        self.calls.append(_np(token_ids))
        plan = VOCAB.location_offset + np.arange(DECODER_LENGTH) % 8
        logits = np.eye(VOCAB.size, dtype="float32")[plan]
        return np.broadcast_to(logits, (len(token_ids), *logits.shape))


def _planned_locca_decoder(image_width):
    """A real `LocCaDecoder` whose argmax at position p is location bin p % 8, whatever the
    tokens, images, mask or attention pattern.

    Zero token embeddings and zero attention, cross-attention and MLP output projections make
    every block the identity on x = one-hot position embedding e_p; the final LayerNorm maps
    e_p to c (e_p − 1/16) (c > 0), and the logits kernel has a 1 at [p, bin p % 8] only, so
    that bin's logit is c (1 − n/16) > 0, the other bins' −c n/16 ≤ 0 and the rest 0.
    """
    decoder = _decoder()
    decoder.build((1, DECODER_LENGTH), (1, 1, image_width))
    zero = lambda layer: layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])  # noqa: E731
    zero(decoder.token_embedding)
    for block in decoder.blocks:
        for layer in (block.attention.out_dense, block.cross_attention.out_dense, block.mlp.fc2):
            zero(layer)
    decoder.position_embedding.set_weights([np.eye(DECODER_LENGTH, 16, dtype="float32")])
    kernel = np.zeros((16, VOCAB.size), "float32")
    positions = np.arange(DECODER_LENGTH)
    kernel[positions, VOCAB.location_offset + positions % 8] = 1
    decoder.logits_dense.set_weights([kernel, np.zeros(VOCAB.size, "float32")])
    return decoder


def test_planned_locca_decoder_predicts_its_plan():
    decoder = _planned_locca_decoder(24)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB.size, (2, DECODER_LENGTH))
    images = rng.normal(size=(2, 3, 24)).astype("float32")
    plan = VOCAB.location_offset + np.arange(DECODER_LENGTH) % 8
    for causal in (None, np.array([1, 0])):
        logits = _np(decoder(tokens, images, image_mask=[[1, 1, 0]] * 2, causal=causal))
        np.testing.assert_array_equal(logits.argmax(-1), np.broadcast_to(plan, (2, 10)))
        assert (np.sort(logits, -1)[..., -1] - np.sort(logits, -1)[..., -2] > 0.5).all()


REGION_PROMPTS = np.array([[5, 6, 7, 1, 0, 0], [9, 1, 0, 0, 0, 0], [3, 4, 5, 6, 7, 1]])
REGIONS = [[5, 6, 7], [9], [3, 4, 5, 6]]  # T − 6 = 4 tokens at most, as in training


def test_referring_prefix_is_the_training_layout():
    """The AREF prompt, continued by 4 location tokens at positions len − 1 … (causal, as
    `test_decoding_equals_a_hand_loop_with_full_forward_passes` checks `greedy_decode`
    does) or by [MASK]s (parallel), is what `make_locca_example` trains on."""
    prefix = aref_prefix_ids(REGION_PROMPTS, VOCAB, DECODER_LENGTH)
    assert prefix.shape == (3, DECODER_LENGTH) and prefix.dtype == np.int32
    boxes = np.array([[0.1, 0.2, 0.6, 0.9], [0, 0, 1, 1], [0.3, 0.3, 0.4, 0.5]])
    box_ids = VOCAB.encode_box(boxes)
    for i, region in enumerate(REGIONS):
        length = int((prefix[i] != VOCAB.pad_id).sum())
        np.testing.assert_array_equal(prefix[i, :length], [VOCAB.aref_id, *region])
        assert (prefix[i, length:] == VOCAB.pad_id).all()
        causal = make_locca_example("aref", None, boxes[i], region, True, VOCAB, DECODER_LENGTH)
        # Greedy: the prefix plus the first 3 decoded box tokens are the teacher-forced input
        # (the 4th is predicted from them), and it reads the 4 positions the loss trains.
        expected = causal["decoder_input_ids"].copy()
        expected[length + 3] = VOCAB.pad_id
        fed = np.concatenate([prefix[i, :length], box_ids[i, :3]])
        np.testing.assert_array_equal(expected, _padded([fed])[0])
        read = length - 1 + np.arange(4)
        np.testing.assert_array_equal(np.flatnonzero(causal["decoder_loss_mask"])[:4], read)
        np.testing.assert_array_equal(causal["decoder_target_ids"][read], box_ids[i])

    decoder = _PlannedDecoder()
    location_ids = np.arange(VOCAB.location_offset, VOCAB.mask_id)
    images = np.zeros((3, 4, 16), "float32")
    got = parallel_decode(decoder, images, None, prefix, 4, VOCAB.mask_id, location_ids)
    assert len(decoder.calls) == 1
    for i, region in enumerate(REGIONS):
        boxes_i = VOCAB.decode_box(got[i])
        trained = make_locca_example("aref", None, boxes_i, region, False, VOCAB, DECODER_LENGTH)
        np.testing.assert_array_equal(decoder.calls[0][i], trained["decoder_input_ids"])


# Referring expressions.


# Prefixes [AREF] + 2 and + 4 tokens (the second cut to T − 6 = 4), then one without text.
PROMPTS = np.array(
    [[5, 6, 1, 0, 0, 0, 0, 0], [7, 8, 9, 10, 11, 12, 13, 1], [1, 0, 0, 0, 0, 0, 0, 0]]
)
TARGETS = np.array([[2.5, 3.5, 4.5, 5.5], [5.5, 5.5, 7.5, 7.5], [0, 1, 2, 3]]) / 8
# Bin-centre boxes decoded (in 1/8 units, y0 x0 y1 x1), and their IoUs with TARGETS by hand:
# causal (positions len − 1 …): 2.5 3.5 4.5 5.5 (1); 4.5 5.5 6.5 7.5 (2 / 6);
# 0.5 1.5 2.5 3.5 (2.25 / 5.75). Parallel (positions len …): 3.5 4.5 5.5 6.5 (1 / 7);
# 5.5 6.5 7.5 0.5 (inverted: 0); 1.5 2.5 3.5 4.5 (0.25 / 7.75).
EXPECTED_IOUS = {False: [1, 1 / 3, 9 / 23], True: [1 / 7, 0, 1 / 31]}


@pytest.mark.parametrize("naflex, parallel", [(False, False), (True, False), (False, True)])
def test_referring_box_iou_by_hand(naflex, parallel, monkeypatch):
    backbone, images = _backbone(naflex), _images(naflex)
    tokens = encode_image_batch(backbone, images)["tokens"]
    decoder = _planned_locca_decoder(tokens.shape[-1])
    # What `referring_box_iou` hands the real decoding functions.
    seen = {}

    def spy(decode):
        def wrapped(decoder, image_tokens, image_mask, *args, **kwargs):
            seen.update(image_tokens=_np(image_tokens), image_mask=image_mask)
            return decode(decoder, image_tokens, image_mask, *args, **kwargs)
        return wrapped

    for name in ("greedy_decode", "parallel_decode"):
        monkeypatch.setattr(referring, name, spy(getattr(referring, name)))
    batch = {**images, "prompt_ids": PROMPTS, "box": TARGETS}
    result = referring_box_iou(backbone, decoder, VOCAB, [batch], parallel=parallel)
    ious = EXPECTED_IOUS[parallel]
    assert result == pytest.approx({
        "mean_iou": np.mean(ious), "accuracy@0.5": np.mean(np.array(ious) >= 0.5),
        "num_examples": 3,
    })
    # The decoder attends to the image tower's sequence output, padding patches masked.
    np.testing.assert_allclose(seen["image_tokens"], tokens, atol=1e-6)
    if naflex:
        np.testing.assert_array_equal(seen["image_mask"], images["patch_mask"].astype(bool))
    else:
        assert seen["image_mask"] is None
    with pytest.raises(KeyError, match="prompt_ids"):
        referring_box_iou(backbone, decoder, VOCAB, [images])


# Dense probe.


def test_patch_labels_majority_by_hand():
    # A 5×3 map on a 2×2 grid: pixel rows 0-1 | 2-4, columns 0 | 1-2 (by pixel centres).
    segmentation = np.array([[1, 2, 2], [1, 1, 2], [3, 3, 4], [3, 4, 4], [0, 4, 4]])
    np.testing.assert_array_equal(patch_labels(segmentation, (2, 2)), [[1, 2], [3, 4]])
    # A tie goes to the smaller label; ignored pixels do not vote; an all-ignored cell is -1.
    segmentation = np.array([[2, 1, 255, 255], [255, 7, 255, 255]])
    np.testing.assert_array_equal(
        patch_labels(segmentation, (1, 2), ignore_index=255), [[1, -1]]
    )
    np.testing.assert_array_equal(patch_labels(segmentation, (1, 1)), [[255]])
    # A map smaller than the grid: each cell takes the pixel under its centre (nearest).
    np.testing.assert_array_equal(
        patch_labels([[0, 1], [2, 3]], (4, 4)),
        [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]],
    )
    with pytest.raises(ValueError, match="grid_shape"):
        patch_labels(segmentation, (0, 2))


def test_mean_iou_by_hand():
    # IoU 3/4 for class 0, 2/3 for class 1; class 2 never occurs and is not averaged.
    assert mean_iou([[3, 1, 0], [0, 2, 0], [0, 0, 0]]) == pytest.approx((3 / 4 + 2 / 3) / 2)
    # Predicting an absent class costs the true class: IoU 2/3.
    assert mean_iou([[2, 1], [0, 0]]) == pytest.approx(2 / 3)


def _clusters(labels, rng, noise=0.05, dim=6):
    centres = np.eye(3, dim) * 3.0
    return (centres[np.maximum(labels, 0)] + rng.normal(0, noise, (*labels.shape, dim)))


def test_dense_probe_separable_features_and_a_confusion_by_hand():
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 3, (8, 6))
    train = tf.data.Dataset.from_tensor_slices(
        {"images": _clusters(labels, rng), "patch_labels": labels}
    ).batch(3)
    test_labels = rng.integers(0, 3, (4, 6))
    test = [{"images": _clusters(test_labels, rng), "patch_labels": test_labels}]
    result = dense_probe_miou(FakeBackbone(), train, test, num_classes=3)
    assert result == {
        "miou": 1.0, "patch_accuracy": 1.0, "num_train_patches": int((labels >= 0).sum()),
        "num_test_patches": 24,
    }
    # Patches with class-0 features labelled 1 are predicted 0: a known confusion.
    features = np.array([0] * 4 + [0] * 2 + [1] * 3 + [2])
    test_labels = np.array([0] * 4 + [1] * 2 + [1] * 3 + [2])
    test = [{"images": _clusters(features[None], rng), "patch_labels": test_labels[None]}]
    result = dense_probe_miou(FakeBackbone(), train, test, num_classes=3)
    # Confusion [[4, 0, 0], [2, 3, 0], [0, 0, 1]]: IoUs 4/6, 3/5, 1.
    assert result["miou"] == pytest.approx((4 / 6 + 3 / 5 + 1) / 3)
    assert result["patch_accuracy"] == pytest.approx(8 / 10)
    with pytest.raises(ValueError, match="num_classes"):
        dense_probe_miou(FakeBackbone(), train, test, num_classes=2)


def test_dense_probe_on_naflex_drops_padding_patches():
    backbone = _backbone(True)
    batch = _images(True)
    labels = np.random.default_rng(0).integers(0, 2, (3, 16))  # padding patches labelled too
    batch["patch_labels"] = labels
    result = dense_probe_miou(backbone, [batch], [batch], num_classes=2)
    assert result["num_train_patches"] == result["num_test_patches"] == 6 + 16 + 9
    assert 0 <= result["miou"] <= 1 and result["patch_accuracy"] >= 0.5
    with pytest.raises(ValueError, match="padding patches with -1"):
        dense_probe_miou(backbone, [{**batch, "patch_labels": labels[:, :9]}], [batch], 2)


def test_ridge_classifier_by_hand():
    # x = 0, 1, 2, 3 (mean 1.5, centred sum of squares 5), classes 0, 0, 1, 1 (mean 0.5 each):
    # cross-moments -2 and 2; penalty 0.2 × the variance 5 = 1, so weights ∓2 / 6 and bias
    # 0.5 - 1.5 × weights = (1, 0).
    features = np.array([[0.0], [1.0], [2.0], [3.0]])
    batches = [(features[:3], np.array([0, 0, 1])), (features[3:], np.array([1]))]
    weights, bias, count = fit_ridge_classifier(batches, 2, l2_regularization=0.2)
    np.testing.assert_allclose(weights, [[-1 / 3, 1 / 3]])
    np.testing.assert_allclose(bias, [1.0, 0.0], atol=1e-12)
    assert count == 4
    with pytest.raises(ValueError, match="no labelled examples"):
        fit_ridge_classifier([], 2)
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        fit_ridge_classifier([(features, np.array([0, -1, 1, 1]))], 2)  # -1 would index row 1


def test_linear_probe_separable_embeddings_and_a_miss_by_hand():
    rng = np.random.default_rng(0)
    labels = np.tile([0, 1, 2], 4)
    train = tf.data.Dataset.from_tensor_slices(
        {"images": _clusters(labels[:, None], rng), "label": labels}  # one token per image
    ).batch(5)
    test_labels = np.array([0, 1, 2, 1, 1, 2])
    features = np.array([0, 1, 2, 1, 0, 2])  # the fifth image looks like class 0
    test = [{"images": _clusters(features[:, None], rng), "label": test_labels}]
    result = linear_probe_accuracy(FakeBackbone(), train, test, num_classes=3)
    assert result == {"accuracy": 5 / 6, "num_train_examples": 12, "num_test_examples": 6}
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        linear_probe_accuracy(FakeBackbone(), train, test, num_classes=2)
    with pytest.raises(KeyError, match="'shape'"):
        linear_probe_accuracy(FakeBackbone(), train, test, num_classes=3, label_key="shape")
