"""Active data curation: learnability against numpy, top-k and Gumbel top-k selection."""

import numpy as np
import pytest

import keras
from keras import ops

from keras_siglip2.curation import (
    gather_batch,
    learnability_scores,
    per_example_sigmoid_loss,
    select_learnable,
)
from keras_siglip2.losses import sigmoid_loss


def numpy_per_example_loss(logits):
    """-Σ_j log σ(z_ij l_ij) over row i plus -Σ_j log σ(z_ji l_ji) over column i."""
    logits = logits.astype("float64")
    nll = np.logaddexp(0.0, -(2 * np.eye(len(logits)) - 1) * logits)  # -log σ(z l)
    return nll.sum(axis=1) + nll.sum(axis=0)


def test_learnability_matches_numpy():
    rng = np.random.default_rng(0)
    student = rng.normal(scale=3.0, size=(6, 6)).astype("float32")
    reference = (rng.normal(scale=3.0, size=(6, 6)) + 8 * np.eye(6) - 4).astype("float32")
    want = numpy_per_example_loss(student) - numpy_per_example_loss(reference)
    got = ops.convert_to_numpy(learnability_scores(student, reference))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Summed over the examples: every pair twice, i.e. 2 B times the SigLIP loss.
    total = ops.convert_to_numpy(ops.sum(per_example_sigmoid_loss(student)))
    mean_loss = ops.convert_to_numpy(ops.mean(sigmoid_loss(student)))
    np.testing.assert_allclose(total, 2 * len(student) * mean_loss, rtol=1e-5)
    # Transposing the logits (swapping images and texts) leaves each example's loss unchanged.
    np.testing.assert_allclose(
        ops.convert_to_numpy(per_example_sigmoid_loss(student.T)),
        numpy_per_example_loss(student),
        rtol=1e-5,
    )


def test_learnability_ranks_learnable_over_noisy_and_learnt():
    # Example 0: student wrong, reference right (learnable). 1: both wrong (noise).
    # 2: both right (learnt).
    student = np.full((3, 3), -2.0, "float32")
    reference = np.full((3, 3), -2.0, "float32")
    student[0, 0], reference[0, 0] = -2.0, 6.0
    student[1, 1], reference[1, 1] = -2.0, -2.0
    student[2, 2], reference[2, 2] = 6.0, 6.0
    scores = ops.convert_to_numpy(learnability_scores(student, reference))
    assert scores[0] > 0 and scores[0] > scores[1] and scores[0] > scores[2]
    np.testing.assert_allclose(scores[1:], 0.0, atol=1e-6)


def test_top_k_picks_exactly_the_highest():
    rng = np.random.default_rng(1)
    scores = rng.permutation(32).astype("float32") * 0.37 - 3.0
    got = ops.convert_to_numpy(select_learnable(scores, 5))
    assert got.dtype == np.int32 and got.shape == (5,)
    np.testing.assert_array_equal(got, np.argsort(-scores)[:5])


def test_gumbel_sampling_is_deterministic_by_seed_and_without_replacement():
    scores = np.linspace(-1.0, 1.0, 16).astype("float32")
    first = ops.convert_to_numpy(select_learnable(scores, 8, temperature=0.5, seed=3))
    again = ops.convert_to_numpy(select_learnable(scores, 8, temperature=0.5, seed=3))
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.int32 and len(set(first.tolist())) == 8
    draws = {
        tuple(ops.convert_to_numpy(select_learnable(scores, 8, temperature=0.5, seed=s)))
        for s in range(5)
    }
    assert len(draws) > 1  # Different seeds, different draws.
    # A very low temperature recovers top-k; a SeedGenerator also works.
    cold = select_learnable(scores, 4, temperature=1e-4, seed=keras.random.SeedGenerator(0))
    assert sorted(ops.convert_to_numpy(cold).tolist()) == [12, 13, 14, 15]


def test_gumbel_sampling_follows_the_softmax():
    scores = np.array([0.0, 1.0, 2.0, 3.0], "float32")
    probs = np.exp(scores) / np.exp(scores).sum()  # [0.032, 0.087, 0.237, 0.644]
    n = 400
    picks = [
        int(ops.convert_to_numpy(select_learnable(scores, 1, temperature=1.0, seed=s))[0])
        for s in range(n)
    ]
    freq = np.bincount(picks, minlength=4) / n
    # 4.5 standard deviations of a binomial frequency: fails by chance with p < 1e-4.
    assert np.all(np.abs(freq - probs) < 4.5 * np.sqrt(probs * (1 - probs) / n)), freq
    assert freq[3] > freq[2] > freq[0]
    # At k = 2, the top score is almost always among the picks (P = 0.93).
    pairs = [
        ops.convert_to_numpy(select_learnable(scores, 2, temperature=1.0, seed=s)).tolist()
        for s in range(100)
    ]
    assert sum(3 in p for p in pairs) > 80


def test_gather_batch_takes_the_same_rows_everywhere():
    rng = np.random.default_rng(2)
    batch = {
        "images": rng.normal(size=(6, 4, 4, 3)).astype("float32"),
        "text": {"token_ids": np.arange(12).reshape(6, 2), "mask": None},
    }
    indices = np.array([4, 1, 5], "int32")
    sub = gather_batch(batch, ops.convert_to_tensor(indices))
    np.testing.assert_array_equal(ops.convert_to_numpy(sub["images"]), batch["images"][indices])
    np.testing.assert_array_equal(
        ops.convert_to_numpy(sub["text"]["token_ids"]), batch["text"]["token_ids"][indices]
    )
    assert sub["text"]["mask"] is None


def test_curation_compiles():
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        compile_fn = jax.jit
    elif backend == "tensorflow":
        import tensorflow as tf

        compile_fn = tf.function(jit_compile=True)
    else:
        pytest.skip("torch.compile is too slow for a unit test")

    def curate(student, reference, images):
        scores = learnability_scores(student, reference)
        top = select_learnable(scores, 3)
        sampled = select_learnable(scores, 3, temperature=0.1, seed=7)
        return gather_batch({"images": images}, top)["images"], sampled

    rng = np.random.default_rng(3)
    student, reference = rng.normal(size=(2, 8, 8)).astype("float32")
    images = rng.normal(size=(8, 5)).astype("float32")
    eager = curate(student, reference, images)
    compiled = compile_fn(curate)(student, reference, images)
    np.testing.assert_allclose(ops.convert_to_numpy(compiled[0]), ops.convert_to_numpy(eager[0]))
    assert len(set(ops.convert_to_numpy(compiled[1]).tolist())) == 3
