"""How fast the main job's image tower can learn shape at all: a supervised probe.

    KERAS_BACKEND=jax python benchmarks/shape_probe.py [--steps 400] [--passes 8]
        [--models ours keras-hub cnn]

Each model is trained from scratch to name the shape (7 classes) of single-object scenes of the
embedded dataset, with the same optimiser (AdamW at 1e-3, 5 % warmup, cosine decay, weight
decay 1e-4), batch 64 and `--steps` updates over `steps × 64 / passes` cached training scenes,
then scored on 1,000 test scenes:

- ours: the main job's NaFlex tower (`MainJobConfig`'s patch size, patch budget, width and
  depth), its MAP-pooled output through a linear layer;
- keras-hub: `keras_hub.models.ViTBackbone` of the same size on the same pixel budget (64×64
  px, 8 px patches), its class token through a linear layer; the reference ViT;
- cnn: three 3×3 convolutions (32, 64, 64 channels, ReLU, 2×2 max-pooling between them) and a
  global max-pool on the same 64×64 images: a calibration of how hard the task is.

If both ViTs stay near chance where the CNN does not, shape is slow to learn for a small ViT
trained from scratch, not a fault of our tower or of the data.
"""

import argparse
import time

import keras
import keras_hub
import numpy as np

from keras_siglip2.datasets import scenes
from keras_siglip2.main_job import MainJobConfig
from keras_siglip2.models.naflex_vision_encoder import SigLIP2NaFlexVisionEncoder
from keras_siglip2.preprocessing import NaFlexImageConverter, SigLIP2ImageConverter

BATCH_SIZE = 64
CONFIG = MainJobConfig()
IMAGE_SIZE = CONFIG.patch_size * round(CONFIG.max_num_patches**0.5)  # the same pixel budget


def scenes_and_shapes(split, count, converter):
    """(converted images, shape ids) of the first `count` single-object scenes of `split`."""
    images, shapes = [], []
    for batch in scenes.numpy_batches(split, 256, count, num_objects=(1, 1)):
        images.append(converter(batch["image"]))
        shapes += [int(s[0]) for s in batch["shape"]]
    return keras.tree.map_structure(lambda *xs: np.concatenate(xs), *images), np.array(shapes)


def ours():
    tower = SigLIP2NaFlexVisionEncoder(
        patch_size=CONFIG.patch_size, hidden_dim=CONFIG.width, num_layers=CONFIG.depth,
        num_heads=CONFIG.num_heads, intermediate_dim=4 * CONFIG.width,
        position_grid_size=round(CONFIG.max_num_patches**0.5),
    )
    logits = keras.layers.Dense(len(scenes.SHAPES))(tower.output["pooled_output"])
    converter = NaFlexImageConverter(CONFIG.patch_size, CONFIG.max_num_patches)
    return keras.Model(tower.input, logits), converter


def keras_hub_vit():
    vit = keras_hub.models.ViTBackbone(
        image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), patch_size=CONFIG.patch_size,
        num_layers=CONFIG.depth, num_heads=CONFIG.num_heads, hidden_dim=CONFIG.width,
        mlp_dim=4 * CONFIG.width,
    )
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    class_token = vit(inputs)[:, 0]
    model = keras.Model(inputs, keras.layers.Dense(len(scenes.SHAPES))(class_token))
    return model, SigLIP2ImageConverter(IMAGE_SIZE)


def cnn():
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)),
        layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPool2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPool2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"), layers.GlobalMaxPool2D(),
        layers.Dense(len(scenes.SHAPES)),
    ])
    return model, SigLIP2ImageConverter(IMAGE_SIZE)


MODELS = {"ours": ours, "keras-hub": keras_hub_vit, "cnn": cnn}


def probe(build, steps, passes, test_examples):
    """(parameters, training accuracy of the last pass, test accuracy, training seconds)."""
    keras.utils.set_random_seed(0)
    model, converter = build()
    x_train, y_train = scenes_and_shapes("train", steps * BATCH_SIZE // passes, converter)
    x_test, y_test = scenes_and_shapes("test", test_examples, converter)
    warmup = max(1, steps // 20)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps - warmup, warmup_target=1e-3, warmup_steps=warmup
    )
    model.compile(
        keras.optimizers.AdamW(schedule, weight_decay=1e-4),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=passes, verbose=0)
    seconds = time.perf_counter() - start
    test_accuracy = model.evaluate(x_test, y_test, batch_size=BATCH_SIZE, verbose=0)[1]
    return model.count_params(), history.history["accuracy"][-1], test_accuracy, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--passes", type=int, default=8,
                        help="times each cached training scene is seen")
    parser.add_argument("--test-examples", type=int, default=1000)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()
    if args.steps < 20 or args.passes < 1 or args.steps * BATCH_SIZE // args.passes < 1:
        parser.error("--steps must be >= 20 and --passes between 1 and steps × 64.")
    print(f"{args.steps} steps of {BATCH_SIZE}, {args.steps * BATCH_SIZE // args.passes} "
          f"training scenes seen {args.passes}×, {args.test_examples} test scenes, "
          f"{keras.config.backend()}; chance is {1 / len(scenes.SHAPES):.3f}", flush=True)
    print("| model | parameters | training accuracy | test accuracy | training s |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models:
        params, train_accuracy, test_accuracy, seconds = probe(
            MODELS[name], args.steps, args.passes, args.test_examples
        )
        print(f"| {name} | {params:,} | {train_accuracy:.3f} | {test_accuracy:.3f} | "
              f"{seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
