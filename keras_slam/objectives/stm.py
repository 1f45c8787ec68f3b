"""Speech-text matching (STM): is this transcript the one of this speech?

SLAM's STM follows ALBEF's image-text matching: a binary head on the joint
encoding of (speech, text) tells matched pairs from mismatched ones. The
k-th mismatched text of a row (k = 1..K) is the transcript of the present
paired row k places after it in the batch (a roll by k among present rows),
so a negative is never the matched pair, a row's K negatives are K different
transcripts, and rows whose modality is absent neither give nor take a
negative. A row has min(K, P - 1) negatives among P present rows (none with
fewer than two). Its negatives share a total weight of 1, as its positive
has, so matched and mismatched pairs weigh the same whatever K is and the
accuracy's chance level stays 0.5.
"""

from keras import ops

from keras_slam.layers.padding import masked_mean


def mismatched_partners(present, num_negatives=1):
    """For each present row, the present rows 1..K places after it (cyclically).

    Args:
        present: (B,) 1 for rows holding a real (speech, text) pair.
        num_negatives: K, the mismatched texts per row (static).

    Returns:
        (partners, negative_weights): int32 (B, K), column k-1 the row whose
        text is the row's k-th negative (the row itself where there is
        none), and float32 (B, K), 1 / (the row's valid negatives) where
        that negative is valid (a present row with more than k present
        rows), else 0; a row's weights sum to 1 or 0.
    """
    present = ops.cast(present, "int32")
    batch_size = ops.shape(present)[0]
    rows = ops.arange(batch_size, dtype="int32")
    num_present = ops.sum(present)
    rank = ops.cumsum(present) - 1
    # Present rows sorted by rank first, absent rows after them.
    row_of_rank = ops.cast(ops.argsort(ops.where(present > 0, rank, batch_size + rows)), "int32")
    partners, valid = [], []
    for shift in range(1, num_negatives + 1):
        shifted_rank = ops.mod(rank + shift, ops.maximum(num_present, 1))
        partner = ops.take(row_of_rank, ops.maximum(shifted_rank, 0))
        is_valid = ops.logical_and(present > 0, num_present > shift)
        partners.append(ops.where(is_valid, partner, rows))
        valid.append(ops.cast(is_valid, "float32"))
    valid = ops.stack(valid, axis=1)
    negative_weights = valid / ops.maximum(ops.sum(valid, axis=1, keepdims=True), 1.0)
    return ops.stack(partners, axis=1), negative_weights


def stm_loss(logits, labels, weights):
    """Binary cross-entropy and accuracy of the matching head, in float32.

    Args:
        logits: (N,) or (N, 1) scores for "matched".
        labels: (N,) 1 matched, 0 mismatched.
        weights: (N,) each row's weight (0 for rows that do not count).

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
