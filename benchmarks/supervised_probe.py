"""How fast the main job's image tower can learn shape, or find an object, under supervision.

    KERAS_BACKEND=jax python benchmarks/supervised_probe.py [--task shape|box] [--steps 400]
        [--passes 8] [--models ours keras-hub cnn]

Each model is trained from scratch on single-object scenes of the embedded dataset, with the
same optimiser (AdamW at 1e-3, 5 % warmup, cosine decay, weight decay 1e-4), batch 64 and
`--steps` updates over `steps × 64 / passes` cached training scenes, then scored on 1,000 test
scenes. `--task shape` names the object's shape (7 classes, cross-entropy; accuracy);
`--task box` regresses its box (y0, x0, y1, x1 through a sigmoid, L1 loss; mean IoU, next to
the IoU of one constant box at the training boxes' mean). The models:

- ours: the main job's NaFlex tower (`MainJobConfig`'s patch size, patch budget, width and
  depth), its MAP-pooled output through a linear layer;
- ours-conv-stem: the same tower behind a convolutional stem run inside each patch (3×3
  convolutions of `--stem-channels`, ReLU, a 2×2 max-pool, a 1×1 convolution back to the
  patch's size), which keeps NaFlex's independent patches: does local convolution, the CNN's
  advantage, make the tower learn faster;
- keras-hub: `keras_hub.models.ViTBackbone` of the same size on the same pixel budget (64×64
  px, 8 px patches), its class token through a linear layer; the reference ViT;
- cnn: three 3×3 convolutions (32, 64, 64 channels, ReLU, 2×2 max-pooling between them), then
  a global max-pool (shape) or one more 2×2 max-pool and the flattened map (box, which needs
  the position), on the same 64×64 images: a calibration of how hard the task is.

If both ViTs stay far below the CNN, the task is slow to learn for a small ViT trained from
scratch, not a fault of our tower or of the data.
"""

import argparse
import time

import keras
import keras_hub
import numpy as np

from keras_siglip2.datasets import scenes
from keras_siglip2.evaluation import box_iou
from keras_siglip2.main_job import MainJobConfig
from keras_siglip2.models.naflex_vision_encoder import SigLIP2NaFlexVisionEncoder
from keras_siglip2.preprocessing import NaFlexImageConverter, SigLIP2ImageConverter

BATCH_SIZE = 64
CONFIG = MainJobConfig()
IMAGE_SIZE = CONFIG.patch_size * round(CONFIG.max_num_patches**0.5)  # the same pixel budget


def head(task):
    if task == "shape":
        return keras.layers.Dense(len(scenes.SHAPES))
    return keras.layers.Dense(4, activation="sigmoid")


def single_object_scenes(split, count, task):
    """(uint8 images, shape ids or (y0, x0, y1, x1) boxes) of `count` single-object scenes."""
    images, targets = [], []
    for batch in scenes.numpy_batches(split, 256, count, num_objects=(1, 1)):
        images += batch["image"]
        targets += [t[0] for t in batch["shape" if task == "shape" else "boxes"]]
    return images, np.array(targets, "int32" if task == "shape" else "float32")


def converted(converter, images):
    """`images` through `converter`, 256 at a time, concatenated."""
    parts = [converter(images[i:i + 256]) for i in range(0, len(images), 256)]
    return keras.tree.map_structure(lambda *xs: np.concatenate(xs), *parts)


def ours(task):
    tower = SigLIP2NaFlexVisionEncoder(
        patch_size=CONFIG.patch_size, hidden_dim=CONFIG.width, num_layers=CONFIG.depth,
        num_heads=CONFIG.num_heads, intermediate_dim=4 * CONFIG.width,
        position_grid_size=round(CONFIG.max_num_patches**0.5),
    )
    outputs = head(task)(tower.output["pooled_output"])
    converter = NaFlexImageConverter(CONFIG.patch_size, CONFIG.max_num_patches)
    return keras.Model(tower.input, outputs), converter


