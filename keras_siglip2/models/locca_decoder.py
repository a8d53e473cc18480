"""LocCa-style text decoder of SigLIP 2: cross-attends to the image tower's un-pooled tokens.

Trained on captioning, referring-expression (box) prediction and grounded captioning, half of
the examples autoregressively (causal self-attention, teacher forcing) and half in parallel
from [MASK] inputs (bidirectional self-attention) as in CapPa; `keras_siglip2.locca_targets`
builds the inputs, `keras_siglip2.losses.captioning` the loss.

For decoding, `LocCaDecoder.build_cache` / `call_with_cache` run the same blocks with a
key/value cache (as keras-hub's `CachedMultiHeadAttention`): a fixed (B, 2, T, heads,
head_dim) self-attention cache per block, written with `ops.slice_update`, and the image
tokens' cross-attention keys and values computed once.

With `image_position_codes=True` the decoder adds fixed sine-cosine codes of each image
token's place (`position_codes`) to the tokens it attends to, as DETR adds position codes to
its decoder's memory. A small image tower trained from scratch gives tokens from which the
decoder could not learn where an object is (docs/findings.md, the LocCa boxes).
"""

import keras
import keras_hub
from keras import ops

from keras_siglip2.layers.attention import MultiHeadAttention
from keras_siglip2.layers.transformer import TransformerBlock, layer_norm


def _keys_values(attention, x):
    """`attention`'s keys and values of `x` (B, S, D), stacked: (B, 2, S, heads, head_dim)."""
    return ops.stack(attention.keys_values(x), axis=1)


def _attend(attention, query, keys_values, keep):
    """`attention`'s output for `query` (B, S, D) against stacked `keys_values`."""
    return attention.attend(query, keys_values[:, 0], keys_values[:, 1], keep)


