"""Speech-text matching (STM): is this transcript the one of this speech?

SLAM's STM follows ALBEF's image-text matching: a binary head on the joint
encoding of (speech, text) tells matched pairs from mismatched ones. The
mismatched text of a row is the transcript of the next *present* paired row
of the batch (a roll by one among present rows), so a negative is never the
matched pair, and rows whose modality is absent neither give nor take a
negative. With fewer than two present rows there is no negative at all.
"""

from keras import ops

from keras_slam.layers.padding import masked_mean


def mismatched_partners(present):
    """For each present row, the present row after it (cyclically).

    Args:
        present: (B,) 1 for rows holding a real (speech, text) pair.

    Returns:
        (partner, negative_weight): int32 (B,) row whose text serves as the
        negative (the row itself where there is none), and float32 (B,)
        1 where that negative is valid (present row, >= 2 present rows).
    """
    present = ops.cast(present, "int32")
    batch_size = ops.shape(present)[0]
    rows = ops.arange(batch_size, dtype="int32")
    num_present = ops.sum(present)
    rank = ops.cumsum(present) - 1
    # Present rows sorted by rank first, absent rows after them.
    row_of_rank = ops.cast(ops.argsort(ops.where(present > 0, rank, batch_size + rows)), "int32")
    next_rank = ops.mod(rank + 1, ops.maximum(num_present, 1))
    partner = ops.take(row_of_rank, ops.maximum(next_rank, 0))
    valid = ops.logical_and(present > 0, num_present >= 2)
    partner = ops.where(valid, partner, rows)
    return partner, ops.cast(valid, "float32")


def stm_loss(logits, labels, weights):
    """Binary cross-entropy and accuracy of the matching head, in float32.

    Args:
        logits: (N,) or (N, 1) scores for "matched".
        labels: (N,) 1 matched, 0 mismatched.
        weights: (N,) 1 for rows that count, 0 for the others.

    Returns:
        (loss, accuracy): weighted means, both 0 when no row counts.
    """
    logits = ops.reshape(ops.cast(logits, "float32"), (-1,))
    labels = ops.cast(ops.reshape(labels, (-1,)), "float32")
    weights = ops.cast(ops.reshape(weights, (-1,)), "float32")
    # Stable log(1 + exp(-|z|)) form of the logistic loss.
    per_row = ops.maximum(logits, 0.0) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))
    correct = ops.cast(ops.equal(ops.cast(logits > 0, "float32"), labels), "float32")
    return masked_mean(per_row, weights), masked_mean(correct, weights)
