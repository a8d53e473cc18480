"""Cross-device primitives of the sharded sigmoid loss: its only backend-specific code.

JAX: the batch axis of the current `keras.distribution` (the loss runs per device
under `shard_map`, with `ppermute` / `psum` over that axis). TensorFlow: the
`tf.distribute` replica context (`all_gather`, replica id). Outside either,
there is one shard.
"""

import keras


def batch_shards():
    """How many devices the batch is split over here (1 outside a distribution).

    Example:
    >>> batch_shards()
    1
    """
    backend = keras.config.backend()
    if backend == "jax":
        distribution = keras.distribution.distribution()
        if distribution is None:
            return 1
        mesh = distribution.device_mesh
        return mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)]
    if backend == "tensorflow":
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        return 1 if context is None else context.num_replicas_in_sync
    return 1


def shard_index():
    """This device's position along the batch axis (inside `over_batch_shards` on
    JAX; in a replica context on TensorFlow).

    Example:
    >>> int(shard_index()) if keras.config.backend() == "tensorflow" else 0
    0
    """
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        return tf.distribute.get_replica_context().replica_id_in_sync_group
    import jax

    return jax.lax.axis_index(_batch_axis())


def scale_for_replicas(loss):
    """`loss` / replicas in a TensorFlow replica context, as Keras scales its losses.

    `tf.distribute` sums the replicas' gradients; Keras's TF trainer logs the
    returned loss times the replicas. Elsewhere `loss` is returned unchanged.

    Example:
    >>> float(scale_for_replicas(keras.ops.ones(())))
    1.0
    """
    replicas = batch_shards() if keras.config.backend() == "tensorflow" else 1
    return loss if replicas == 1 else loss / replicas


def gather_replicas(x):
    """All replicas' `x` concatenated along axis 0, in replica order (TensorFlow).

    Differentiable: the gradient of a replica's slice is summed over replicas.

    Example:
    >>> if keras.config.backend() == "tensorflow":  # the default strategy: one replica
    ...     assert tuple(gather_replicas(keras.ops.ones((2, 3))).shape) == (2, 3)
    """
    import tensorflow as tf

    return tf.distribute.get_replica_context().all_gather(x, axis=0)


def over_batch_shards(fn, args, sharded, out_sharded):
    """`fn` run on each device of the current JAX distribution's batch axis.

    `args` flagged True in `sharded` are split along their first axis over the
    batch axis, the rest replicated; `out_sharded` (a bool or a tuple of bools)
    says the same of the outputs. Replicated outputs must be equal on every
    device (reduce them with `sum_over_shards`).

    Example:
    >>> def total(x):
    ...     return sum_over_shards(keras.ops.sum(x))
    >>> if keras.config.backend() == "jax":  # all local devices
    ...     with keras.distribution.DataParallel().scope():
    ...         assert float(over_batch_shards(total, (np.ones(8),), (True,), False)) == 8.0
    """
    import jax
    from jax.sharding import PartitionSpec

    distribution = keras.distribution.distribution()
    spec = lambda split: PartitionSpec(distribution.batch_dim_name) if split else PartitionSpec()  # noqa: E731
    out_specs = (
        tuple(map(spec, out_sharded)) if isinstance(out_sharded, tuple) else spec(out_sharded)
    )
    if hasattr(jax, "shard_map"):
        shard_map, unchecked = jax.shard_map, {"check_vma": False}
    else:  # jax < 0.6
        from jax.experimental.shard_map import shard_map

        unchecked = {"check_rep": False}
    return shard_map(
        fn, mesh=distribution.device_mesh.backend_mesh, in_specs=tuple(map(spec, sharded)),
        out_specs=out_specs, **unchecked,
    )(*args)


def pass_to_next(tree):
    """Sends `tree` (arrays) to the next device on the batch axis, in a ring (JAX).

    Example:
    >>> if keras.config.backend() == "jax":  # one device: the ring is the identity
    ...     one = keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:1])
    ...     with one.scope():
    ...         x = over_batch_shards(pass_to_next, (np.arange(8.0),), (True,), True)
    ...     assert x.tolist() == list(range(8))
    """
    import jax

    shards = batch_shards()
    ring = [(i, (i + 1) % shards) for i in range(shards)]
    return jax.lax.ppermute(tree, _batch_axis(), ring)


def sum_over_shards(x):
    """The sum of `x` over the devices of the batch axis (JAX).

    Example:
    >>> if keras.config.backend() == "jax":
    ...     with keras.distribution.DataParallel().scope():
    ...         ones = over_batch_shards(
    ...             lambda x: sum_over_shards(x[:1]), (np.ones(8),), (True,), False)
    ...     assert ones.tolist() == [keras.distribution.DataParallel().num_model_replicas]
    """
    import jax

    return jax.lax.psum(x, _batch_axis())


def _batch_axis():
    return keras.distribution.distribution().batch_dim_name
