"""Training callbacks for the SigLIP 2 recipe."""

from keras_siglip2.callbacks.auxiliary_loss_schedule import AuxiliaryLossSchedule
from keras_siglip2.callbacks.ema_teacher import EMATeacher
from keras_siglip2.callbacks.terminate_on_nan import TerminateOnNaN
from keras_siglip2.callbacks.step_log import StepLog
from keras_siglip2.callbacks.training_backup import TrainingBackup, TrainingDiverged
from keras_siglip2.callbacks.validation_eval import ValidationEvaluation

__all__ = [
    "AuxiliaryLossSchedule",
    "EMATeacher",
    "StepLog",
    "TerminateOnNaN",
    "TrainingBackup",
    "TrainingDiverged",
    "ValidationEvaluation",
]
