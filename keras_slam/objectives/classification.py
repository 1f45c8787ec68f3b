"""Softmax cross-entropy for sequence classification, padded rows left out.

Labels are class ids in [0, C); -1 marks a row to leave out (the
pipeline's padded batch rows, see `keras_slam.data.pipeline`).
"""

from keras import ops

from keras_slam.layers.padding import masked_mean


def classification_loss(labels, logits):
    """Mean cross-entropy over the rows with a label, float32 inside.

    Args:
        labels: int (B,) class ids, -1 for rows to leave out.
        logits: float (B, C) unnormalised scores (any float dtype).
    Returns:
        float32 scalar (0 when no row has a label).
    """
    labels = ops.cast(labels, "int32")
    log_probabilities = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    targets = ops.one_hot(ops.maximum(labels, 0), ops.shape(logits)[-1], dtype="float32")
    per_row = -ops.sum(targets * log_probabilities, axis=-1)
    return masked_mean(per_row, labels >= 0)
