"""One walk over our transformer towers, shared by the checkpoint converters.

big_vision `.npz`, transformers safetensors and keras-hub `.weights.h5` files
hold the same tensors for a tower: per encoder block two LayerNorms, the
attention's query/key/value/out projections and a two-layer MLP, then the final
LayerNorm and, in the image tower, the MAP head (probe, attention, LayerNorm,
MLP). Each format names and lays them out its own way. `tower_tensors` walks
our layers once and asks a format's naming function where each of our
variables is and how to convert it; `load_tensors` then assigns them all
through a `WeightLoader`, the one strict check, reading each tensor once.

A naming function takes the variable's path in our tower, e.g.
`("block", 3, "attention", "query", "kernel")`, `("final_norm", "gamma")` or
`("head", "mlp", "fc1", "bias")`, and returns `(key, transform)`: the source
tensor's key and a function from its array to ours (or None if it needs none).
"""

from keras_siglip2.converters.weight_loader import WeightLoadingError


def _dense(path, dense):
    return [((*path, "kernel"), dense.kernel), ((*path, "bias"), dense.bias)]


def _norm(path, norm):
    return [((*path, "gamma"), norm.gamma), ((*path, "beta"), norm.beta)]


def _attention(path, attention):
    return [
        pair
        for role in ("query", "key", "value", "out")
        for pair in _dense((*path, role), getattr(attention, f"{role}_dense"))
    ]


def _mlp(path, mlp):
    return [*_dense((*path, "fc1"), mlp.fc1), *_dense((*path, "fc2"), mlp.fc2)]


def tower_variables(encoder, head=None):
    """`(path, variable)` for every variable of a `TransformerEncoder` and its `MAPHead`.

    Example:
    >>> from keras_siglip2.layers.transformer import TransformerEncoder
    >>> encoder = TransformerEncoder(num_layers=2, num_heads=2, intermediate_dim=16)
    >>> encoder.build((None, 3, 8))
    >>> paths = [path for path, _ in tower_variables(encoder)]
    >>> len(paths), paths[2], paths[-1]
    (34, ('block', 0, 'attention', 'query', 'kernel'), ('final_norm', 'beta'))
    """
    pairs = []
    for i, block in enumerate(encoder.blocks):
        pairs += [
            *_norm(("block", i, "norm1"), block.norm1),
            *_attention(("block", i, "attention"), block.attention),
            *_norm(("block", i, "norm2"), block.norm2),
            *_mlp(("block", i, "mlp"), block.mlp),
        ]
    pairs += _norm(("final_norm",), encoder.final_norm)
    if head is not None:
        pairs += [
            (("head", "probe"), head.probe),
            *_attention(("head", "attention"), head.attention),
            *_norm(("head", "norm"), head.norm),
            *_mlp(("head", "mlp"), head.mlp),
        ]
    return pairs


def tower_tensors(naming, encoder, head=None):
    """`(key, variable, transform)` for every variable of the tower, named by `naming`.

    Example:
    >>> from keras_siglip2.layers.transformer import TransformerEncoder
    >>> encoder = TransformerEncoder(
    ...     num_layers=1, num_heads=2, intermediate_dim=16, name="encoder")
    >>> encoder.build((None, 3, 8))
    >>> key, variable, _ = tower_tensors(lambda p: ("/".join(map(str, p)), None), encoder)[0]
    >>> key, variable.path
    ('block/0/norm1/gamma', 'encoder/block_0/norm1/gamma')
    """
    return [
        (key, variable, transform)
        for path, variable in tower_variables(encoder, head)
        for key, transform in [naming(path)]
    ]


def heads_layout(path, num_heads):
    """The transform of an attention tensor kept in `MultiHeadAttention`'s per-head layout.

    Keras' and flax's attention layers store q/k/v kernels as (D, heads,
    head_dim), their biases as (heads, head_dim) and the output kernel as
    (heads, head_dim, D); ours are Dense layers with the heads merged. The
    transform checks the head count. `path` is the variable's path in our
    tower; None for a tensor that needs no transform.

    Example:
    >>> import numpy as np
    >>> heads_layout(("head", "attention", "out", "kernel"), 2)(np.zeros((2, 4, 8))).shape
    (8, 8)
    >>> heads_layout(("block", 0, "attention", "query", "bias"), 2)(np.zeros((2, 4))).shape
    (8,)
    >>> heads_layout(("block", 0, "attention", "out", "bias"), 2) is None
    True
    """
    if len(path) < 3 or path[-3] != "attention":
        return None
    if path[-2] != "out":
        return _merge_heads(num_heads)
    return _merge_heads_out(num_heads) if path[-1] == "kernel" else None


def _merge_heads(num_heads):
    def transform(x):  # (D, heads, head_dim) or (heads, head_dim)
        if x.ndim not in (2, 3) or x.shape[-2] != num_heads:
            raise ValueError(f"expected (..., {num_heads} heads, head_dim)")
        return x.reshape(*x.shape[:-2], -1)

    return transform


def _merge_heads_out(num_heads):
    def transform(x):  # (heads, head_dim, D)
        if x.ndim != 3 or x.shape[0] != num_heads:
            raise ValueError(f"expected ({num_heads} heads, head_dim, D)")
        return x.reshape(-1, x.shape[-1])

    return transform


def scalar(x):
    """Transform of a one-value tensor (a logit scale or bias saved as (1,)) to a scalar.

    Example:
    >>> import numpy as np
    >>> scalar(np.array([2.5])).shape
    ()
    """
    if x.size != 1:
        raise ValueError("expected a single value")
    return x.reshape(())


def load_tensors(loader, tensors):
    """Assigns `(key, variable, transform)` triples through `loader`, taking each key once.

    Several variables may come from one tensor (a scan-stacked block tensor, a
    packed q/k/v projection): it is read once and each transform picks its
    part. A transform refuses a misshapen tensor with a `ValueError`, which
    becomes a `WeightLoadingError` naming the tensor and its shape.

    Example:
    >>> import keras, numpy as np
    >>> from keras_siglip2.converters.weight_loader import WeightLoader
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> loader = WeightLoader({"w": np.ones((2, 3)), "b": np.zeros(2)}, "demo")
    >>> load_tensors(loader, [("w", layer.kernel, np.transpose), ("b", layer.bias, None)])
    >>> loader.finish(layer)
    """
    by_key = {}
    for key, variable, transform in tensors:
        by_key.setdefault(key, []).append((variable, transform))
    for key, targets in by_key.items():
        value = loader.take(key)
        for variable, transform in targets:
            converted = value
            if transform is not None:
                try:
                    converted = transform(value)
                except ValueError as e:
                    raise WeightLoadingError(
                        f"{loader.source_name}: tensor '{key}' has shape {value.shape}, "
                        f"which does not fit the model: {e}."
                    ) from e
            loader.assign(variable, converted)
