"""w2v-BERT / wav2vec 2.0 / BEST-RQ objectives as functions of tensors + masks.

All take `masked_frames` (B, T) (1 = the frame was masked) and an optional
`padding_mask` (B, T) (1 = real); a frame counts only if both are 1. All
compute in float32, return scalar float32 means over the counted frames and
return 0 (never NaN) when no frame counts.

w2v-BERT [Chung et al. 2021]: Lc = contrastive_loss + 0.1 * diversity_loss
(on the contrastive stack's output vs the quantized targets), Lm =
masked_prediction_loss (on the quantizer's code ids), total Lc + Lm.
Compared with Hugging Face `Wav2Vec2ForPreTraining` (which sums over
frames), `contrastive_loss` = its contrastive_loss / N and
`diversity_loss` = its diversity_loss / N, N the number of masked frames.
"""

import keras
from keras import ops

from keras_slam.layers.padding import masked_mean

# A logit that loses every softmax without producing inf - inf.
_INVALID_LOGIT = -1e9


def _counted_frames(masked_frames, padding_mask):
    counted = ops.cast(masked_frames, "float32") > 0
    if padding_mask is not None:
        counted = ops.logical_and(counted, ops.cast(padding_mask, "float32") > 0)
    return counted


def sample_negative_indices(masked_frames, num_negatives=100, padding_mask=None, seed=None):
    """Draws distractor frames for every masked real frame.

    For a counted frame t of an utterance with n counted frames, each of the
    K negatives is uniform over the other n - 1 counted frames of the same
    utterance, drawn with replacement (as wav2vec 2.0 / Hugging Face: a draw
    from n - 1 slots shifted past t's own slot), so fewer than K candidates
    is fine. Frames that are not counted, and counted frames with no other
    counted frame, get their own index t, which `contrastive_loss` treats
    as no negative (never the target, never padding).

    Args:
        masked_frames: (B, T), 1 = masked.
        num_negatives: K (100).
        padding_mask: optional (B, T), 1 = real.
        seed: int, SeedGenerator or backend seed for `keras.random`.
    Returns:
        (B, T, K) int32 time indices into the same utterance.
    """
    counted = _counted_frames(masked_frames, padding_mask)
    batch_size, length = ops.shape(counted)[0], ops.shape(counted)[1]
    positions = ops.arange(length, dtype="int32")[None, :]
    counted_int = ops.cast(counted, "int32")
    num_counted = ops.sum(counted_int, axis=1)[:, None, None]
    # Counted frames first, in time order: slot i holds the i-th counted frame.
    counted_by_slot = ops.cast(
        ops.argsort(ops.where(counted, positions, positions + length), axis=1), "int32"
    )
    own_slot = (ops.cumsum(counted_int, axis=1) - 1)[:, :, None]
    others = num_counted - 1
    draws = keras.random.uniform((batch_size, length, num_negatives), seed=seed)
    slots = ops.cast(ops.floor(draws * ops.cast(others, "float32")), "int32")
    slots = ops.clip(slots, 0, ops.maximum(others - 1, 0))
    slots = ops.where(slots >= own_slot, slots + 1, slots)
    slots = ops.minimum(slots, length - 1)
    negatives = ops.take_along_axis(
        counted_by_slot, ops.reshape(slots, (batch_size, length * num_negatives)), axis=1
    )
    negatives = ops.reshape(negatives, (batch_size, length, num_negatives))
    valid = ops.logical_and(counted[:, :, None], others > 0)
    own = ops.broadcast_to(positions[:, :, None], ops.shape(negatives))
    return ops.where(valid, negatives, own)


def _l2_normalize(x):
    # x / max(|x|, 1e-8), torch.cosine_similarity's guard, without a sqrt:
    # its infinite slope at 0 made the gradient at a zero vector 0 * inf.
    squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared_norm, 1e-16))


def contrastive_logits(predictions, targets, negative_indices, counted, temperature=0.1):
    """Cosine-similarity logits, target first, invalid negatives pushed out.

    Similarities come from one (B, T, T) matrix gathered at the negative
    indices, never a (B, T, K, D) tensor of negatives. A negative is invalid
    when it is the frame itself, not a counted frame, or (as in wav2vec 2.0
    when codebook usage is low) numerically identical to the target.

    Args:
        predictions: (B, T, D) context vectors.
        targets: (B, T, D) quantized target vectors.
        negative_indices: (B, T, K) time indices.
        counted: (B, T) bool, masked real frames.
        temperature: logit temperature (0.1).
    Returns:
        (B, T, 1 + K) float32 logits, column 0 the target.
    """
    predictions = ops.cast(predictions, "float32")
    targets = ops.cast(targets, "float32")
    negative_indices = ops.cast(negative_indices, "int32")
    unit_predictions = _l2_normalize(predictions)
    unit_targets = _l2_normalize(targets)
    positive = ops.sum(unit_predictions * unit_targets, axis=-1, keepdims=True)
    similarity = ops.einsum("btd,bsd->bts", unit_predictions, unit_targets)
    negative = ops.take_along_axis(similarity, negative_indices, axis=2)

    gram = ops.einsum("btd,bsd->bts", targets, targets)
    # Norms from the same matmul as the products, so an identical pair
    # gives a distance of a few ulps, far below the 1e-5 relative cut.
    squared_norms = ops.diagonal(gram, axis1=1, axis2=2)
    norms_at_negatives = ops.take_along_axis(
        ops.broadcast_to(squared_norms[:, None, :], ops.shape(gram)), negative_indices, axis=2
    )
    own_norms = squared_norms[:, :, None]
    squared_distance = (
        own_norms + norms_at_negatives - 2.0 * ops.take_along_axis(gram, negative_indices, axis=2)
    )
    same_as_target = squared_distance <= 1e-5 * (own_norms + norms_at_negatives)

    is_self = negative_indices == ops.arange(ops.shape(counted)[1], dtype="int32")[None, :, None]
    negative_counted = ops.take_along_axis(
        ops.broadcast_to(counted[:, None, :], ops.shape(similarity)), negative_indices, axis=2
    )
    valid = ops.logical_and(
        negative_counted, ops.logical_not(ops.logical_or(is_self, same_as_target))
    )
    negative = ops.where(valid, negative / temperature, _INVALID_LOGIT)
    return ops.concatenate([positive / temperature, negative], axis=-1)


