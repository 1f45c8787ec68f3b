"""Masked token prediction: the SpanBERT MLM and TLM text objectives.

Two pieces, both plain functions of tensors and masks:

- `corrupt_tokens`: BERT's input corruption of the positions chosen for
  prediction (a fraction becomes the mask id, a fraction a random regular
  token, the rest stays), drawn with a `keras.random.SeedGenerator`.
- `masked_token_loss`: float32 cross-entropy and accuracy over the chosen
  real positions; exactly 0 (with zero gradient) when nothing is chosen, so
  an absent text modality never produces a NaN.

The positions themselves come from span masking (`keras_slam.layers.masking`).
"""

import keras
from keras import ops

from keras_slam.objectives.w2v_bert import masked_prediction_loss


def corrupt_tokens(
    token_ids,
    prediction_mask,
    mask_token_id,
    random_token_range,
    seed,
    mask_fraction=0.8,
    random_fraction=0.1,
):
    """Replaces the positions chosen for prediction, BERT style.

    Args:
        token_ids: int (B, T).
        prediction_mask: (B, T) 1 where the token is to be predicted (must
            already exclude padding).
        mask_token_id: id written at `mask_fraction` of the chosen positions.
        random_token_range: (low, high): random replacements are drawn
            uniformly from [low, high), i.e. regular tokens only, never the
            padding/mask/blank ids a tokenizer reserves below `low`.
        seed: a `keras.random.SeedGenerator` (or int).
        mask_fraction, random_fraction: BERT's 80/10/10 is (0.8, 0.1); the
            remaining fraction keeps the original token. (1.0, 0.0) always
            writes the mask id.

    Returns:
        int32 (B, T) corrupted ids; unchosen positions are unchanged.
    """
    if not 0.0 <= mask_fraction + random_fraction <= 1.0:
        raise ValueError(
            f"mask_fraction + random_fraction must lie in [0, 1], got "
            f"{mask_fraction} + {random_fraction}"
        )
    token_ids = ops.cast(token_ids, "int32")
    chosen = ops.cast(prediction_mask, "bool")
    draw = keras.random.uniform(ops.shape(token_ids), seed=seed, dtype="float32")
    low, high = random_token_range
    random_ids = keras.random.randint(ops.shape(token_ids), low, high, seed=seed, dtype="int32")
    corrupted = ops.where(draw < mask_fraction, mask_token_id, token_ids)
    use_random = ops.logical_and(draw >= mask_fraction, draw < mask_fraction + random_fraction)
    corrupted = ops.where(use_random, random_ids, corrupted)
    return ops.where(chosen, corrupted, token_ids)


def masked_token_loss(labels, logits, prediction_mask):
    """Mean cross-entropy and accuracy over the positions to predict.

    The same computation as w2v-BERT's masked prediction on code ids, so it
    delegates to `keras_slam.objectives.w2v_bert.masked_prediction_loss`.

    Args:
        labels: int (B, T) target ids (anything at unchosen positions).
        logits: float (B, T, V), any float dtype (float32 inside).
        prediction_mask: (B, T) 1 at the positions that count.

    Returns:
        (loss, accuracy): float32 scalars, both 0 when no position counts.
    """
    labels = ops.where(ops.cast(prediction_mask, "bool"), ops.cast(labels, "int32"), 0)
    return masked_prediction_loss(logits, labels, prediction_mask)
