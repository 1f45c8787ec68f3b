"""Pre-training and fine-tuning objectives as plain functions of tensors + masks."""

from keras_slam.losses.ctc import ctc_loss
from keras_slam.losses.w2v_bert import (
    best_rq_loss,
    contrastive_loss,
    diversity_loss,
    masked_prediction_loss,
    sample_negative_indices,
)
