"""STM with K mismatched texts per pair (`SLAMPretrainer(stm_negatives=K)`)."""

import numpy as np
import pytest

from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.slam_pretrainer import SLAMPretrainer
from tests import test_case
from tests.models.test_slam_backbone import TINY
from tests.models.test_slam_pretrainer import sub_batch


def pair_logit(pretrainer, paired, speech_row, text_row):
    """The matching head's logit for one (speech, text) pair, encoded alone."""
    backbone = pretrainer.backbone
    speech = slice(speech_row, speech_row + 1)
    text = slice(text_row, text_row + 1)
    frames, frame_mask = backbone.subsample_speech(
        paired["speech_features"][speech], paired["speech_padding_mask"][speech], False
    )
    token_mask = paired["token_padding_mask"][text]
    packed, packed_mask = backbone.pack(
        backbone.encode_speech_tower(frames, frame_mask, False),
        frame_mask,
        backbone.embed_text(paired["token_ids"][text], token_mask, False),
        token_mask,
    )
    encoded = test_case.to_numpy(backbone.encode_shared(packed, packed_mask, False))
    num_real = int(test_case.to_numpy(packed_mask).sum())
    pooled = encoded[:, :num_real].mean(axis=1)
    return float(test_case.to_numpy(pretrainer.stm_head(pooled))[0, 0])


def bce(logit, label):
    return np.logaddexp(0.0, logit) - label * logit


def test_each_pair_is_scored_against_the_next_k_present_transcripts(seeded):
    """Rows 0, 1, 3 hold pairs (row 2 has no text): with K = 2 each is scored
    with its own text (weight 1) and with the two other present rows' texts
    (weight 1/2 each); loss and accuracy are the weighted means of
    per-pair scores computed one pair at a time."""
    paired = sub_batch(seeded, 4, frames=40, tokens=7)
    paired["token_padding_mask"][2] = 0
    paired["token_ids"][2] = 0
    pretrainer = SLAMPretrainer(
        SLAMBackbone(**TINY), objectives=("stm",), stm_negatives=2, seed=3, compile=False
    )
    outputs = pretrainer.compute_objectives({"paired": paired})
    negatives = {0: (1, 3), 1: (3, 0), 3: (0, 1)}
    losses, correct = [], []
    for row, others in negatives.items():
        positive = pair_logit(pretrainer, paired, row, row)
        mismatched = [pair_logit(pretrainer, paired, row, other) for other in others]
        losses += [bce(positive, 1.0), np.mean([bce(m, 0.0) for m in mismatched])]
        correct += [positive > 0, np.mean([m <= 0 for m in mismatched])]
    np.testing.assert_allclose(
        test_case.to_numpy(outputs["stm_loss"]), np.mean(losses), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        test_case.to_numpy(outputs["stm_accuracy"]), np.mean(correct), rtol=1e-6
    )


def test_rejects_fewer_than_one_negative():
    with pytest.raises(ValueError, match="stm_negatives must be >= 1"):
        SLAMPretrainer(SLAMBackbone(**TINY), objectives=("stm",), stm_negatives=0)
