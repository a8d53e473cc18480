"""The SigLIP pairwise sigmoid loss: dense, and chunked at O(B · chunk) memory.

For a batch of B matching (image, text) pairs with logits l_ij = exp(t) ⟨x_i, y_j⟩ + b,
pair (i, j) has label z_ij = +1 if i == j else -1 and the loss is

    L = -(1/B) Σ_ij log σ(z_ij · l_ij)

(big_vision's `trainers/proj/image_text/siglip.py`: summed over texts, averaged
over images). Everything is computed in float32.
"""

import functools

import keras
from keras import ops

from keras_siglip2.losses import collectives


def sigmoid_loss(logits, labels=None):
    """Per-image losses (B,) from a (B, B') logit matrix; their mean is the loss.

    `labels` (B, B') in {0, 1} marks the positive pairs; by default the
    diagonal (image i matches text i).

    Example:
    >>> logits = keras.ops.array([[2.0, -3.0], [-1.0, 4.0]])
    >>> [round(float(v), 4) for v in sigmoid_loss(logits)]
    [0.1755, 0.3314]
    """
    logits = ops.cast(logits, "float32")
    if labels is None:
        labels = ops.eye(ops.shape(logits)[0], ops.shape(logits)[1], dtype="float32")
    signs = 2.0 * ops.cast(labels, "float32") - 1.0
    return -ops.sum(ops.log_sigmoid(signs * logits), axis=-1)


def chunked_sigmoid_loss(
    image_embeddings, text_embeddings, logit_scale, logit_bias, chunk_size=1024
):
    """The mean sigmoid loss without ever holding the B × B logits.

    Texts are processed `chunk_size` at a time in the forward and backward
    passes (a custom gradient recomputes each chunk's logits), so memory grows
    with B · chunk_size. Value and gradients equal
    `mean(sigmoid_loss(logits))` up to float32 summation order.

    Texts may outnumber images (one device's images against the whole batch's
    texts): image i still matches text i, and the mean is over images.

    Args:
        image_embeddings: (B, D), L2-normalised.
        text_embeddings: (B', D), B' >= B, L2-normalised; text i matches image i.
        logit_scale: the log-temperature t (logits use exp(t)).
        logit_bias: the bias b.
        chunk_size: texts per chunk; B' need not be a multiple of it.

    Example:
    >>> x = keras.ops.eye(3, 4)
    >>> float(chunked_sigmoid_loss(x, x, 0.0, 0.0, chunk_size=2))  # doctest: +ELLIPSIS
    1.6995...
    """
    images = ops.cast(image_embeddings, "float32")
    num_images, num_texts = _static_batch(images), _static_batch(text_embeddings)
    if num_images > num_texts:
        raise ValueError(
            f"chunked_sigmoid_loss got {num_images} images but only {num_texts} texts: "
            "every image needs its matching text (text i matches image i)."
        )
    texts = text_chunks(text_embeddings, chunk_size)
    return _chunked_loss(num_images, num_texts, *texts.shape[:2])(
        images, texts, ops.cast(logit_scale, "float32"), ops.cast(logit_bias, "float32")
    )


def _static_batch(x):
    batch = ops.shape(x)[0]
    if batch is None:
        raise ValueError("The chunked and sharded sigmoid losses need a static batch size.")
    return batch


