"""Multi-device checks run in a subprocess (devices must exist before JAX / TF start).

    KERAS_BACKEND=jax python tests/distributed_checks.py          # 8 simulated CPU devices
    KERAS_BACKEND=tensorflow python tests/distributed_checks.py   # 4 logical CPU devices

Prints one JSON line of results that tests/test_distribution.py checks.
"""

import contextlib
import json
import os
import sys

BACKEND = os.environ["KERAS_BACKEND"]
DEVICES = 8 if BACKEND == "jax" else 4
if BACKEND == "jax":
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"
else:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from conftest import naflex_batch  # noqa: E402
from keras_siglip2 import (  # noqa: E402
    SigLIP2Backbone,
    SigLIP2NaFlexVisionEncoder,
    SigLIP2TextEncoder,
    SigLIP2Trainer,
    SigLIP2VisionEncoder,
)
from keras_siglip2.distribution import model_parallel, strategy  # noqa: E402
from keras_siglip2.losses import sharded_sigmoid_loss, sigmoid_loss  # noqa: E402
from keras_siglip2.losses.collectives import scale_for_replicas  # noqa: E402

GLOBAL_BATCH, STEPS, CHUNK = 16, 3, 3
LEARNING_RATE = 0.02
if BACKEND == "tensorflow":  # one strategy: a second one on the same devices clashes
    MIRRORED = strategy(
        "mirrored", devices=[d.name for d in tf.config.list_logical_devices("CPU")]
    )


def dense(x, y, t, b):
    return ops.mean(sigmoid_loss(ops.exp(t) * ops.matmul(x, ops.transpose(y)) + b))


def embeddings(batch, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(2, batch, 6)).astype("float32")
    return (x, y, np.float32(1.7), np.float32(-4.0))


def max_error(got, want):
    """Largest |difference| relative to max(1, |want|), over value and gradients."""
    return max(
        float(np.max(np.abs(np.asarray(g) - np.asarray(w)) / np.maximum(1.0, np.abs(w))))
        for g, w in zip(got, want)
    )


def jax_loss_checks():
    import jax

    results = []
    for batch, mesh, chunk in [(8, (8,), None), (24, (8,), 2), (16, (4, 2), 3)]:
        args = embeddings(batch, batch)
        argnums = (0, 1, 2, 3)
        value, grads = jax.value_and_grad(dense, argnums=argnums)(*args)
        device_mesh = keras.distribution.DeviceMesh(mesh, ("batch", "model")[: len(mesh)])
        distribution = (
            keras.distribution.DataParallel(device_mesh) if len(mesh) == 1
            else keras.distribution.ModelParallel(
                layout_map=keras.distribution.LayoutMap(device_mesh)
            )
        )
        with distribution.scope():
            step = jax.jit(jax.value_and_grad(
                lambda *a, chunk=chunk: sharded_sigmoid_loss(*a, chunk_size=chunk), argnums
            ))
            compiled = step.lower(*args).compile()
            got_value, got_grads = compiled(*args)
            hlo = compiled.as_text()
        results.append({
            "batch": batch, "mesh": mesh, "chunk": chunk,
            "error": max_error([got_value, *got_grads], [value, *grads]),
            "ring": "collective-permute" in hlo, "gathers": "all-gather" in hlo,
        })
    return results


def jax_memory():
    """XLA's temporary bytes per device of the loss value + gradient, dense vs ring."""
    import jax

    batch, width, chunk = 4096, 64, 128
    args = embeddings(batch, 0)
    args = (np.resize(args[0], (batch, width)), np.resize(args[1], (batch, width)), *args[2:])
    temp = {}
    dense_step = jax.jit(jax.value_and_grad(dense, argnums=(0, 1, 2, 3)))
    temp["dense"] = dense_step.lower(*args).compile().memory_analysis().temp_size_in_bytes
    with keras.distribution.DataParallel().scope():
        ring = jax.jit(jax.value_and_grad(
            lambda *a: sharded_sigmoid_loss(*a, chunk_size=chunk), argnums=(0, 1, 2, 3)
        ))
        temp["ring"] = ring.lower(*args).compile().memory_analysis().temp_size_in_bytes
    return {"batch": batch, "width": width, "chunk": chunk, **temp}


