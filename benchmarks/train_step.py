"""Examples/s of `SigLIP2Trainer.fit` vs a hand-written `jax.jit` loop on the same model (JAX).

    KERAS_BACKEND=jax python benchmarks/train_step.py [--batch 32] [--steps 8] [--repeats 3]

Two trainers: the sigmoid loss only, and the whole recipe (LocCa decoder, SILC
self-distillation with two local views, TIPS masked prediction). "fit" is one
`fit(x, batch_size, epochs=1)` call of `--steps` steps, no callbacks, verbose 0, divided by
its steps; "jit loop" runs the same number of steps of
`jax.jit(value_and_grad(trainer.compute_loss_and_updates) + optimizer.stateless_apply)`
(donated state, i.e. Keras' own train step without `fit`'s loop, metrics and callbacks) on
a copy of the same weights. Interleaved rounds, medians; the overhead is fit / loop − 1.
"""

import argparse
import os

os.environ["KERAS_BACKEND"] = "jax"

import jax
import keras
import numpy as np

from keras_siglip2 import (
    LocCaDecoder,
    SigLIP2Backbone,
    SigLIP2TextEncoder,
    SigLIP2Trainer,
    SigLIP2VisionEncoder,
)
from keras_siglip2.locca_targets import LocCaVocabulary, make_locca_example
from timing import interleaved, markdown_table, median

TEXT_VOCAB, TEXT_LENGTH, DECODER_LENGTH, VIEWS = 1000, 16, 16, 2


def trainer(recipe, image_size, width, depth):
    keras.utils.set_random_seed(0)
    tower = dict(hidden_dim=width, num_layers=depth, num_heads=width // 64,
                 intermediate_dim=4 * width)
    backbone = SigLIP2Backbone(
        SigLIP2VisionEncoder(image_size=image_size, patch_size=8, **tower),
        SigLIP2TextEncoder(TEXT_VOCAB, TEXT_LENGTH, embedding_dim=width, **tower),
    )
    if not recipe:
        return SigLIP2Trainer(backbone)
    decoder = LocCaDecoder(vocabulary_size=LocCaVocabulary(TEXT_VOCAB, 100).size,
                           sequence_length=DECODER_LENGTH, **{**tower, "num_layers": 2})
    return SigLIP2Trainer(backbone, decoder=decoder, distillation_dim=1024, seed=0)


def batch(size, image_size, recipe, rng):
    x = {
        "images": rng.uniform(-1, 1, (size, image_size, image_size, 3)).astype("float32"),
        "token_ids": rng.integers(2, TEXT_VOCAB, (size, TEXT_LENGTH)).astype("int32"),
    }
    if recipe:
        x["local_views"] = rng.uniform(
            -1, 1, (size, VIEWS, image_size, image_size, 3)).astype("float32")
        vocab = LocCaVocabulary(TEXT_VOCAB, 100)
        examples = [
            make_locca_example(task, rng.integers(2, TEXT_VOCAB, 6), [0.1, 0.2, 0.6, 0.9],
                               rng.integers(2, TEXT_VOCAB, 4), i % 2, vocab, DECODER_LENGTH)
            for i, task in enumerate(["cap", "aref", "gcap"] * size)
        ][:size]
        for key in ("decoder_input_ids", "decoder_target_ids", "decoder_loss_mask",
                    "decoder_causal"):
            x[key] = np.stack([e[key] for e in examples])
    return x


def jit_loop(model, x, steps):
    """A `steps`-step runner of the model's loss and optimizer, outside `fit`."""
    def step(state, x):
        trainable, non_trainable, optimizer_vars, metrics_vars = state
        (_, aux), grads = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)(
            trainable, non_trainable, metrics_vars, x, None, None, training=True,
            optimizer_variables=optimizer_vars)
        trainable, optimizer_vars = model.optimizer.stateless_apply(
            optimizer_vars, grads, trainable)
        return trainable, aux[2], optimizer_vars, aux[3]

    step = jax.jit(step, donate_argnums=0)
    state = [[jax.numpy.copy(v.value) for v in variables] for variables in (
        model.trainable_variables, model.non_trainable_variables,
        model.optimizer.variables, model.metrics_variables)]

    def run():
        nonlocal state
        for _ in range(steps):
            state = step(state, x)
        jax.block_until_ready(state)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    rows = []
    for recipe in (False, True):
        model = trainer(recipe, args.image_size, args.width, args.depth)
        model.compile(optimizer=keras.optimizers.Adam(1e-4))
        x = batch(args.batch, args.image_size, recipe, rng)
        data = {k: np.concatenate([v] * args.steps) for k, v in x.items()}
        model.fit(data, batch_size=args.batch, epochs=1, verbose=0)  # Builds the optimizer.
        times = interleaved({
            "fit": lambda m=model, d=data: m.fit(d, batch_size=args.batch, epochs=1, verbose=0),
            "jit loop": jit_loop(model, x, args.steps),
        }, args.repeats)
        loop = median(times["jit loop"])
        for name, seconds in times.items():
            s = median(seconds)
            rows.append(["whole recipe" if recipe else "sigmoid loss", name,
                         f"{args.batch * args.steps / s:.1f}", f"{s / args.steps * 1e3:.0f}",
                         f"{s / loop - 1:+.1%}" if name == "fit" else "–"])
    print(f"jax, batch {args.batch}, {args.steps} steps per call, images {args.image_size} px "
          f"(patch 8), towers width {args.width} depth {args.depth}\n")
    print(markdown_table(["loss", "runner", "examples/s", "ms/step", "fit overhead"], rows))


if __name__ == "__main__":
    main()
