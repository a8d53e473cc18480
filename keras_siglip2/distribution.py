"""Multi-device training on Keras's and TensorFlow's own distribution APIs.

JAX: `keras.distribution.DataParallel()` as is, or `model_parallel(...)` (a
`ModelParallel` with `siglip2_layout_map`). TensorFlow: `strategy(kind)`, then
build and compile the trainer under `strategy.scope()`. In both, `fit` is
unchanged and `SigLIP2Trainer` computes the sigmoid loss with
`sharded_sigmoid_loss` (never gathering the B × B logits).
"""

import keras


def siglip2_layout_map(device_mesh, model_axis="model"):
    """A `keras.distribution.LayoutMap` sharding SigLIP 2 over `model_axis`.

    Megatron-style: attention q/k/v kernels and MLP `fc1` split their output
    features (and biases), attention `out` and MLP `fc2` their input features;
    the token embeddings (the text tower's 256k rows, the LocCa decoder's) are
    split by row and the LocCa output projection by column. Everything else
    (norms, position embeddings, heads, the logit scale and bias) is replicated.
    Sharded sizes must be multiples of the mesh's `model_axis` size.

    Example (Keras distribution exists on JAX and TensorFlow, not PyTorch):
    >>> if keras.config.backend() != "torch":
    ...     mesh = keras.distribution.DeviceMesh(
    ...         (1, 1), ("batch", "model"), keras.distribution.list_devices()[:1])
    ...     layout_map = siglip2_layout_map(mesh)
    ...     assert layout_map["encoder/block_0/mlp/fc1/kernel"].axes == (None, "model")
    ...     assert layout_map["token_embedding/embeddings"].axes == ("model", None)
    """
    if model_axis not in device_mesh.axis_names:
        raise ValueError(
            f"The device mesh has axes {device_mesh.axis_names}, not {model_axis!r}: "
            "name its model-parallel axis, e.g. DeviceMesh((2, 4), ('batch', 'model'))."
        )
    layout_map = keras.distribution.LayoutMap(device_mesh)
    columns, rows, vector = (None, model_axis), (model_axis, None), (model_axis,)
    layout_map[".*attention/(query|key|value)/kernel"] = columns
    layout_map[".*attention/(query|key|value)/bias"] = vector
    layout_map[".*attention/out/kernel"] = rows
    layout_map[".*mlp/fc1/kernel"] = columns
    layout_map[".*mlp/fc1/bias"] = vector
    layout_map[".*mlp/fc2/kernel"] = rows
    layout_map["(.*/)?token_embedding/embeddings"] = rows
    layout_map[".*decoder/logits/kernel"] = columns
    layout_map[".*decoder/logits/bias"] = vector
    return layout_map


def model_parallel(model_shards, devices=None, batch_axis="batch", model_axis="model"):
    """`keras.distribution.ModelParallel` over a (devices / model_shards, model_shards)
    mesh with `siglip2_layout_map`: the batch is split over the first axis.

    Example:
    >>> if keras.config.backend() == "jax":
    ...     one = model_parallel(1, devices=keras.distribution.list_devices()[:1])
    ...     assert one.device_mesh.shape == (1, 1) and one.batch_dim_name == "batch"
    """
    devices = keras.distribution.list_devices() if devices is None else list(devices)
    if model_shards < 1 or len(devices) % model_shards:
        raise ValueError(
            f"model_shards={model_shards} must be a positive divisor of the number of "
            f"devices ({len(devices)})."
        )
    mesh = keras.distribution.DeviceMesh(
        (len(devices) // model_shards, model_shards), (batch_axis, model_axis), devices
    )
    return keras.distribution.ModelParallel(
        layout_map=siglip2_layout_map(mesh, model_axis), batch_dim_name=batch_axis
    )


def strategy(kind="default", devices=None, tpu="local"):
    """A `tf.distribute.Strategy` for training on the TensorFlow backend.

    Args:
        kind: "default" (the current strategy: one device), "mirrored"
            (`MirroredStrategy`: every local GPU, or `devices`) or "tpu"
            (`TPUStrategy`, connecting to and initialising the TPU system).
        devices: for "mirrored", device names, e.g. ["/gpu:0", "/gpu:1"].
        tpu: for "tpu", the TPU to use: "local" on a TPU VM, else a TPU
            name or "grpc://host:8470" address (resolved over the network).

    Raises `RuntimeError` at once when no TPU is found.

    Example:
    >>> if keras.config.backend() == "tensorflow":
    ...     assert strategy().num_replicas_in_sync == 1
    """
    if keras.config.backend() != "tensorflow":
        raise ValueError(
            f"tf.distribute strategies drive the TensorFlow backend, not "
            f"{keras.config.backend()!r}: set KERAS_BACKEND=tensorflow, or on JAX use "
            "keras.distribution.DataParallel() / keras_siglip2.distribution.model_parallel()."
        )
    import tensorflow as tf

    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if kind == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            if tpu != "local":
                tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, OSError, tf.errors.OpError) as error:
            raise RuntimeError(
                f"No TPU found (tpu={tpu!r}): {str(error).splitlines()[0]} Run on a TPU VM "
                "(tpu='local'), pass a TPU name or grpc:// address, or train on GPU/CPU "
                "with kind='mirrored' or 'default'."
            ) from error
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy kind {kind!r}: use 'default', 'mirrored' or 'tpu'.")