def tf_loss_checks():
    results = []
    mirrored = MIRRORED
    for batch, chunk in [(8, None), (12, 5)]:
        args = embeddings(batch, batch)
        tensors = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = dense(*tensors)
        want = [value, *tape.gradient(value, tensors)]
        local = batch // DEVICES

        def split(context, k, args=args, local=local):
            return args[k][context.replica_id_in_sync_group * local:][:local]

        x = mirrored.experimental_distribute_values_from_function(lambda c: split(c, 0))
        y = mirrored.experimental_distribute_values_from_function(lambda c: split(c, 1))

        @tf.function
        def replica_step(x, y, t, b, chunk=chunk):
            with tf.GradientTape() as tape:
                tape.watch([x, y, t, b])
                loss = scale_for_replicas(sharded_sigmoid_loss(x, y, t, b, chunk))
            return (loss, *tape.gradient(loss, [x, y, t, b]))

        out = mirrored.run(replica_step, (x, y, tf.constant(args[2]), tf.constant(args[3])))
        total = lambda v: mirrored.reduce("SUM", v, axis=None)  # noqa: E731
        joined = lambda v: np.concatenate(mirrored.experimental_local_results(v))  # noqa: E731
        got = [total(out[0]), joined(out[1]), joined(out[2]), total(out[3]), total(out[4])]
        results.append({"batch": batch, "replicas": DEVICES, "chunk": chunk,
                        "error": max_error(got, want)})
    return results


def backbone(naflex=False):
    """One block per tower: compiling for 8 devices on a shared CPU is the cost."""
    keras.utils.set_random_seed(0)
    width = dict(hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32)
    vision = (
        SigLIP2NaFlexVisionEncoder(patch_size=4, position_grid_size=4, **width) if naflex
        else SigLIP2VisionEncoder(image_size=16, patch_size=8, **width)
    )
    return SigLIP2Backbone(
        vision,
        SigLIP2TextEncoder(vocabulary_size=64, sequence_length=4, embedding_dim=16, **width),
    )


def data(naflex=False):
    """A fixed global batch; NaFlex images have grids of 1-16 patches, so every device's
    shard holds a different amount of padding."""
    rng = np.random.default_rng(1)
    token_ids = rng.integers(2, 64, (GLOBAL_BATCH, 4)).astype("int32")
    if naflex:
        shapes = rng.integers(1, 5, (GLOBAL_BATCH, 2))
        return {**naflex_batch(shapes, 16, patch_size=4, seed=1), "token_ids": token_ids}
    return {
        "images": rng.uniform(-1, 1, (GLOBAL_BATCH, 16, 16, 3)).astype("float32"),
        "token_ids": token_ids,
    }


def trajectory(scope, weights=None, naflex=False):
    """Losses of STEPS SGD steps on one fixed global batch, and the final weights."""
    with scope:
        trainer = SigLIP2Trainer(backbone(naflex), loss_chunk_size=CHUNK)
        if weights is not None:
            trainer.set_weights(weights)
        start = trainer.get_weights()
        trainer.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    history = trainer.fit(
        data(naflex), batch_size=GLOBAL_BATCH, epochs=STEPS, shuffle=False, verbose=0
    )
    return trainer, start, history.history


def weights_error(trainer, reference):
    return max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(trainer.get_weights(), reference.get_weights())
    )


def scope_factories():
    """{name: () → a fresh (single-use) distribution scope}; data parallelism first."""
    if BACKEND == "jax":
        return {
            "data_parallel": lambda: keras.distribution.DataParallel().scope(),
            "model_parallel": lambda: model_parallel(4).scope(),
        }
    return {"mirrored": MIRRORED.scope}


def fit_checks():
    single, start, want = trajectory(contextlib.nullcontext())
    out = {"single": want}
    factories = scope_factories()
    for name, scope in factories.items():
        trainer, _, history = trajectory(scope(), start)
        out[name] = history
        out[name + "_weights_error"] = weights_error(trainer, single)
        if name == "model_parallel":
            embedding = trainer.backbone.text_encoder.token_embedding.embeddings
            out["embedding_sharding"] = list(embedding.value.sharding.spec)
    # The NaFlex tower data-parallel (the main job's `distribution` option).
    single, start, want = trajectory(contextlib.nullcontext(), naflex=True)
    name = next(iter(factories))
    trainer, _, history = trajectory(factories[name](), start, naflex=True)
    out["naflex"] = {"single": want, name: history,
                     name + "_weights_error": weights_error(trainer, single)}
    return out


if __name__ == "__main__":
    results = {"fit": fit_checks()}
    if BACKEND == "jax":
        results["loss"] = jax_loss_checks()
        results["memory"] = jax_memory()
    else:
        results["loss"] = tf_loss_checks()
    print(json.dumps(results))