def contrastive_loss(
    predictions,
    targets,
    masked_frames,
    negative_indices,
    padding_mask=None,
    temperature=0.1,
):
    """wav2vec 2.0 contrastive loss, averaged over the masked real frames.

    Cross-entropy of picking the target (column 0) among [target,
    negatives]; a frame whose negatives are all invalid contributes 0.

    Args:
        predictions: (B, T, D) context vectors (contrastive stack output).
        targets: (B, T, D) quantized targets (same projection space).
        masked_frames: (B, T), 1 = masked.
        negative_indices: (B, T, K) from `sample_negative_indices` (or fixed).
        padding_mask: optional (B, T), 1 = real.
        temperature: logit temperature (0.1).
    Returns:
        (loss, accuracy, valid_negatives): scalar float32 each; accuracy is
        the fraction of counted frames whose target logit is the largest,
        valid_negatives the mean number of negatives per counted frame that
        differ from its target (K when codes are diverse, near 0 when the
        codebook collapses and the task becomes trivial).
    """
    counted = _counted_frames(masked_frames, padding_mask)
    logits = contrastive_logits(predictions, targets, negative_indices, counted, temperature)
    cross_entropy = -ops.log_softmax(logits, axis=-1)[:, :, 0]
    correct = ops.cast(ops.argmax(logits, axis=-1) == 0, "float32")
    valid_negatives = ops.sum(ops.cast(logits[:, :, 1:] > _INVALID_LOGIT, "float32"), axis=-1)
    return (
        masked_mean(cross_entropy, counted),
        masked_mean(correct, counted),
        masked_mean(valid_negatives, counted),
    )


def diversity_loss(perplexity, num_codevectors):
    """(G*V - perplexity) / (G*V); w2v-BERT and wav2vec 2.0 weight it by 0.1.

    Args:
        perplexity: scalar from `GumbelVectorQuantizer`.
        num_codevectors: G * V.
    Returns:
        Scalar float32 in [0, 1).
    """
    return (num_codevectors - ops.cast(perplexity, "float32")) / num_codevectors


def masked_prediction_loss(logits, target_ids, masked_frames, padding_mask=None):
    """Cross-entropy on code ids at the masked real frames (w2v-BERT Lm).

    Args:
        logits: (B, T, V) or (B, T, G, V) predictions.
        target_ids: (B, T) or (B, T, G) integer code ids ((B, T, 1) is
            accepted with (B, T, V) logits).
        masked_frames: (B, T), 1 = masked.
        padding_mask: optional (B, T), 1 = real.
    Returns:
        (loss, accuracy): scalar float32 means over counted frames (and
        groups).
    """
    logits = ops.cast(logits, "float32")
    target_ids = ops.cast(target_ids, "int32")
    if len(logits.shape) == 3 and len(target_ids.shape) == 3:
        if target_ids.shape[-1] != 1:
            raise ValueError(
                f"masked_prediction_loss: (B, T, V) logits need (B, T) or (B, T, 1) "
                f"ids, got ids of shape {target_ids.shape}."
            )
        target_ids = target_ids[..., 0]
    log_probs = ops.log_softmax(logits, axis=-1)
    target_log_probs = ops.take_along_axis(log_probs, target_ids[..., None], axis=-1)
    correct = ops.cast(ops.cast(ops.argmax(logits, axis=-1), "int32") == target_ids, "float32")
    # Both (B, T[, G]) like the ids: TensorFlow's gather and broadcasting lose
    # the rank when the lengths are known only at run time.
    target_log_probs = ops.reshape(target_log_probs, ops.shape(target_ids))
    correct = ops.reshape(correct, ops.shape(target_ids))
    if len(target_ids.shape) == 3:
        target_log_probs = ops.mean(target_log_probs, axis=-1)
        correct = ops.mean(correct, axis=-1)
    counted = _counted_frames(masked_frames, padding_mask)
    return masked_mean(-target_log_probs, counted), masked_mean(correct, counted)
