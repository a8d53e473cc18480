"""Dense layers applied to token sequences as one 2-D matmul."""

from keras import ops


def dense_over_tokens(dense, x):
    """`dense(x)` for `x` (..., D) computed on `x` flattened to (-1, D).

    Keras's `Dense` runs a 3-D input as a batched matmul; XLA:CPU runs the 2-D product and
    its gradients about twice as fast (a (64, 64, 64) × (64, 256) layer, forward and
    backward: 4.3 against 10.2 ms), and the main job's train step 1.2× faster
    (docs/performance.md, the main job section). Same weights, same values.

    Example:
    >>> import keras
    >>> dense = keras.layers.Dense(4)
    >>> x = keras.random.normal((2, 3, 8))
    >>> bool(keras.ops.all(keras.ops.isclose(dense_over_tokens(dense, x), dense(x), atol=1e-6)))
    True
    """
    lead = ops.shape(x)[:-1]
    if any(d is None for d in lead):  # symbolic (functional build): the shape is what counts
        return dense(x)
    out = dense(ops.reshape(x, (-1, ops.shape(x)[-1])))
    return ops.reshape(out, (*lead, ops.shape(out)[-1]))
