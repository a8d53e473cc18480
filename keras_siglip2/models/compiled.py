"""Running a function of some layers as one compiled program, through Keras's own API.

`CompiledCall(fn, layers)` is a `keras.Model` whose `call` is `fn`; its `predict_on_batch` is
Keras's compiled inference: `jax.jit` on JAX (one trace per input shape), a `tf.function` on
TensorFlow. On PyTorch, whose Keras models run layer by layer, it is that call without
autograd, or with `torch_program` a `torch.export` program of the model, one per input shape,
optionally compiled with `torch.compile` (`torch_program.py`). It takes the layers' variables
as they are at each call and returns numpy. On JAX, Keras donates the variables' buffers to the
program and stores the arrays it returns: an array read from `variable.value` before a call is
deleted after it (read it again).

`runs_traced(inputs)` says when a function must run its layers directly instead: on symbolic
or traced inputs, inside another layer's call (a training step, a model being called or
built) or a `keras.StatelessScope`, where a separate compiled program would read the wrong
variable values or cut the gradients. Those checks, and the torch program, are the only
per-backend code.
"""

import keras
import numpy as np

from keras_siglip2._compat import in_keras_call_or_scope


class CompiledCall(keras.Model):
    """`fn(inputs)` as a model over `layers`, so that `predict_on_batch` compiles it.

    `layers` are the built layers `fn` uses: the model tracks them, so their variables are
    the program's state, never constants baked into it. `torch_program` is how
    `predict_on_batch` runs on the torch backend: None, Keras's layer-by-layer call;
    "export", a `torch.export` program per input shape; "compile", that program compiled
    with `torch.compile` (faster calls, tens of seconds to compile each shape).

    Example:
    >>> dense = keras.layers.Dense(2)
    >>> dense.build((None, 3))
    >>> double = CompiledCall(lambda x: 2 * dense(x), [dense], name="double")
    >>> double.predict_on_batch(np.ones((4, 3), "float32")).shape
    (4, 2)
    """

    def __init__(self, fn, layers, name=None, dtype=None, torch_program=None):
        super().__init__(name=name, dtype=dtype)
        self.fn = fn
        self.uses = list(layers)
        if torch_program not in (None, "export", "compile"):
            raise ValueError(
                f'torch_program is None, "export" or "compile"; got {torch_program!r}.'
            )
        self.torch_program = torch_program
        self.built = True  # `layers` are built: no eager first call to build the model.

    def call(self, inputs):
        return self.fn(inputs)

    def predict_on_batch(self, x):
        if keras.config.backend() != "torch" or self.torch_program is None:
            return super().predict_on_batch(x)
        # In the instance dict, out of Keras's (and torch's module) tracking.
        if "_programs" not in vars(self):
            from keras_siglip2.models.torch_program import ExportedPrograms

            vars(self)["_programs"] = ExportedPrograms(self, self.torch_program == "compile")
        return vars(self)["_programs"](x)


def host_arrays(inputs):
    """`inputs` with every leaf that is not a backend tensor as a numpy array (e.g. the
    `tf.Tensor`s of a preprocessing layer on another backend, which `jax.jit` rejects)."""
    return keras.tree.map_structure(
        lambda x: x if keras.ops.is_tensor(x) or isinstance(x, np.ndarray) else np.asarray(x),
        inputs,
    )


def runs_traced(inputs):
    """Whether `inputs` are symbolic or traced, or a layer call or stateless scope is active.

    Example:
    >>> runs_traced(np.zeros(3)), runs_traced(keras.Input((3,)))
    (False, True)
    """
    if in_keras_call_or_scope():
        return True
    leaves = keras.tree.flatten(inputs)
    if any(keras.backend.is_keras_tensor(x) for x in leaves):
        return True
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        return any(isinstance(x, jax.core.Tracer) for x in leaves)
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.executing_eagerly()
    if backend == "torch":
        import torch

        return torch.compiler.is_compiling()
    return False
