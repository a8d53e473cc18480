"""The SigLIP 2 text tower: bidirectional transformer, last-token pooling, linear head."""

import keras
import keras_hub

from keras_siglip2.layers.transformer import TransformerEncoder
from keras_siglip2.models.tower_preset import TowerFromPreset


@keras.saving.register_keras_serializable(package="keras_siglip2")
class SigLIP2TextEncoder(TowerFromPreset, keras_hub.models.Backbone):
    """Text tower of SigLIP 2.

    Input: `token_ids` (B, sequence_length) int, as `SigLIP2Tokenizer` makes
    them (EOS kept, padded with 0 to `sequence_length`). There is no attention
    mask: the released models attend to padding, and pool the last position.

    Output: a dict with `sequence_output` (B, L, hidden_dim) and
    `pooled_output` (B, embedding_dim), the (unnormalised) text embedding.

    `remat=True` recomputes each transformer block's activations in the backward
    pass (less memory, same gradients).

    Example:
    >>> encoder = SigLIP2TextEncoder(
    ...     vocabulary_size=32, sequence_length=8, hidden_dim=8, num_layers=1,
    ...     num_heads=2, intermediate_dim=16, embedding_dim=4)
    >>> tuple(encoder(keras.ops.ones((2, 8), "int32"))["pooled_output"].shape)
    (2, 4)
    """

    def __init__(
        self,
        vocabulary_size,
        sequence_length,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        embedding_dim,
        layer_norm_epsilon=1e-6,
        remat=False,
        dtype=None,
        **kwargs,
    ):
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size, hidden_dim, name="token_embedding", dtype=dtype,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=hidden_dim**-0.5),
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length, name="position_embedding", dtype=dtype
        )
        self.encoder = TransformerEncoder(
            num_layers, num_heads, intermediate_dim, layer_norm_epsilon, remat,
            name="encoder", dtype=dtype,
        )
        self.head = keras.layers.Dense(embedding_dim, name="head", dtype=dtype)

        token_ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
        x = self.token_embedding(token_ids)
        x = x + self.position_embedding(x)
        tokens = self.encoder(x)
        pooled = self.head(tokens[:, -1, :])
        super().__init__(
            inputs=token_ids,
            outputs={"sequence_output": tokens, "pooled_output": pooled},
            dtype=dtype,
            **kwargs,
        )
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.embedding_dim = embedding_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.remat = remat

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "embedding_dim": self.embedding_dim,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "remat": self.remat,
        }
