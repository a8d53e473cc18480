"""
Title: Training SigLIP 2 on many devices: TPU pods, multi-GPU, and simulated CPUs
Author: keras_siglip2 developers
Description: Keras's and TensorFlow's own distribution APIs with `SigLIP2Trainer.fit`.
Accelerator: None (simulates 8 or 4 devices on a CPU)
"""

"""
## What changes, and what does not

SigLIP 2 was trained at batch 32k on 2048 TPU chips. Nothing in `keras_siglip2` is a
distribution layer of its own: on JAX you pick a `keras.distribution`, on TensorFlow a
`tf.distribute` strategy, and call the same `fit`. Two things are ours:

- `SigLIP2Trainer` sees that the batch is split and computes the sigmoid loss with
  `sharded_sigmoid_loss`: on JAX each device keeps its images and passes its texts (and,
  in the backward pass, their gradients) round a ring of devices, so no device ever holds
  all embeddings or more than B/D × chunk logits; on TensorFlow each replica all-gathers
  the texts and computes its own rows, chunk by chunk. Values and gradients are the
  single-device loss's.
- `keras_siglip2.distribution` holds a layout map for model parallelism
  (`siglip2_layout_map`, `model_parallel`) and `strategy(kind)` for TensorFlow.

`remat=True` on the encoders recomputes each transformer block in the backward pass:
less activation memory for about a third more compute.

## The exact configurations

**TPU pod, JAX** (one process per host, every host runs the same script):

```python
import keras
keras.distribution.initialize()            # joins the hosts of the pod slice
distribution = keras.distribution.DataParallel()        # the batch over all chips
# or, for the 256k-row text embedding and wide MLPs split over 4 chips each:
# from keras_siglip2.distribution import model_parallel
# distribution = model_parallel(model_shards=4)
keras.distribution.set_distribution(distribution)
backbone = SigLIP2Backbone(SigLIP2VisionEncoder(..., remat=True),
                           SigLIP2TextEncoder(..., remat=True))
trainer = SigLIP2Trainer(backbone, loss_chunk_size=1024)
trainer.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4))
trainer.fit(dataset.batch(32768 // jax.process_count()), ...)   # per-host batch
```

**TPU, TensorFlow** (a TPU VM; pass `tpu="name"` or `"grpc://..."` for a remote one):

```python
from keras_siglip2.distribution import strategy
tpu = strategy("tpu")                      # fails at once where there is no TPU
with tpu.scope():
    trainer = SigLIP2Trainer(SigLIP2Backbone(...), loss_chunk_size=1024)
    trainer.compile(optimizer="adamw")
trainer.fit(dataset.batch(32768, drop_remainder=True), ...)   # global batch
```

**Several GPUs**: JAX as above with `keras.distribution.DataParallel()`; TensorFlow with
`strategy("mirrored")` in place of `strategy("tpu")`. PyTorch has no Keras distribution
support: there, train on one device. Every batch must split evenly over the devices
(`drop_remainder=True`), and NaFlex batches need one static sequence length.

## A run on simulated devices

Devices have to exist before the backend starts, so this is set before importing Keras:
8 host devices for JAX, 4 logical CPUs for TensorFlow.
"""

import os

BACKEND = os.environ.setdefault("KERAS_BACKEND", "jax")
STEPS = int(os.environ.get("GUIDE_STEPS", 40))
OUTPUT = os.environ.get("GUIDE_OUTPUT", "multi_device.png")
if BACKEND == "jax":
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )
elif BACKEND == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 4
    )

import contextlib

import keras
import numpy as np
from PIL import Image, ImageDraw

from keras_siglip2 import (
    SigLIP2Backbone,
    SigLIP2TextEncoder,
    SigLIP2Trainer,
    SigLIP2VisionEncoder,
)
from keras_siglip2.distribution import model_parallel, strategy

"""
A toy task: each image is one of 16 flat colours, its "caption" the colour's id. A
model that learns the pairing pushes the sigmoid loss down.
"""

BATCH, CLASSES = 32, 16
rng = np.random.default_rng(0)
colours = rng.uniform(-1, 1, (CLASSES, 3)).astype("float32")
labels = rng.integers(0, CLASSES, 8 * BATCH)
data = {
    "images": np.broadcast_to(colours[labels][:, None, None], (len(labels), 16, 16, 3)),
    "token_ids": np.stack([labels + 2, np.ones_like(labels)], axis=-1).astype("int32"),
}


def backbone():
    keras.utils.set_random_seed(0)
    width = dict(hidden_dim=32, num_layers=1, num_heads=2, intermediate_dim=64)
    # Sizes split over the model axis (vocabulary, widths) must be multiples of it.
    return SigLIP2Backbone(
        SigLIP2VisionEncoder(image_size=16, patch_size=8, remat=True, **width),
        SigLIP2TextEncoder(vocabulary_size=CLASSES + 4, sequence_length=2, embedding_dim=32,
                           remat=True, **width),
    )


class PerStep(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["sigmoid_loss"]))


def train(scope, weights=None):
    """`STEPS` steps of the same data in the same order; per-step sigmoid losses."""
    with scope:
        trainer = SigLIP2Trainer(backbone(), loss_chunk_size=8)
        if weights is not None:
            trainer.set_weights(weights)
        start = trainer.get_weights()
        trainer.compile(optimizer=keras.optimizers.SGD(0.05))
    steps = PerStep()
    epochs = max(1, STEPS // (len(labels) // BATCH))
    trainer.fit(data, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
                callbacks=[steps])
    return steps.losses, start


"""
One device first, then the same start and data on the simulated devices: data parallel
and model parallel (2 × 4 mesh) on JAX, `MirroredStrategy` over 4 CPUs on TensorFlow.
"""

single, start = train(contextlib.nullcontext())
curves = {"one device": single}
if BACKEND == "jax":
    curves["DataParallel, 8 devices"], _ = train(keras.distribution.DataParallel().scope(),
                                                 start)
    curves["ModelParallel, 2 x 4"], _ = train(model_parallel(4).scope(), start)
elif BACKEND == "tensorflow":
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    curves["MirroredStrategy, 4 CPUs"], _ = train(strategy("mirrored", cpus).scope(), start)
else:
    print("PyTorch: Keras distribution does not drive torch; one device only.")

for name, losses in curves.items():
    gap = np.max(np.abs(np.array(losses) - np.array(single)))
    print(f"{name:26s} first {losses[0]:.4f} last {losses[-1]:.4f} max |Δ| vs one {gap:.2e}")

"""
## The curves

The distributed curves lie on the single-device one: same loss, same gradients, only
the work is split.
"""


def plot(curves, path, width=640, height=320):
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    values = np.concatenate([np.asarray(v) for v in curves.values()])
    lo, hi = float(values.min()), float(values.max())
    span = (hi - lo) or 1.0
    palette = [(30, 90, 200), (220, 60, 40), (40, 160, 60)]
    for k, (name, losses) in enumerate(curves.items()):
        points = [(40 + (width - 60) * i / max(1, len(losses) - 1),
                   40 + (height - 60) * (1 - (v - lo) / span)) for i, v in enumerate(losses)]
        draw.line(points, fill=palette[k], width=4 - k)  # later curves drawn thinner on top
        draw.text((40, 6 + 12 * k), name, fill=palette[k])
    canvas.save(path)


plot(curves, OUTPUT)
print("saved", OUTPUT)