def text_chunks(text_embeddings, chunk_size):
    """(B, D) texts as float32 (ceil(B / chunk), chunk, D), zero-padded at the end.

    Example:
    >>> tuple(text_chunks(keras.ops.ones((5, 2)), 2).shape)
    (3, 2, 2)
    """
    texts = ops.cast(text_embeddings, "float32")
    batch, width = _static_batch(texts), ops.shape(texts)[1]
    chunk = max(1, min(int(chunk_size), batch))
    num_chunks = -(-batch // chunk)
    padded = ops.pad(texts, [[0, num_chunks * chunk - batch], [0, 0]])
    return ops.reshape(padded, (num_chunks, chunk, width))


def _chunk_terms(images, texts, scale, bias, c, num_texts, offset):
    """Logits, label signs and validity of text chunk c: each (B, chunk).

    Image i matches text i + offset; an offset of at least `num_texts` makes
    every pair a negative.
    """
    chunk = ops.shape(texts)[1]
    columns = c * chunk + ops.arange(chunk)
    logits = scale * ops.matmul(images, ops.transpose(texts[c])) + bias
    rows = ops.arange(ops.shape(images)[0]) + offset
    labels = ops.cast(ops.equal(rows[:, None], columns[None, :]), "float32")
    valid = ops.cast(columns < num_texts, "float32")[None, :]
    return logits, 2.0 * labels - 1.0, valid


def block_loss_sum(images, texts, log_scale, bias, num_texts, offset=0):
    """Σ -log σ(z l) over all pairs of `images` (B, D) and `texts` (chunks, chunk, D).

    `texts` is laid out by `text_chunks`; its first `num_texts` rows are real.
    Image i matches text i + offset. One chunk's logits exist at a time.

    Example:
    >>> x = keras.ops.eye(2)
    >>> float(block_loss_sum(x, text_chunks(x, 1), 0.0, 0.0, 2))  # doctest: +ELLIPSIS
    2.0128...
    """
    scale = ops.exp(log_scale)

    def forward(c, total):
        logits, signs, valid = _chunk_terms(images, texts, scale, bias, c, num_texts, offset)
        return total - ops.sum(valid * ops.log_sigmoid(signs * logits))

    return ops.fori_loop(0, ops.shape(texts)[0], forward, ops.zeros((), "float32"))


def block_loss_grads(images, texts, log_scale, bias, num_texts, offset, upstream):
    """`upstream` × the gradients of `block_loss_sum` with respect to its four inputs.

    Computed chunk by chunk, like the value: memory O(B · chunk).

    Example:
    >>> x = keras.ops.eye(2)
    >>> grads = block_loss_grads(x, text_chunks(x, 1), 0.0, 0.0, 2, 0, 1.0)
    >>> [tuple(g.shape) for g in grads]
    [(2, 2), (2, 1, 2), (), ()]
    """
    scale = ops.exp(log_scale)

    def backward(c, carry):
        d_images, d_texts, d_scale, d_bias = carry
        logits, signs, valid = _chunk_terms(images, texts, scale, bias, c, num_texts, offset)
        # d/dl of -log σ(z l) is -z σ(-z l).
        d_logits = -upstream * valid * signs * ops.sigmoid(-signs * logits)
        cosine = (logits - bias) / scale
        d_texts = ops.slice_update(
            d_texts, (c, 0, 0), scale * ops.matmul(ops.transpose(d_logits), images)[None]
        )
        return (
            d_images + scale * ops.matmul(d_logits, texts[c]),
            d_texts,
            d_scale + ops.sum(d_logits * cosine) * scale,
            d_bias + ops.sum(d_logits),
        )

    zero = ops.zeros((), "float32")
    init = (ops.zeros_like(images), ops.zeros_like(texts), zero, zero)
    return ops.fori_loop(0, ops.shape(texts)[0], backward, init)


@functools.cache
def _chunked_loss(num_images, num_texts, num_chunks, chunk):
    """The custom-gradient loss for one static (images, texts, chunk) layout."""

    @ops.custom_gradient
    def loss(images, texts, log_scale, bias):
        value = block_loss_sum(images, texts, log_scale, bias, num_texts) / num_images

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = ops.cast(upstream, "float32") / num_images
            return block_loss_grads(images, texts, log_scale, bias, num_texts, 0, upstream)

        return value, grad

    return loss


def sharded_sigmoid_loss(
    image_embeddings, text_embeddings, logit_scale, logit_bias, chunk_size=None
):
    """The sigmoid loss of a batch split across devices, never gathered whole.

    - JAX under a `keras.distribution` whose batch axis has D > 1 devices: a
      ring. Each device keeps its B/D images and passes its B/D texts to its
      neighbour D - 1 times (in the forward and again in the backward pass,
      where each text's gradient travels with it). Per device: O(B/D · chunk)
      logits and O(B/D · width) embeddings. Returns the global-batch mean.
    - TensorFlow in a `tf.distribute` replica context with D > 1 replicas:
      the texts are all-gathered (O(B · width) per replica) and each replica
      computes its B/D rows of the loss, chunk by chunk. Returns the mean over
      this replica's rows; scaled by 1/D (`collectives.scale_for_replicas`,
      as Keras scales its losses) the replicas' summed gradients are the
      global batch's.
    - Otherwise (one device, PyTorch): `chunked_sigmoid_loss`.

    Value and gradients equal the single-device loss on the whole batch.
    `chunk_size` bounds the texts per block on each device (None: all).

    Example:
    >>> x = keras.ops.eye(3, 4)
    >>> float(sharded_sigmoid_loss(x, x, 0.0, 0.0))  # doctest: +ELLIPSIS
    1.6995...
    """
    shards = collectives.batch_shards()
    images = ops.cast(image_embeddings, "float32")
    batch = _static_batch(images)
    chunk = batch if chunk_size is None else chunk_size
    if shards == 1:
        return chunked_sigmoid_loss(images, text_embeddings, logit_scale, logit_bias, chunk)
    log_scale = ops.cast(logit_scale, "float32")
    bias = ops.cast(logit_bias, "float32")
    if keras.config.backend() == "tensorflow":
        texts = ops.cast(text_embeddings, "float32")
        gathered = ops.reshape(  # static shape: every replica has `batch` texts
            collectives.gather_replicas(texts), (shards * batch, ops.shape(texts)[1])
        )
        # The replica's own texts first: its image i matches row i.
        own = ops.roll(gathered, -collectives.shard_index() * batch, axis=0)
        return chunked_sigmoid_loss(images, own, log_scale, bias, chunk)
    if batch % shards:
        raise ValueError(
            f"The global batch ({batch}) must be a multiple of the {shards} devices "
            "it is split over: change the batch size."
        )
    return _ring_loss(batch, shards, min(chunk, batch // shards))(
        images, ops.cast(text_embeddings, "float32"), log_scale, bias
    )


@functools.cache
def _ring_loss(batch, shards, chunk):
    """The ring loss (JAX) for a global `batch` over `shards` devices."""
    local = batch // shards

    def forward(images, texts, log_scale, bias):
        texts = text_chunks(texts, chunk)
        own = block_loss_sum(images, texts, log_scale, bias, local)

        def step(_, carry):
            total, texts = carry
            texts = collectives.pass_to_next(texts)
            return total + block_loss_sum(images, texts, log_scale, bias, local, local), texts

        total, _ = ops.fori_loop(1, shards, step, (own, texts))
        return collectives.sum_over_shards(total) / batch

    def backward(images, texts, log_scale, bias, upstream):
        texts = text_chunks(texts, chunk)
        upstream = upstream / batch
        grads = block_loss_grads(images, texts, log_scale, bias, local, 0, upstream)

        def step(_, carry):
            (d_images, d_texts, d_scale, d_bias), texts = carry
            # A text's gradient travels with it and is home after `shards` moves.
            texts, d_texts = collectives.pass_to_next((texts, d_texts))
            more = block_loss_grads(images, texts, log_scale, bias, local, local, upstream)
            return (d_images + more[0], d_texts + more[1], d_scale + more[2],
                    d_bias + more[3]), texts

        (d_images, d_texts, d_scale, d_bias), _ = ops.fori_loop(
            1, shards, step, (grads, texts)
        )
        d_texts = ops.reshape(collectives.pass_to_next(d_texts), (-1, ops.shape(images)[1]))
        return (d_images, d_texts[:local], collectives.sum_over_shards(d_scale),
                collectives.sum_over_shards(d_bias))

    @ops.custom_gradient
    def loss(images, texts, log_scale, bias):
        value = collectives.over_batch_shards(
            forward, (images, texts, log_scale, bias), (True, True, False, False), False
        )

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return collectives.over_batch_shards(
                backward, (images, texts, log_scale, bias, ops.cast(upstream, "float32")),
                (True, True, False, False, False), (True, True, False, False),
            )

        return value, grad

    return loss


@keras.saving.register_keras_serializable(package="keras_siglip2")
class SigmoidLoss(keras.losses.Loss):
    """`sigmoid_loss` as a Keras loss on a (B, B) logit matrix.

    `y_pred` is the backbone's `logits` output; `y_true` is ignored unless it
    is a (B, B) matrix of positive pairs. The default reduction (mean over
    images) gives big_vision's SigLIP loss.

    Example:
    >>> loss = SigmoidLoss()
    >>> round(float(loss(None, keras.ops.array([[2.0, -3.0], [-1.0, 4.0]]))), 4)
    0.2535
    """

    def __init__(self, name="sigmoid_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        labels = None if y_true is None or len(ops.shape(y_true)) != 2 else y_true
        return sigmoid_loss(y_pred, labels)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if y_true is None:
            # Keras's Loss insists on a y_true tensor; the labels are implied.
            y_true = ops.zeros(ops.shape(y_pred)[:1])
        return super().__call__(y_true, y_pred, sample_weight)
