"""Image-text retrieval: recall@k in both directions (one or several captions per image).

Everything is embedded first; ranking is done in numpy on `chunk_size` rows of the similarity
matrix at a time (5k images × 25k captions never needs the whole matrix).
"""

import keras
import numpy as np

from keras_siglip2.evaluation.batches import encode_image_batch, encode_text_batch, numpy_batches


def recall_at_k(image_embeddings, text_embeddings, text_image_ids, ks=(1, 5, 10),
                chunk_size=1024):
    """Recall@k of image→text and text→image retrieval by cosine similarity.

    Image i's query is a hit at k when one of its captions (texts t with
    `text_image_ids[t] == i`) is among its k best-scored texts; text t's when its image is among
    its k best-scored images. Ties count against the query (a correct item ranks after every
    wrong one scoring the same). An image without captions counts as a miss.

    Args:
        image_embeddings: (I, E) L2-normalised.
        text_embeddings: (T, E) L2-normalised.
        text_image_ids: (T,) index of each text's image.
        ks: the k values.
        chunk_size: similarity rows computed at a time.

    Returns:
        dict with `image_to_text_recall@k` and `text_to_image_recall@k` for each k.

    Example:
    >>> images = np.eye(2)                               # S[i, t] = texts[t, i]
    >>> texts = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    >>> recall_at_k(images, texts, [0, 0, 1], ks=(1,))  # text 2 is image 1's, scores 0.7/0.3
    {'image_to_text_recall@1': 0.5, 'text_to_image_recall@1': 0.3333333333333333}
    """
    images = keras.ops.convert_to_numpy(image_embeddings).astype("float32")
    texts = keras.ops.convert_to_numpy(text_embeddings).astype("float32")
    owner = np.asarray(text_image_ids, "int64").reshape(-1)
    ks = np.array([int(k) for k in ks])
    if len(owner) != len(texts):
        raise ValueError(
            f"text_image_ids has {len(owner)} entries for {len(texts)} text embeddings."
        )
    if len(images) == 0 or len(texts) == 0:
        raise ValueError("Need at least one image and one text to rank.")
    if owner.min() < 0 or owner.max() >= len(images):
        raise ValueError(f"text_image_ids must index the {len(images)} images.")
    image_hits, text_hits = np.zeros(len(ks), "int64"), np.zeros(len(ks), "int64")
    for start in range(0, len(images), chunk_size):
        scores = images[start : start + chunk_size] @ texts.T
        correct = owner[None] == np.arange(start, start + len(scores))[:, None]
        best = np.where(correct, scores, -np.inf).max(axis=1, keepdims=True)
        wrong_at_least = (~correct & (scores >= best)).sum(axis=1)
        # An image with no caption has best = -inf: every text ties it, so it never hits.
        image_hits += (wrong_at_least[:, None] < ks[None]).sum(axis=0)
    for start in range(0, len(texts), chunk_size):
        scores = texts[start : start + chunk_size] @ images.T
        mine = owner[start : start + chunk_size]
        true = np.take_along_axis(scores, mine[:, None], axis=1)
        wrong_at_least = (scores >= true).sum(axis=1) - 1
        text_hits += (wrong_at_least[:, None] < ks[None]).sum(axis=0)
    return {
        **{f"image_to_text_recall@{k}": float(h / len(images)) for k, h in zip(ks, image_hits)},
        **{f"text_to_image_recall@{k}": float(h / len(texts)) for k, h in zip(ks, text_hits)},
    }


def retrieval_recall(backbone, dataset, ks=(1, 5, 10), pad_id=0, chunk_size=1024,
                     text_batch_size=256):
    """Image↔text recall@k of `backbone` over `dataset` (see `recall_at_k`).

    Batches carry the image inputs (`images`, or the NaFlex keys) and `token_ids`: (B, L), one
    caption per image, or (B, C, L), C captions per image (COCO: 5); a caption row that is all
    `pad_id` is a missing caption and is skipped.

    Returns:
        `recall_at_k`'s dict plus `num_images` and `num_texts`.

    Example:
    >>> from keras_siglip2.testing import toy_backbone
    >>> backbone = toy_backbone()
    >>> batch = {"images": np.zeros((2, 16, 16, 3), "float32"),
    ...          "token_ids": np.array([[[5, 1, 0, 0], [6, 1, 0, 0]],
    ...                                 [[7, 1, 0, 0], [0, 0, 0, 0]]])}  # 3 captions
    >>> result = retrieval_recall(backbone, [batch], ks=(1, 2))
    >>> result["num_images"], result["num_texts"], result["image_to_text_recall@2"]
    (2, 3, 1.0)
    """
    image_embeddings, text_embeddings, owners, offset = [], [], [], 0
    for batch in numpy_batches(dataset):
        if "token_ids" not in batch:
            raise KeyError(f"Retrieval batches need `token_ids`; this one has {sorted(batch)}.")
        images = encode_image_batch(backbone, batch)["embeddings"]
        token_ids = np.asarray(batch["token_ids"])
        if token_ids.ndim == 2:
            token_ids = token_ids[:, None]
        if token_ids.ndim != 3 or len(token_ids) != len(images):
            raise ValueError(
                f"token_ids must be (B, L) or (B, C, L) for the batch's {len(images)} images; "
                f"got shape {np.shape(batch['token_ids'])}."
            )
        present = (token_ids != pad_id).any(axis=-1)
        image_index = np.broadcast_to(np.arange(len(images))[:, None], present.shape)
        # Every row is embedded (one shape per batch), then missing captions are dropped.
        texts = encode_text_batch(backbone, token_ids.reshape(-1, token_ids.shape[-1]),
                                  text_batch_size)
        text_embeddings.append(texts[present.reshape(-1)])
        owners.append(offset + image_index[present])
        image_embeddings.append(images)
        offset += len(images)
    if not image_embeddings:
        raise ValueError("The dataset gave no batches.")
    images, texts = np.concatenate(image_embeddings), np.concatenate(text_embeddings)
    result = recall_at_k(images, texts, np.concatenate(owners), ks, chunk_size)
    return {**result, "num_images": len(images), "num_texts": len(texts)}