class PatchConvStem(keras.layers.Layer):
    """Convolutions inside each (B, N, p²·3) patch, returning the same shape."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.convs = [keras.layers.Conv2D(c, 3, padding="same", activation="relu")
                      for c in channels]
        self.pool = keras.layers.MaxPool2D()
        self.out = keras.layers.Conv2D(12, 1)  # (p/2)² · 12 = p² · 3 values

    def call(self, patches):
        size = CONFIG.patch_size
        x = keras.ops.reshape(patches, (-1, size, size, 3))
        for conv in self.convs:
            x = conv(x)
        x = self.out(self.pool(x))
        return keras.ops.reshape(x, keras.ops.shape(patches))


def ours_conv_stem(task, stem_channels):
    tower, converter = ours(task)
    inputs = {k: keras.Input(v.shape[1:], dtype=v.dtype, name=k) for k, v in tower.input.items()}
    stemmed = dict(inputs, patches=PatchConvStem(stem_channels)(inputs["patches"]))
    return keras.Model(inputs, tower(stemmed)), converter


def keras_hub_vit(task):
    vit = keras_hub.models.ViTBackbone(
        image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), patch_size=CONFIG.patch_size,
        num_layers=CONFIG.depth, num_heads=CONFIG.num_heads, hidden_dim=CONFIG.width,
        mlp_dim=4 * CONFIG.width,
    )
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    class_token = vit(inputs)[:, 0]
    return keras.Model(inputs, head(task)(class_token)), SigLIP2ImageConverter(IMAGE_SIZE)


def cnn(task):
    layers = keras.layers
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    x = inputs
    for channels in (32, 64):
        x = layers.MaxPool2D()(layers.Conv2D(channels, 3, padding="same", activation="relu")(x))
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.GlobalMaxPool2D()(x) if task == "shape" else layers.Flatten()(layers.MaxPool2D()(x))
    return keras.Model(inputs, head(task)(x)), SigLIP2ImageConverter(IMAGE_SIZE)


MODELS = {"ours": ours, "ours-conv-stem": ours_conv_stem, "keras-hub": keras_hub_vit, "cnn": cnn}
COLUMNS = {
    "shape": ("training accuracy (last pass)", "test accuracy"),
    "box": ("test IoU", "IoU of the mean training box"),
}


def probe(name, task, steps, passes, train, test, stem_channels=(16,)):
    """(parameters, the task's two `COLUMNS`, training seconds) of one model.

    `train`, `test`: (images, targets) from `single_object_scenes`, rendered once for all models.
    """
    keras.utils.set_random_seed(0)
    extra = (stem_channels,) if name == "ours-conv-stem" else ()
    model, converter = MODELS[name](task, *extra)
    (x_train, y_train), (x_test, y_test) = ((converted(converter, x), y) for x, y in (train, test))
    warmup = max(1, steps // 20)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps - warmup, warmup_target=1e-3, warmup_steps=warmup
    )
    shape = task == "shape"
    model.compile(
        keras.optimizers.AdamW(schedule, weight_decay=1e-4),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True) if shape else "mae",
        metrics=["accuracy"] if shape else None,
    )
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=passes, verbose=0)
    seconds = time.perf_counter() - start
    if shape:
        scores = (history.history["accuracy"][-1],
                  model.evaluate(x_test, y_test, batch_size=BATCH_SIZE, verbose=0)[1])
    else:
        predicted = model.predict(x_test, batch_size=BATCH_SIZE, verbose=0)
        scores = (box_iou(predicted, y_test).mean(), box_iou(y_train.mean(0), y_test).mean())
    return model.count_params(), *scores, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=list(COLUMNS), default="shape")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--passes", type=int, default=8,
                        help="times each cached training scene is seen")
    parser.add_argument("--test-examples", type=int, default=1000)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--stem-channels", type=int, nargs="+", default=[16],
                        help="channels of ours-conv-stem's 3×3 convolutions")
    args = parser.parse_args()
    if args.steps < 20 or args.passes < 1 or args.steps * BATCH_SIZE // args.passes < 1:
        parser.error("--steps must be >= 20 and --passes between 1 and steps × 64.")
    chance = f"; chance is {1 / len(scenes.SHAPES):.3f}" if args.task == "shape" else ""
    print(f"{args.task}: {args.steps} steps of {BATCH_SIZE}, "
          f"{args.steps * BATCH_SIZE // args.passes} training scenes seen {args.passes}×, "
          f"{args.test_examples} test scenes, {keras.config.backend()}{chance}", flush=True)
    print(f"| model | parameters | {' | '.join(COLUMNS[args.task])} | training s |")
    print("|---|---:|---:|---:|---:|")
    train = single_object_scenes("train", args.steps * BATCH_SIZE // args.passes, args.task)
    test = single_object_scenes("test", args.test_examples, args.task)
    for name in args.models:
        params, first, second, seconds = probe(
            name, args.task, args.steps, args.passes, train, test, args.stem_channels
        )
        print(f"| {name} | {params:,} | {first:.3f} | {second:.3f} | {seconds:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
