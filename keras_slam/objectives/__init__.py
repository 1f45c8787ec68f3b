"""Pre-training and fine-tuning objectives as plain functions of tensors + masks.

One module per objective, holding its loss and what prepares its inputs:
`w2v_bert` (negative sampling, contrastive, diversity and masked-prediction
losses), `mlm` (BERT token corruption, masked token loss), `stm` (mismatched
pairs, matching loss), `ctc` (CTC loss), `classification` (classifiers'
cross-entropy). Masked means come from `keras_slam.layers.padding.masked_mean`.
"""

from keras_slam.objectives.classification import classification_loss
from keras_slam.objectives.ctc import ctc_loss
from keras_slam.objectives.w2v_bert import (
    contrastive_loss,
    diversity_loss,
    masked_prediction_loss,
    sample_negative_indices,
)
