"""ONNX from the torch backend with a dynamic batch, through torch's dynamo exporter.

Keras's own torch ONNX export switches to the TorchScript exporter as soon as a dimension
is dynamic, and that one fails on Keras's LayerNormalization (its normalised shape is
traced as a tensor); the dynamo exporter takes a symbolic batch dimension.
"""


def write_onnx_from_torch(model, path):
    """Writes `model` (dict inputs and outputs, from `encoders.py`) as ONNX at `path`.

    The ONNX graph's inputs and outputs carry the dict keys as names; dimension 0 of each is
    the symbolic `batch`.

    Example:
    >>> import os, tempfile, keras
    >>> inputs = {"x": keras.Input((3,), name="x")}
    >>> model = keras.Model(inputs, {"y": keras.layers.Dense(2)(inputs["x"])})
    >>> path = os.path.join(tempfile.mkdtemp(), "m.onnx")
    >>> if keras.config.backend() == "torch":  # the others export ONNX through Keras
    ...     write_onnx_from_torch(model, path)
    ...     import onnx
    ...     graph = onnx.load(path).graph
    ...     assert [i.name for i in graph.input] == ["x"], graph.input
    ...     assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    """
    import torch

    try:
        import onnxscript  # noqa: F401  (torch's dynamo exporter needs it)
    except ImportError as e:
        raise ImportError(
            "ONNX export from the torch backend needs `onnx` and `onnxscript`: "
            "`pip install onnx onnxscript`."
        ) from e
    input_names = sorted(model.input)
    output_names = sorted(model.output)

    class FlatModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            outputs = self.model(dict(zip(input_names, args)), training=False)
            return tuple(outputs[name] for name in output_names)

    # Batch 2 so that the exporter does not specialise the symbolic batch to 1.
    sample = tuple(
        torch.zeros((2, *x.shape[1:]), dtype=getattr(torch, x.dtype))
        for x in (model.input[name] for name in input_names)
    )
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        FlatModel().eval(), sample, dynamo=True, input_names=input_names,
        output_names=output_names, dynamic_shapes=(tuple({0: batch} for _ in sample),),
        verbose=False,
    )
    program.optimize()
    program.save(str(path))
