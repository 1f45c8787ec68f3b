"""STM with K mismatched texts per pair (`SLAMPretrainer(stm_negatives=K,
stm_negative_choice=, stm_pooling=)`)."""

import numpy as np
import pytest

from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.slam_pretrainer import SLAMPretrainer
from keras_slam.objectives.stm import mismatched_partners
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
    encoded = test_case.to_numpy(backbone.encode_shared(packed, packed_mask, False))[0]
    num_frames = int(test_case.to_numpy(frame_mask).sum())
    num_real = int(test_case.to_numpy(packed_mask).sum())
    # Packed: the real frames, then the real tokens, then padding.
    pooled = encoded[:num_real].mean(axis=0)
    if pretrainer.stm_pooling == "modality_means":
        speech_mean = encoded[:num_frames].mean(axis=0)
        text_mean = encoded[num_frames:num_real].mean(axis=0)
        pooled = np.concatenate(
            [speech_mean, text_mean, speech_mean * text_mean, np.abs(speech_mean - text_mean)]
        )
    pooled = pooled[None, :]
    return float(test_case.to_numpy(pretrainer.stm_head(pooled))[0, 0])


def bce(logit, label):
    return np.logaddexp(0.0, logit) - label * logit


# Rows 0, 1, 3 hold pairs of 7, 3 and 6 tokens (row 2 has no text); each
# pair's two negatives, in order, for each choice.
TOKEN_LENGTHS = (7, 3, 0, 6)
NEGATIVES = {
    "next": {0: (1, 3), 1: (3, 0), 3: (0, 1)},
    "length_matched": {0: (3, 1), 1: (3, 0), 3: (0, 1)},
}


@pytest.mark.parametrize("pooling", ["mean", "modality_means"])
@pytest.mark.parametrize("choice", sorted(NEGATIVES))
def test_each_pair_is_scored_against_its_k_negative_transcripts(seeded, choice, pooling):
    """With K = 2 each present row is scored with its own text (weight 1)
    and with the two other present rows' texts (weight 1/2 each): the next
    ones, or the nearest in length; loss and accuracy are the weighted means
    of per-pair scores computed one pair at a time, the head reading the
    mean of the joint encoding or [s, t, s * t, |s - t|] of its speech and
    text halves' means (numpy here)."""
    paired = sub_batch(seeded, 4, frames=40, tokens=7)
    mask = (np.arange(7)[None, :] < np.array(TOKEN_LENGTHS)[:, None]).astype("float32")
    paired["token_padding_mask"] = mask
    paired["token_ids"] = (paired["token_ids"] * mask).astype("int32")
    pretrainer = SLAMPretrainer(
        SLAMBackbone(**TINY),
        objectives=("stm",),
        stm_negatives=2,
        stm_negative_choice=choice,
        stm_pooling=pooling,
        seed=3,
        compile=False,
    )
    outputs = pretrainer.compute_objectives({"paired": paired})
    negatives = NEGATIVES[choice]
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


def test_length_matched_partners_are_the_nearest_in_length():
    """Rows 0, 1, 3, 4 hold pairs (row 2 absent): each row's negatives are
    the other present rows by distance in length, a tie (row 0: rows 3 and
    4 both 2 tokens away) going to the row nearer after it; a row with fewer
    candidates than K repeats itself with weight 0."""
    present = np.array([1, 1, 0, 1, 1], "float32")
    lengths = np.array([10, 20, 99, 12, 8], "float32")
    partners, weights = mismatched_partners(present, 3, lengths)
    np.testing.assert_array_equal(
        test_case.to_numpy(partners),
        [[3, 4, 1], [3, 0, 4], [2, 2, 2], [0, 4, 1], [0, 3, 1]],
    )
    expected_weights = np.full((5, 3), 1 / 3, "float32")
    expected_weights[2] = 0
    np.testing.assert_allclose(test_case.to_numpy(weights), expected_weights, rtol=1e-6)
    # K = 4 > 3 candidates: the 4th negative is the row itself, weight 0.
    partners, weights = mismatched_partners(present, 4, lengths)
    np.testing.assert_array_equal(test_case.to_numpy(partners)[:, 3], [0, 1, 2, 3, 4])
    np.testing.assert_allclose(test_case.to_numpy(weights)[0], [1 / 3, 1 / 3, 1 / 3, 0])


def test_without_lengths_the_partners_are_the_next_present_rows():
    present = np.array([1, 1, 0, 1, 1], "float32")
    partners, _ = mismatched_partners(present, 2)
    np.testing.assert_array_equal(
        test_case.to_numpy(partners), [[1, 3], [3, 4], [2, 2], [4, 0], [0, 1]]
    )


def test_rejects_an_unknown_pooling():
    with pytest.raises(ValueError, match="stm_pooling must be one of"):
        SLAMPretrainer(SLAMBackbone(**TINY), objectives=("stm",), stm_pooling="max")


def test_rejects_an_unknown_negative_choice():
    with pytest.raises(ValueError, match="stm_negative_choice must be one of"):
        SLAMPretrainer(SLAMBackbone(**TINY), objectives=("stm",), stm_negative_choice="random")
