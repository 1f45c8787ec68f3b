"""Connectionist temporal classification (CTC) loss with explicit masks.

Conventions (shared with `keras_slam.data.tokenizers` and
`keras_slam.models.ctc_decoding`):

- Class `blank_index` (0 by default) of the logits is the CTC blank. Both
  keras-slam tokenizers reserve id 0 for padding, so id 0 never occurs as a
  real label and doubles as the blank class of a CTC head whose output size
  is the tokenizer's `vocabulary_size()`.
- Lengths come from the padding masks (1 = real, 0 = pad); masks need not be
  contiguous prefixes in value, only their sums are used, so real positions
  must come first (the usual right padding).

Normalisation. The loss of one sequence is its negative log-likelihood
summed over frames (-log p(labels | logits)). An *item* is present when it
has at least one real logit frame; items with no real frames (e.g. rows of a
batch whose speech modality is absent) contribute 0 and are left out of the
mean. A present item whose labels cannot be aligned (fewer frames than
labels plus repeated neighbours) also contributes 0 with zero gradient, but
still counts in the mean, like `torch.nn.functional.ctc_loss(...,
zero_infinity=True)`.
"""

import keras
from keras import ops

from keras_slam.layers.padding import masked_mean, zero_padded_frames

REDUCTIONS = ("mean", "sum", "none")


def ctc_loss(
    labels,
    label_padding_mask,
    logits,
    logit_padding_mask,
    blank_index=0,
    reduction="mean",
    divide_by_target_length=False,
):
    """CTC negative log-likelihood, float32 inside, safe on empty rows.

    Args:
        labels: int (B, U) target ids; padded positions may hold anything.
        label_padding_mask: (B, U) 1 = real label, 0 = pad.
        logits: float (B, T, C) unnormalised scores (any float dtype; cast to
            float32 before the log-softmax).
        logit_padding_mask: (B, T) 1 = real frame, 0 = pad.
        blank_index: the blank class in `[0, C)`; must not appear in labels.
        reduction: "mean" (mean over present items), "sum", or "none".
        divide_by_target_length: divide each item's loss by its number of
            labels (at least 1) before reducing, as torch's "mean" does.

    Returns:
        float32 scalar, or (B,) per-item losses for reduction="none"
        (0 for absent and infeasible items).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logits.shape[1] == 0:
        raise ValueError("ctc_loss needs logits with at least one frame (T >= 1).")
    if labels.shape[1] == 0:  # keras' CTC kernels need one label slot
        labels = ops.zeros((ops.shape(labels)[0], 1), "int32")
        label_padding_mask = ops.zeros((ops.shape(labels)[0], 1), "float32")
    # Backends' CTC kernels normalise every frame, padded ones too.
    logits = zero_padded_frames(ops.cast(logits, "float32"), logit_padding_mask)
    label_mask = ops.cast(label_padding_mask, "bool")
    label_lengths = ops.sum(ops.cast(label_mask, "int32"), axis=1)
    logit_lengths = ops.sum(ops.cast(logit_padding_mask, "int32"), axis=1)
    # Padded label slots hold the blank: it never equals a real label, so
    # backends that compare neighbours over the full width see no repeat.
    labels = ops.where(label_mask, ops.cast(labels, "int32"), blank_index)

    present = logit_lengths > 0
    feasible = ops.logical_and(present, logit_lengths >= minimum_frames(labels, label_mask))
    # Rows that must contribute 0 are replaced by a trivially feasible
    # problem (no labels, >= 1 frame): their loss is finite, so the `where`
    # below gives them a zero (not NaN) gradient.
    safe_label_lengths = ops.where(feasible, label_lengths, 0)
    safe_logit_lengths = ops.where(feasible, logit_lengths, 1)
    per_item = keras.ops.ctc_loss(
        labels,
        logits,
        safe_label_lengths,
        safe_logit_lengths,
        mask_index=blank_index,
    )
    per_item = ops.where(feasible, ops.cast(per_item, "float32"), 0.0)
    if divide_by_target_length:
        per_item = per_item / ops.cast(ops.maximum(label_lengths, 1), "float32")
    if reduction == "none":
        return per_item
    if reduction == "sum":
        return ops.sum(per_item)
    return masked_mean(per_item, present)


def minimum_frames(labels, label_mask):
    """Frames CTC needs for each target: its length plus repeated neighbours.

    Args:
        labels: int (B, U); label_mask: bool (B, U).
    Returns:
        int32 (B,).
    """
    both_real = ops.logical_and(label_mask[:, 1:], label_mask[:, :-1])
    repeats = ops.logical_and(both_real, ops.equal(labels[:, 1:], labels[:, :-1]))
    return ops.sum(ops.cast(label_mask, "int32"), axis=1) + ops.sum(
        ops.cast(repeats, "int32"), axis=1
    )
