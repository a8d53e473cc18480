"""The walk over our towers that the checkpoint converters share."""

import numpy as np
import pytest

from keras_siglip2.converters import big_vision, huggingface, keras_hub
from keras_siglip2.converters.tower_walker import (
    heads_layout,
    load_tensors,
    tower_tensors,
    tower_variables,
)
from keras_siglip2.converters.weight_loader import WeightLoader, WeightLoadingError
from keras_siglip2.layers.map_head import MAPHead
from keras_siglip2.layers.transformer import TransformerEncoder


def _tower(num_layers=2, num_heads=2, width=8):
    encoder = TransformerEncoder(num_layers=num_layers, num_heads=num_heads, intermediate_dim=16)
    encoder.build((None, 3, width))
    head = MAPHead(num_heads=num_heads, intermediate_dim=16)
    head.build((None, 3, width))
    return encoder, head


def test_every_variable_is_walked_once():
    encoder, head = _tower()
    walked = [id(variable) for _, variable in tower_variables(encoder, head)]
    assert sorted(walked) == sorted(id(v) for v in [*encoder.variables, *head.variables])


@pytest.mark.parametrize(
    "naming, shared",
    [
        (big_vision._naming("img", "Transformer", False, 2, 2), 0),
        (big_vision._naming("img", "Transformer", True, 2, 2), 16),  # one stack per block tensor
        (huggingface._naming("vision_model", "post_layernorm"), 4),  # packed q, k, v
        (keras_hub._naming("layers/sig_lip_vision_encoder/layers", 2), 0),
    ],
    ids=["big_vision", "big_vision_scanned", "transformers", "keras_hub"],
)
def test_namings_share_keys_only_where_a_format_packs_tensors(naming, shared):
    encoder, head = _tower()
    keys = [key for key, _, _ in tower_tensors(naming, encoder, head)]
    assert len(keys) - len(set(keys)) == shared


class _CountingTensors(dict):
    def __init__(self, *args):
        super().__init__(*args)
        self.reads = 0

    def __getitem__(self, key):
        self.reads += 1
        return super().__getitem__(key)


def _big_vision_shape(key, shape, num_heads=2):
    """The shape big_vision stores our variable of `shape` under `key` in."""
    if "MultiHeadDotProductAttention_0" in key and not key.endswith("out/bias"):
        width = shape[-1]
        head = (num_heads, width // num_heads)
        shape = (*head, width) if key.endswith("out/kernel") else (*shape[:-1], *head)
    return (2, *shape) if "/encoderblock/" in key else shape


def test_a_shared_tensor_is_read_once():
    encoder, _ = _tower()
    tensors = tower_tensors(big_vision._naming("img", "Transformer", True, 2, 2), encoder)
    source = _CountingTensors({
        key: np.zeros(_big_vision_shape(key, tuple(variable.shape)), "float32")
        for key, variable, _ in tensors
    })
    loader = WeightLoader(source, "demo")
    load_tensors(loader, tensors)
    loader.finish(encoder)
    assert source.reads == len(source) < len(tensors)


def test_a_block_with_another_head_split_is_refused():
    transform = heads_layout(("block", 1, "attention", "query", "kernel"), num_heads=2)
    encoder, _ = _tower()
    loader = WeightLoader({"q": np.zeros((8, 4, 2), "float32")}, "demo.npz")
    with pytest.raises(WeightLoadingError, match=r"demo.npz: tensor 'q' has shape \(8, 4, 2\)"):
        load_tensors(loader, [("q", encoder.blocks[1].attention.query_dense.kernel, transform)])
