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
accuracy's chance level stays 0.5. Length-matched negatives
(`mismatched_partners(..., lengths=)`) are instead the K other present rows
nearest to it in text length, so that a mismatched pair's speech / text
length ratio is like a matched one's and length alone cannot tell them.
"""

from keras import ops

from keras_slam.layers.padding import masked_mean


def mismatched_partners(present, num_negatives=1, lengths=None):
    """For each present row, the present rows whose texts are its K negatives.

    Without `lengths`: the present rows 1..K places after it (cyclically).
    With `lengths` (B,) (e.g. each row's number of real tokens): the K other
    present rows nearest to it in length, ties to the nearer following row,
    so a negative's speech / text length ratio is close to a true pair's and
    the length cue alone cannot tell it from the matched pair.

    Args:
        present: (B,) 1 for rows holding a real (speech, text) pair.
        num_negatives: K, the mismatched texts per row (static).
        lengths: None or (B,) lengths to match.

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
    # Places after the row among present rows (1..P-1 for the other present rows).
    offset = ops.mod(rank[None, :] - rank[:, None], ops.maximum(num_present, 1))
    distance = ops.zeros((batch_size, batch_size), "float32")
    if lengths is not None:
        lengths = ops.cast(lengths, "float32")
        distance = ops.abs(lengths[None, :] - lengths[:, None])
    # Order by distance, then by offset (< B): exact in float32 for integer lengths.
    key = distance * ops.cast(batch_size, "float32") + ops.cast(offset, "float32")
    candidate = ops.logical_and(
        ops.logical_and(present[:, None] > 0, present[None, :] > 0),
        rows[:, None] != rows[None, :],
    )
    order = ops.cast(ops.argsort(ops.where(candidate, key, 3e38), axis=1), "int32")
    partners, valid = [], []
    for shift in range(1, num_negatives + 1):
        column = ops.minimum(shift - 1, batch_size - 1)
        partner = ops.take(order, column, axis=1)
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
