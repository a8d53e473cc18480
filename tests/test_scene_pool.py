"""ScenePool: the main job's training scenes drawn once, reused with fresh draws per pass."""

import numpy as np
import pytest

from keras_siglip2.datasets import scenes
from keras_siglip2.locca_targets import LocCaVocabulary
from keras_siglip2.pipelines import training_batches
from keras_siglip2.preprocessing import LocalViews, NaFlexImageConverter, SigLIP2ImageConverter
from keras_siglip2.scene_pool import ScenePool

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
