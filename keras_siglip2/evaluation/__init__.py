"""Evaluators for SigLIP 2 models on any `tf.data.Dataset` or iterable of dict batches.

Every batch is a dict of arrays/tensors with the image inputs of the backbone's tower, `images`
(B, H, W, 3) in [-1, 1] (fixed resolution) or `patches`, `patch_coords`, `patch_mask`,
`spatial_shapes` (NaFlex, as `NaFlexImageConverter` gives them), plus per evaluator:

- `zero_shot_accuracy(backbone, classifier, dataset, label_key="label", top_k=(1, 5))`:
  `label` (B,) int class index → `top{k}_accuracy`, `num_examples`.
- `retrieval_recall(backbone, dataset, ks=(1, 5, 10))`: `token_ids` (B, L), or (B, C, L) for
  C captions per image (all-pad rows: no caption) → `image_to_text_recall@{k}`,
  `text_to_image_recall@{k}`, `num_images`, `num_texts`.
- `referring_box_iou(backbone, decoder, vocabulary, dataset, parallel=False)`: `prompt_ids`
  (B, L) tokenizer ids of the referring expression, `box` (B, 4) y0, x0, y1, x1 in [0, 1]
  → `mean_iou`, `accuracy@0.5`, `num_examples`.
- `dense_probe_miou(backbone, train_dataset, test_dataset, num_classes)`: `patch_labels`
  (B, N) int per patch token, -1 = ignore → `miou`, `patch_accuracy`, `num_train_patches`,
  `num_test_patches`.
- `referring_probe_iou(backbone, train_dataset, test_dataset)`: the batches of
  `referring_box_iou` → `mean_iou`, `accuracy@0.5` of a bilinear probe on the frozen patch
  tokens and expression embedding (the same for every model, decoder or not),
  `patch_grid_iou` (its ceiling), `num_train_patches`, `num_test_examples`.
- `linear_probe_accuracy(backbone, train_dataset, test_dataset, num_classes)`: `label` (B,)
  int class index → `accuracy` of a linear classifier on the image embeddings (does the image
  tower hold the label at all?), `num_train_examples`, `num_test_examples`.

Helpers: `zero_shot_classifier` (prompt-ensembled class embeddings), `recall_at_k` (ranking on
given embeddings), `box_iou`, `patch_labels` (per-patch majority labels of a segmentation
map), `mean_iou` (from a confusion matrix), `fit_ridge_classifier` (the probes' closed-form
linear classifier), `greedy_decode` / `parallel_decode` (LocCa decoding), `predict_boxes` (the
LocCa decoder's referring boxes of one batch), `numpy_batches`.
"""

from keras_siglip2.evaluation.batches import numpy_batches
from keras_siglip2.evaluation.decoding import greedy_decode, parallel_decode
from keras_siglip2.evaluation.dense_probe import dense_probe_miou, mean_iou, patch_labels
from keras_siglip2.evaluation.linear_probe import linear_probe_accuracy
from keras_siglip2.evaluation.referring import box_iou, predict_boxes, referring_box_iou
from keras_siglip2.evaluation.referring_probe import referring_probe_iou
from keras_siglip2.evaluation.retrieval import recall_at_k, retrieval_recall
from keras_siglip2.evaluation.ridge import fit_ridge_classifier
from keras_siglip2.evaluation.zero_shot import zero_shot_accuracy, zero_shot_classifier

__all__ = [
    "box_iou",
    "dense_probe_miou",
    "fit_ridge_classifier",
    "greedy_decode",
    "linear_probe_accuracy",
    "mean_iou",
    "numpy_batches",
    "parallel_decode",
    "patch_labels",
    "predict_boxes",
    "recall_at_k",
    "referring_box_iou",
    "referring_probe_iou",
    "retrieval_recall",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]
