"""ScenePool: the main job's training scenes drawn once, reused with fresh draws per pass."""

import numpy as np
import pytest

from keras_siglip2.datasets import scenes
from keras_siglip2.locca_targets import DECODER_KEYS, LocCaVocabulary
from keras_siglip2.pipelines import training_batches
from keras_siglip2.preprocessing import LocalViews, NaFlexImageConverter, SigLIP2ImageConverter
from keras_siglip2.scene_pool import ScenePool, caption_rows

SIZE = 6


@pytest.fixture(scope="module")
def setup():
    tokenizer = scenes.tokenizer(sequence_length=24)
    converter = NaFlexImageConverter(8, 16)
    views = LocalViews(NaFlexImageConverter(8, 4), 2)
    vocab = LocCaVocabulary(tokenizer.vocabulary_size(), num_location_bins=16)
    return tokenizer, converter, views, vocab, ScenePool(SIZE, tokenizer, converter, views)


def _numpy(batch):
    return {k: _numpy(v) if isinstance(v, dict) else np.asarray(v) for k, v in batch.items()}


def _scene_of(pool, patches):
    """The pool index whose stored global view is `patches` (float, as batches hold it)."""
    stored = pool.arrays["patches"].astype(np.float32) / 255.0 * 2.0 - 1.0
    matches = [i for i in range(pool.size) if np.array_equal(stored[i], patches)]
    assert len(matches) == 1
    return matches[0]


def test_batches_have_the_live_pipelines_keys_shapes_and_dtypes(setup):
    tokenizer, converter, views, vocab, pool = setup
    pooled = _numpy(next(iter(pool.training_batches(4, {"en": 0.9, "de": 0.1}, vocab, 20))))
    live = _numpy(next(iter(training_batches(scenes.load("train", 4), tokenizer, converter, 4,
                                             vocab, 20, views))))
    flat = lambda b: {k: v for k, v in b.items() if not isinstance(v, dict)} | {  # noqa: E731
        f"local_views/{k}": v for k, v in b["local_views"].items()}
    assert {k: (v.shape, v.dtype) for k, v in flat(pooled).items()} == {
        k: (v.shape, v.dtype) for k, v in flat(live).items()}


def test_the_stored_view_is_the_converters_output_rounded_to_whole_pixels(setup):
    _, converter, _, _, pool = setup
    for index in range(SIZE):
        expected = np.asarray(converter(scenes.example("train", index)["image"])["patches"])
        stored = pool.arrays["patches"][index].astype(np.float32) / 255.0 * 2.0 - 1.0
        np.testing.assert_allclose(stored, expected, atol=1 / 255 + 1e-6)


def test_each_pass_is_the_whole_pool_in_a_new_order_with_texts_in_the_drawn_language(setup):
    tokenizer, _, _, vocab, pool = setup
    passes = [_numpy(b) for b in pool.training_batches(SIZE, "de", vocab, 20).take(2)]
    orders = [[_scene_of(pool, p) for p in batch["patches"]] for batch in passes]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(SIZE))
    assert orders[0] != orders[1]
    for batch, order in zip(passes, orders):
        for ids, scene in zip(batch["token_ids"], order):
            caption = scenes.example("train", scene, language="de")["caption"]
            np.testing.assert_array_equal(ids, tokenizer(caption))


def test_a_stream_resumes_at_any_example(setup):
    _, _, _, vocab, pool = setup
    whole = [_numpy(b) for b in pool.training_batches(2, "en", vocab, 20).take(5)]
    resumed = _numpy(next(iter(pool.training_batches(2, "en", vocab, 20, start=8))))
    for key, value in resumed.items():
        np.testing.assert_array_equal(
            value if key != "local_views" else value["patches"],
            whole[4][key] if key != "local_views" else whole[4][key]["patches"])


def test_the_causal_share_sets_the_decoders_layout_in_both_pipelines(setup):
    tokenizer, converter, _, vocab, pool = setup
    for share in (0.0, 1.0):
        pooled = next(iter(pool.training_batches(SIZE, "en", vocab, 20,
                                                 locca_causal_probability=share)))
        live = next(iter(training_batches(scenes.load("train", SIZE), tokenizer, converter,
                                          SIZE, vocab, 20, locca_causal_probability=share)))
        for batch in (pooled, live):
            assert (np.asarray(batch["decoder_causal"]) == share).all()


def test_bad_arguments_are_named(setup):
    tokenizer, converter, views, vocab, pool = setup
    with pytest.raises(ValueError, match="size"):
        ScenePool(0, tokenizer, converter)
    with pytest.raises(ValueError, match="NaFlexImageConverter"):
        ScenePool(2, tokenizer, SigLIP2ImageConverter(16))
    with pytest.raises(ValueError, match="num_views"):
        ScenePool(2, tokenizer, converter, LocalViews(NaFlexImageConverter(8, 4), 3),
                  pool_views=2)
    with pytest.raises(ValueError, match="language"):
        pool.training_batches(2, "fr")
    with pytest.raises(ValueError, match="decoder_length"):
        pool.training_batches(2, "en", vocab)
    with pytest.raises(ValueError, match="locca_batch_tasks draws one LocCa task"):
        pool.training_batches(2, "en", vocab, 20, all_locca_tasks=True, locca_batch_tasks=True)
    with pytest.raises(ValueError, match="locca_length_groups needs locca_batch_tasks"):
        pool.training_batches(2, "en", vocab, 20, locca_length_groups=True)


def test_batch_tasks_caption_first_and_length_groups_cut_only_padding(setup):
    _, _, _, vocab, pool = setup
    weights = (1, 3, 1)
    cap, short = caption_rows(SIZE, weights), pool.referring_length(vocab, 20)
    assert cap == 1 and short < 20
    joined = pool.training_batches(SIZE, "en", vocab, 20, locca_task_weights=weights,
                                   locca_batch_tasks=True)
    split = pool.training_batches(SIZE, "en", vocab, 20, locca_task_weights=weights,
                                  locca_batch_tasks=True, locca_length_groups=True)
    for whole, groups in zip(joined.take(4), split.take(4)):
        whole, groups = _numpy(whole), {k: [np.asarray(g) for g in v] for k, v in groups.items()
                                        if k in DECODER_KEYS}
        first = whole["decoder_input_ids"][:, 0]
        assert (first[:cap] == vocab.cap_id).all()
        assert set(first[cap:]) <= {vocab.aref_id, vocab.gcap_id}
        for key, (long, rest) in groups.items():
            np.testing.assert_array_equal(long, whole[key][:cap])
            np.testing.assert_array_equal(rest, whole[key][cap:, :short] if rest.ndim == 2
                                          else whole[key][cap:])
        for key in ("decoder_input_ids", "decoder_target_ids", "decoder_loss_mask"):
            assert not whole[key][cap:, short:].any()  # the cut held padding only


def test_caption_rows_follow_the_weights():
    assert caption_rows(64, (1, 3, 1)) == 13 and caption_rows(64) == 21
    assert caption_rows(64, (0, 1, 1)) == 0 and caption_rows(8, (1, 0, 0)) == 8
