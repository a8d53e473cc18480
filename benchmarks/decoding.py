"""Greedy LocCa decoding: tokens/s without and with the key/value cache, same tokens.

    KERAS_BACKEND=jax python benchmarks/decoding.py [--repeats 3]

The main job's decoder (width 64, 2 layers, 4 heads, MLP 256, sequence length 48, 32
location bins: 1,036 ids) on a batch of 64 examples of 64 image tokens, random weights, for
captions ([CAP] then 47 tokens) and boxes ([AREF] + 0 to 20 prompt tokens, then 4 location
tokens). Three decoders, interleaved (`timing.interleaved`, medians):

- uncached: the loop `greedy_decode` ran before the cache (a full causal pass of the decoder
  over the (B, 48) buffer per token, called eagerly);
- uncached, compiled: that loop as one compiled `predict_on_batch` program, to separate what
  the cache gives from what compiling gives;
- cached: `greedy_decode`.

Each row checks that the three give the same tokens.
"""

import argparse

import keras
import numpy as np
from keras import ops
from timing import interleaved, markdown_table, median

from keras_siglip2.evaluation import greedy_decode
from keras_siglip2.locca_targets import LocCaVocabulary
from keras_siglip2.models.locca_decoder import LocCaDecoder

BATCH, LENGTH, IMAGE_TOKENS, WIDTH = 64, 48, 64, 64


def python_loop(lower, upper, body, state):
    """`ops.fori_loop` as the pre-cache `greedy_decode` ran it: a Python loop of eager calls."""
    for i in range(lower, upper):
        state = body(i, state)
    return state


def uncached_loop(decoder, buffer, lengths, image_tokens, num_tokens, allowed, loop):
    """The pre-cache greedy loop: one full causal pass per token, written into the buffer."""
    columns = ops.arange(LENGTH, dtype="int32")[None]
    last = lengths - 1

    def step(s, state):
        buffer, tokens, last = state
        logits = decoder(buffer, image_tokens)
        at_last = ops.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]
        if allowed is not None:
            at_last = ops.where(allowed, at_last, float("-inf"))
        token = ops.cast(ops.argmax(at_last, axis=-1), "int32")
        last = last + 1
        buffer = ops.where(columns == last[:, None], token[:, None], buffer)
        return buffer, ops.slice_update(tokens, (0, s), token[:, None]), last

    tokens = ops.zeros((ops.shape(buffer)[0], num_tokens), "int32")
    return loop(0, num_tokens, step, (buffer, tokens, last))[1]


class CompiledUncached(keras.Model):
    def __init__(self, decoder, num_tokens, allowed):
        super().__init__(name="compiled_uncached")
        self.decoder, self.num_tokens, self.allowed = decoder, num_tokens, allowed

    def call(self, inputs):
        return uncached_loop(
            self.decoder, inputs["buffer"], inputs["lengths"], inputs["image_tokens"],
            self.num_tokens, self.allowed, ops.fori_loop,
        )


def workloads(vocab, rng):
    """{name: (prefix ids (B, L), num_tokens, allowed ids or None)}."""
    box_prefix = np.zeros((BATCH, 21), "int32")
    for row, length in zip(box_prefix, rng.integers(1, 22, BATCH)):
        row[0] = vocab.aref_id
        row[1:length] = rng.integers(2, 1000, length - 1)
    return {
        "captions": (np.full((BATCH, 1), vocab.cap_id, "int32"), LENGTH - 1, None),
        "boxes": (box_prefix, 4, np.arange(vocab.num_location_bins) + vocab.location_offset),
    }


def measure(decoder, image_tokens, vocab, name, prefix, num_tokens, allowed_ids, repeats):
    """One table row: the three decoders' tokens/s, their ratios, whether the tokens agree."""
    buffer = np.zeros((BATCH, LENGTH), "int32")
    buffer[:, : prefix.shape[1]] = prefix
    inputs = {"buffer": buffer, "lengths": (prefix != 0).sum(1).astype("int32"),
              "image_tokens": image_tokens}
    allowed = None
    if allowed_ids is not None:
        allowed = np.isin(np.arange(vocab.size), allowed_ids)
    compiled = CompiledUncached(decoder, num_tokens, allowed)
    candidates = {
        "uncached": lambda: uncached_loop(
            decoder, *inputs.values(), num_tokens, allowed, python_loop
        ),
        "compiled": lambda: compiled.predict_on_batch(inputs),
        "cached": lambda: greedy_decode(
            decoder, image_tokens, None, prefix, num_tokens, allowed_ids
        ),
    }
    outputs = [np.asarray(ops.convert_to_numpy(fn())) for fn in candidates.values()]
    same = all((out == outputs[-1]).all() for out in outputs)
    times = interleaved(candidates, repeats)
    rate = {key: BATCH * num_tokens / median(t) for key, t in times.items()}
    return [
        f"{name} ({num_tokens})", *(f"{rate[key]:,.0f}" for key in candidates),
        f"{rate['cached'] / rate['uncached']:.1f}×",
        f"{rate['cached'] / rate['compiled']:.1f}×", "yes" if same else "NO",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    vocab = LocCaVocabulary(text_vocabulary_size=1000, num_location_bins=32)
    keras.utils.set_random_seed(0)
    decoder = LocCaDecoder(vocab.size, LENGTH, WIDTH, num_layers=2, num_heads=4,
                           intermediate_dim=4 * WIDTH)
    rng = np.random.default_rng(0)
    image_tokens = rng.normal(size=(BATCH, IMAGE_TOKENS, WIDTH)).astype("float32")
    decoder(np.zeros((BATCH, LENGTH), "int32"), image_tokens)
    print(f"{keras.config.backend()}, batch {BATCH}, vocabulary {vocab.size}, "
          f"{args.repeats} rounds (medians)\n")
    rows = [
        measure(decoder, image_tokens, vocab, name, *workload, args.repeats)
        for name, workload in workloads(vocab, rng).items()
    ]
    print(markdown_table(
        ["tokens", "uncached tok/s", "uncached compiled tok/s", "cached tok/s",
         "cached / uncached", "cached / uncached compiled", "same tokens"], rows,
    ))

if __name__ == "__main__":
    main()
