import numpy as np
import torch

from keras_slam.objectives.stm import mismatched_partners, stm_loss
from tests import test_case


def test_partners_roll_among_present_rows():
    present = np.array([1, 0, 1, 1, 0, 1], "float32")
    partner, valid = (test_case.to_numpy(t) for t in mismatched_partners(present))
    np.testing.assert_array_equal(partner, [2, 1, 3, 5, 4, 0])
    np.testing.assert_array_equal(valid, present)


def test_negative_is_never_the_matched_pair(seeded):
    for _ in range(20):
        present = (seeded.random(7) < 0.6).astype("float32")
        partner, valid = (test_case.to_numpy(t) for t in mismatched_partners(present))
        rows = np.flatnonzero(valid)
        assert np.all(partner[rows] != rows)
        assert np.all(present[partner[rows]] == 1)
        # Every present row serves as exactly one negative (a permutation).
        assert sorted(partner[rows]) == sorted(rows)
        if present.sum() < 2:
            assert valid.sum() == 0


def test_single_or_no_present_row_has_no_negative():
    for present in ([0, 1, 0], [0, 0, 0]):
        _, valid = mismatched_partners(np.array(present, "float32"))
        assert test_case.to_numpy(valid).sum() == 0


def test_loss_matches_torch(seeded):
    logits = seeded.normal(size=(8,)).astype("float32") * 4
    labels = (seeded.random(8) < 0.5).astype("float32")
    weights = np.array([1, 1, 0, 1, 1, 1, 0, 1], "float32")
    loss, accuracy = stm_loss(logits, labels, weights)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(logits[weights > 0], dtype=torch.float64),
        torch.tensor(labels[weights > 0], dtype=torch.float64),
    ).item()
    np.testing.assert_allclose(test_case.to_numpy(loss), expected, rtol=1e-5)
    expected_accuracy = np.mean((logits > 0)[weights > 0] == labels[weights > 0])
    np.testing.assert_allclose(test_case.to_numpy(accuracy), expected_accuracy, rtol=1e-6)
    zero_loss, _ = stm_loss(logits, labels, np.zeros(8, "float32"))
    assert float(test_case.to_numpy(zero_loss)) == 0.0
