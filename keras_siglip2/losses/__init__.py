from keras_siglip2.losses.captioning import token_cross_entropy
from keras_siglip2.losses.masked_prediction import (
    apply_token_mask,
    masked_prediction_loss,
    random_patch_mask,
)
from keras_siglip2.losses.self_distillation import self_distillation_loss, updated_center
from keras_siglip2.losses.sigmoid import (
    SigmoidLoss,
    chunked_sigmoid_loss,
    sharded_sigmoid_loss,
    sigmoid_loss,
)

__all__ = [
    "SigmoidLoss",
    "apply_token_mask",
    "chunked_sigmoid_loss",
    "masked_prediction_loss",
    "random_patch_mask",
    "self_distillation_loss",
    "sharded_sigmoid_loss",
    "sigmoid_loss",
    "token_cross_entropy",
    "updated_center",
]
