"""Pre-training and fine-tuning objectives as plain functions of tensors + masks."""

from keras_slam.objectives.ctc import ctc_loss
from keras_slam.objectives.w2v_bert import (
    contrastive_loss,
    diversity_loss,
    masked_prediction_loss,
    sample_negative_indices,
)
