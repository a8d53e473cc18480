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

    Args:
        image_embeddings: (B, D), L2-normalised.
        text_embeddings: (B, D), L2-normalised; text i matches image i.
        logit_scale: the log-temperature t (logits use exp(t)).
        logit_bias: the bias b.
        chunk_size: texts per chunk; B need not be a multiple of it.

    Example:
    >>> x = keras.ops.eye(3, 4)
    >>> float(chunked_sigmoid_loss(x, x, 0.0, 0.0, chunk_size=2))  # doctest: +ELLIPSIS
    1.6995...
    """
    image_embeddings = ops.cast(image_embeddings, "float32")
    text_embeddings = ops.cast(text_embeddings, "float32")
    batch, width = ops.shape(text_embeddings)
    if batch is None:
        raise ValueError("chunked_sigmoid_loss needs a static batch size.")
    chunk = max(1, min(int(chunk_size), batch))
    num_chunks = -(-batch // chunk)
    padded = ops.pad(text_embeddings, [[0, num_chunks * chunk - batch], [0, 0]])
    return _chunked_loss(batch, chunk, num_chunks)(
        image_embeddings,
        ops.reshape(padded, (num_chunks, chunk, width)),
        ops.cast(logit_scale, "float32"),
        ops.cast(logit_bias, "float32"),
    )


@functools.cache
def _chunked_loss(batch, chunk, num_chunks):
    """The custom-gradient loss for one static (batch, chunk) layout."""

    def chunk_terms(images, texts, scale, bias, c):
        """Logits, labels and validity of text chunk c: each (B, chunk)."""
        columns = c * chunk + ops.arange(chunk)
        logits = scale * ops.matmul(images, ops.transpose(texts[c])) + bias
        labels = ops.cast(ops.equal(ops.arange(batch)[:, None], columns[None, :]), "float32")
        valid = ops.cast(columns < batch, "float32")[None, :]
        return logits, 2.0 * labels - 1.0, valid

    @ops.custom_gradient
    def loss(images, texts, log_scale, bias):
        scale = ops.exp(log_scale)

        def forward(c, total):
            logits, signs, valid = chunk_terms(images, texts, scale, bias, c)
            return total - ops.sum(valid * ops.log_sigmoid(signs * logits))

        value = ops.fori_loop(0, num_chunks, forward, ops.zeros((), "float32")) / batch

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = ops.cast(upstream, "float32") / batch

            def backward(c, carry):
                d_images, d_texts, d_scale, d_bias = carry
                logits, signs, valid = chunk_terms(images, texts, scale, bias, c)
                # d/dl of -log σ(z l) is -z σ(-z l).
                d_logits = -upstream * valid * signs * ops.sigmoid(-signs * logits)
                cosine = (logits - bias) / scale
                d_texts = ops.slice_update(
                    d_texts,
                    (c, 0, 0),
                    scale * ops.matmul(ops.transpose(d_logits), images)[None],
                )
                return (
                    d_images + scale * ops.matmul(d_logits, texts[c]),
                    d_texts,
                    d_scale + ops.sum(d_logits * cosine) * scale,
                    d_bias + ops.sum(d_logits),
                )

            zero = ops.zeros((), "float32")
            init = (ops.zeros_like(images), ops.zeros_like(texts), zero, zero)
            return ops.fori_loop(0, num_chunks, backward, init)

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
