"""Torch inference without Keras's per-layer Python: a model exported once per input shape.

On the torch backend Keras runs every layer's `__call__` in Python (argument binding, dtype
standardisation, tree walks: about 0.3 ms each, over a hundred per B/16 forward): about a
third of the B/16 text tower's time at batch 1. `torch.export` traces the model once into a
graph of torch operators that runs without it; `torch.compile` can then fuse that graph
(inductor), for faster calls at a one-time compile of tens of seconds per input shape. Both
are public torch APIs; Keras has none for this, so this is the package's only torch-specific
inference code.

The exported graph reads the model's parameters, not copies: `Variable.assign` writes them in
place, so a program sees new weights. A program is keyed by the inputs' shapes and dtypes and by
the identity of the model's variables, so replaced variables (a new dtype policy, quantisation)
export afresh.
"""

import keras
import numpy as np
import torch


def _signature(inputs):
    return tuple((tuple(x.shape), str(x.dtype)) for x in keras.tree.flatten(inputs))


class ExportedPrograms:
    """`model(inputs)` (a Keras model on the torch backend) as exported torch programs.

    Calls take numpy or torch inputs, on any device, and return numpy, computed without
    autograd.

    Args:
        model: a built Keras model; its variables are the programs' parameters.
        torch_compile: also compile each exported program with `torch.compile`.

    Example:
    >>> if keras.config.backend() == "torch":
    ...     dense = keras.layers.Dense(2)
    ...     model = keras.Sequential([keras.Input((3,)), dense])
    ...     run = ExportedPrograms(model)
    ...     x = np.ones((4, 3), "float32")
    ...     assert np.allclose(run(x), keras.ops.convert_to_numpy(model(x)), atol=1e-6)
    ...     _ = dense.kernel.assign(np.zeros((3, 2)))  # new weights reach the same program
    ...     assert np.allclose(run(x), keras.ops.convert_to_numpy(dense.bias)[None])
    """

    def __init__(self, model, torch_compile=False):
        self.model = model
        self.torch_compile = torch_compile
        self.programs = {}

    def __call__(self, inputs):
        # Keras's conversion: on the variables' device, numpy copied (it may be read-only).
        inputs = keras.tree.map_structure(
            lambda x: keras.ops.convert_to_tensor(x if keras.ops.is_tensor(x) else np.array(x)),
            inputs,
        )
        key = (_signature(inputs), tuple(id(v.value) for v in self.model.variables))
        if key not in self.programs:
            if len(self.programs) > 8:  # Shapes of the past, or programs of replaced weights.
                self.programs.clear()
            program = torch.export.export(self.model, (inputs,)).module()
            self.programs[key] = torch.compile(program) if self.torch_compile else program
        with torch.no_grad():
            outputs = self.programs[key](inputs)
        return keras.tree.map_structure(lambda x: x.detach().cpu().numpy(), outputs)