def position_codes(positions, dim, scale=8.0, temperature=100.0):
    """(…, dim) fixed sine-cosine codes of (…, 2) (y, x) positions in [0, 1].

    big_vision's `posemb_sincos_2d` layout on continuous positions: [sin(y·ω), cos(y·ω),
    sin(x·ω), cos(x·ω)] with y, x scaled to [0, `scale`] and dim / 4 frequencies ω from 1 down
    to 1 / `temperature`.

    Example:
    >>> codes = position_codes(keras.ops.array([[0.0, 0.0], [0.5, 1.0]]), 8)
    >>> [round(float(v), 3) for v in keras.ops.convert_to_numpy(codes)[0]]
    [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    """
    if dim % 4:
        raise ValueError(f"Position codes need a width divisible by 4; got {dim}.")
    omega = temperature ** -(ops.arange(dim // 4, dtype="float32") / (dim // 4))
    angles = ops.cast(positions, "float32")[..., None] * (scale * omega)  # (…, 2, dim / 4)
    y, x = angles[..., 0, :], angles[..., 1, :]
    return ops.concatenate([ops.sin(y), ops.cos(y), ops.sin(x), ops.cos(x)], axis=-1)


def _lower_triangle(length):
    return ops.cast(ops.tril(ops.ones((length, length), "int32")), "bool")


@keras.saving.register_keras_serializable(package="keras_siglip2")
class LocCaDecoderBlock(TransformerBlock):
    """Pre-LN decoder block: x + SelfAttn(LN(x)); x + CrossAttn(LN(x), image); x + MLP(LN(x)).

    A `TransformerBlock` (its `attention` is the self-attention, `norm2` precedes the MLP)
    with a cross-attention to the image tokens in between.

    Example:
    >>> block = LocCaDecoderBlock(num_heads=2, intermediate_dim=16)
    >>> tuple(block(keras.ops.ones((1, 3, 8)), keras.ops.ones((1, 5, 8))).shape)
    (1, 3, 8)
    """

    def __init__(self, num_heads, intermediate_dim, layer_norm_epsilon=1e-6, **kwargs):
        super().__init__(num_heads, intermediate_dim, layer_norm_epsilon, **kwargs)
        dtype = self.dtype_policy
        self.cross_norm = layer_norm(layer_norm_epsilon, "cross_norm", dtype)
        self.cross_attention = MultiHeadAttention(num_heads, name="cross_attention", dtype=dtype)

    def build(self, x_shape, image_tokens_shape):
        super().build(x_shape)
        self.cross_norm.build(x_shape)
        self.cross_attention.build(x_shape, image_tokens_shape)

    def call(self, x, image_tokens, image_mask=None, attention_mask=None):
        x = x + self.attention(self.norm1(x), attention_mask=attention_mask)
        x = x + self.cross_attention(self.cross_norm(x), image_tokens, key_mask=image_mask)
        return x + self.mlp(self.norm2(x))

    def image_keys_values(self, image_tokens):
        """The cross-attention's keys and values of `image_tokens`, (B, 2, N, heads, head_dim)."""
        return _keys_values(self.cross_attention, image_tokens)

    def call_with_cache(self, x, cache, cache_update_index, image_cache, image_keep, keep):
        """`call` for `x` (B, S, D) at cache slots [cache_update_index, + S).

        `cache` (B, 2, T, heads, head_dim): this block's self-attention keys and values, to
        which those of `x` are written; `keep` (B, S, T): the slots each query attends to.
        `image_cache` from `image_keys_values`, `image_keep` (B, 1, N) or None.
        Returns (x, cache).
        """
        h = self.norm1(x)
        start = (0, 0, cache_update_index, 0, 0)
        cache = ops.slice_update(cache, start, _keys_values(self.attention, h))
        x = x + _attend(self.attention, h, cache, keep)
        x = x + _attend(self.cross_attention, self.cross_norm(x), image_cache, image_keep)
        return x + self.mlp(self.norm2(x)), cache

    def compute_output_shape(self, x_shape, image_tokens_shape):
        return x_shape


@keras.saving.register_keras_serializable(package="keras_siglip2")
class LocCaDecoder(keras.layers.Layer):
    """Transformer decoder over image tokens, returning float32 logits (B, T, vocabulary_size).

    Token + learned position embedding → `num_layers` × `LocCaDecoderBlock` → LayerNorm →
    Dense to the vocabulary. Image tokens wider or narrower than `hidden_dim` go through a
    Dense projection (`image_projection`, created in `build` only when the widths differ), so
    the decoder can be narrower than the image tower. Attention softmaxes run in float32 and
    the logits come out in float32 under any dtype policy (e.g. "mixed_bfloat16"). Unlike
    big_vision's CapPa decoder, attention projections have biases (as in our towers) and the
    logits Dense has Keras's default (not zero) initialisation.

    `image_position_codes=True` adds `position_codes` of each image token's place to the
    (projected) image tokens; every call then takes `image_positions`. It adds no weights.

    Call args:
        token_ids: (B, T) int, T ≤ `sequence_length`.
        image_tokens: (B, N, Di) un-pooled image-tower outputs.
        image_mask: optional (B, N), truthy for real (non-padding) image tokens (NaFlex).
        causal: optional (B,) bool/int; 1 = causal self-attention, 0 = bidirectional
            (parallel prediction from [MASK] inputs). None = all causal.
        image_positions: (B, N, 2) (y, x) centre of each image token's patch in [0, 1]
            (the vision encoder's `token_positions`); with `image_position_codes` only.

    Example:
    >>> decoder = LocCaDecoder(vocabulary_size=50, sequence_length=8, hidden_dim=16,
    ...     num_layers=1, num_heads=2, intermediate_dim=32)
    >>> logits = decoder(keras.ops.ones((2, 8), "int32"), keras.ops.ones((2, 4, 24)),
    ...     causal=keras.ops.array([1, 0]))
    >>> tuple(logits.shape), keras.backend.standardize_dtype(logits.dtype)
    ((2, 8, 50), 'float32')
    """

    def __init__(
        self, vocabulary_size, sequence_length, hidden_dim, num_layers, num_heads,
        intermediate_dim, layer_norm_epsilon=1e-6, image_position_codes=False, dtype=None,
        **kwargs,
    ):
        super().__init__(dtype=dtype, **kwargs)
        if image_position_codes and hidden_dim % 4:
            raise ValueError(f"image_position_codes needs hidden_dim divisible by 4; got "
                             f"{hidden_dim}.")
        self.image_position_codes = image_position_codes
        self.vocabulary_size, self.sequence_length = vocabulary_size, sequence_length
        self.hidden_dim, self.num_layers, self.num_heads = hidden_dim, num_layers, num_heads
        self.intermediate_dim, self.layer_norm_epsilon = intermediate_dim, layer_norm_epsilon
        dtype = self.dtype_policy
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size, hidden_dim, name="token_embedding", dtype=dtype,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=hidden_dim**-0.5),
        )
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            sequence_length, name="position_embedding", dtype=dtype
        )
        self.blocks = [
            LocCaDecoderBlock(
                num_heads, intermediate_dim, layer_norm_epsilon, name=f"block_{i}", dtype=dtype
            )
            for i in range(num_layers)
        ]
        self.final_norm = layer_norm(layer_norm_epsilon, "final_norm", dtype)
        self.logits_dense = keras.layers.Dense(vocabulary_size, name="logits", dtype=dtype)
        self.image_projection = None

    def build(self, token_ids_shape, image_tokens_shape):
        x_shape = (*token_ids_shape, self.hidden_dim)
        self.token_embedding.build(token_ids_shape)
        self.position_embedding.build(x_shape)
        image_shape = image_tokens_shape
        if image_tokens_shape[-1] != self.hidden_dim:
            self.image_projection = keras.layers.Dense(
                self.hidden_dim, name="image_projection", dtype=self.dtype_policy
            )
            self.image_projection.build(image_tokens_shape)
            image_shape = (*image_tokens_shape[:-1], self.hidden_dim)
        for block in self.blocks:
            block.build(x_shape, image_shape)
        self.final_norm.build(x_shape)
        self.logits_dense.build(x_shape)

    def _embed(self, token_ids, positions=None):
        x = self.token_embedding(token_ids)
        return x + self.position_embedding(x, positions=positions)

    def _project(self, image_tokens, image_positions):
        if self.image_projection is not None:
            image_tokens = self.image_projection(image_tokens)
        if not self.image_position_codes:
            return image_tokens
        if image_positions is None:
            raise ValueError(
                "This LocCaDecoder adds position codes to the image tokens "
                "(image_position_codes=True): pass image_positions, the (B, N, 2) centres of "
                "the tokens' patches from the vision encoder's token_positions."
            )
        codes = position_codes(image_positions, self.hidden_dim)
        return image_tokens + ops.cast(codes, image_tokens.dtype)

    def _logits(self, x):
        return ops.cast(self.logits_dense(self.final_norm(x)), "float32")

    def call(self, token_ids, image_tokens, image_mask=None, causal=None, image_positions=None):
        x = self._embed(token_ids)
        image_tokens = self._project(image_tokens, image_positions)
        lower = _lower_triangle(ops.shape(token_ids)[1])[None]
        if causal is None:
            attention_mask = lower
        else:  # Bidirectional rows are all True.
            bidirectional = ops.logical_not(ops.cast(causal, "bool"))[:, None, None]
            attention_mask = ops.logical_or(lower, bidirectional)
        for block in self.blocks:
            x = block(x, image_tokens, image_mask=image_mask, attention_mask=attention_mask)
        return self._logits(x)

    def build_cache(self, token_ids, image_tokens, image_mask=None, image_positions=None):
        """A causal pass over `token_ids` (B, T = `sequence_length`) that fills a cache.

        Returns (logits, cache): the logits of `call(token_ids, image_tokens, image_mask,
        image_positions=image_positions)`,
        and for `call_with_cache` each block's self-attention keys and values at slots
        0 … T − 1 (slot t holds position t) with the image tokens' cross-attention keys
        and values.

        Example:
        >>> decoder = LocCaDecoder(vocabulary_size=50, sequence_length=8, hidden_dim=16,
        ...     num_layers=1, num_heads=2, intermediate_dim=32)
        >>> tokens, image = keras.ops.ones((2, 8), "int32"), keras.ops.ones((2, 4, 24))
        >>> logits, cache = decoder.build_cache(tokens, image)
        >>> bool(keras.ops.all(keras.ops.isclose(logits, decoder(tokens, image), atol=1e-5)))
        True
        """
        if not self.built:
            self.build(ops.shape(token_ids), ops.shape(image_tokens))
        image_tokens = self._project(image_tokens, image_positions)
        cache = {
            "keys_values": [
                ops.zeros(
                    (ops.shape(token_ids)[0], 2, self.sequence_length, self.num_heads,
                     self.hidden_dim // self.num_heads),
                    self.compute_dtype,
                )
                for _ in self.blocks
            ],
            "image_keys_values": [block.image_keys_values(image_tokens) for block in self.blocks],
        }
        if image_mask is not None:
            cache["image_keep"] = ops.cast(image_mask, "bool")[:, None]
        positions = ops.arange(self.sequence_length, dtype="int32")[None]
        keep = _lower_triangle(self.sequence_length)[None]
        return self.call_with_cache(token_ids, positions, cache, 0, keep)

    def call_with_cache(self, token_ids, positions, cache, cache_update_index, keep):
        """Logits for `token_ids` (B, S) written to cache slots [cache_update_index, + S).

        Args:
            token_ids: (B, S) int.
            positions: (B, S) their positions (for the position embedding); a slot's
                position is the caller's choice, as attention does not depend on key order.
            cache: from `build_cache` (or a previous `call_with_cache`).
            cache_update_index: int or scalar tensor, the first slot written.
            keep: (B, S, T) truthy where a query may attend to a slot (its own included).

        Returns:
            (logits (B, S, vocabulary_size) float32, the updated cache).

        Example:
        >>> decoder = LocCaDecoder(vocabulary_size=50, sequence_length=8, hidden_dim=16,
        ...     num_layers=1, num_heads=2, intermediate_dim=32)
        >>> tokens, image = keras.ops.ones((2, 8), "int32"), keras.ops.ones((2, 4, 16))
        >>> _, cache = decoder.build_cache(tokens, image)
        >>> keep = keras.ops.arange(8)[None, None] <= 5  # slots 0 … 5: positions 0 … 5
        >>> logits, cache = decoder.call_with_cache(tokens[:, 5:6], [[5], [5]], cache, 5, keep)
        >>> bool(keras.ops.all(keras.ops.isclose(logits[:, 0], decoder(tokens, image)[:, 5],
        ...     atol=1e-5)))
        True
        """
        x = self._embed(token_ids, ops.convert_to_tensor(positions, "int32"))
        keys_values = []
        for block, block_cache, image_cache in zip(
            self.blocks, cache["keys_values"], cache["image_keys_values"]
        ):
            x, block_cache = block.call_with_cache(
                x, block_cache, cache_update_index, image_cache, cache.get("image_keep"), keep
            )
            keys_values.append(block_cache)
        return self._logits(x), {**cache, "keys_values": keys_values}

    def compute_output_shape(self, token_ids_shape, image_tokens_shape):
        return (*token_ids_shape, self.vocabulary_size)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "image_position_codes": self.image_position_codes,
        }
