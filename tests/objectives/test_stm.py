import numpy as np
import pytest
import torch

from keras_slam.objectives.stm import mismatched_partners, stm_loss
from tests import test_case


def partners_of(present, num_negatives=1):
    present = np.array(present, "float32")
    return tuple(test_case.to_numpy(t) for t in mismatched_partners(present, num_negatives))


def test_partners_roll_among_present_rows():
    present = [1, 0, 1, 1, 0, 1]
    partners, weights = partners_of(present)
    np.testing.assert_array_equal(partners, [[2], [1], [3], [5], [4], [0]])
    np.testing.assert_array_equal(weights, np.array(present)[:, None])


def test_k_negatives_are_the_next_k_present_rows_and_share_one_weight():
    present = [1, 0, 1, 1, 0, 1]  # present rows 0, 2, 3, 5
    partners, weights = partners_of(present, 3)
    np.testing.assert_array_equal(
        partners, [[2, 3, 5], [1, 1, 1], [3, 5, 0], [5, 0, 2], [4, 4, 4], [0, 2, 3]]
    )
    np.testing.assert_allclose(weights, np.array(present)[:, None] * np.full((6, 3), 1 / 3))


def test_fewer_present_rows_than_negatives_keep_the_distinct_ones():
    # 3 present rows: each has 2 distinct negatives, the third shift would
    # come back to the row itself.
    partners, weights = partners_of([1, 1, 0, 1], 3)
    np.testing.assert_array_equal(partners[[0, 1, 3], :2], [[1, 3], [3, 0], [0, 1]])
    np.testing.assert_allclose(weights[[0, 1, 3]], [[0.5, 0.5, 0]] * 3)
    np.testing.assert_array_equal(weights[2], [0, 0, 0])


@pytest.mark.parametrize("num_negatives", [1, 3])
def test_negative_is_never_the_matched_pair(seeded, num_negatives):
    for _ in range(20):
        present = (seeded.random(7) < 0.6).astype("float32")
        partners, weights = partners_of(present, num_negatives)
        num_present = int(present.sum())
        for row in range(7):
            chosen = partners[row][weights[row] > 0]
            assert len(chosen) == (min(num_negatives, num_present - 1) if present[row] else 0)
            assert row not in chosen and len(set(chosen)) == len(chosen)
            assert np.all(present[chosen] == 1)
            if len(chosen):
                np.testing.assert_allclose(weights[row].sum(), 1.0, rtol=1e-6)
        # Each shift is a permutation of the present rows.
        for shift in range(min(num_negatives, num_present - 1)):
            rows = np.flatnonzero(present)
            assert sorted(partners[rows, shift]) == sorted(rows)


def test_single_or_no_present_row_has_no_negative():
    for present in ([0, 1, 0], [0, 0, 0]):
        _, weights = partners_of(present, 2)
        assert weights.sum() == 0


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


def test_fractional_weights_are_a_weighted_mean_as_torch(seeded):
    """A positive against K = 4 negatives of weight 1/4 each: the loss is
    torch's weighted BCE sum over the weight sum, the accuracy the mean of
    the positive's and the negatives' accuracies."""
    logits = seeded.normal(size=(10,)).astype("float32") * 4
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], "float32")
    weights = np.array([1, 1] + [0.25] * 8, "float32")
    loss, accuracy = stm_loss(logits, labels, weights)
    expected = (
        torch.nn.functional.binary_cross_entropy_with_logits(
            torch.tensor(logits, dtype=torch.float64),
            torch.tensor(labels, dtype=torch.float64),
            weight=torch.tensor(weights, dtype=torch.float64),
            reduction="sum",
        ).item()
        / weights.sum()
    )
    np.testing.assert_allclose(test_case.to_numpy(loss), expected, rtol=1e-5)
    correct = (logits > 0) == labels
    expected_accuracy = (correct[:2].mean() + correct[2:].mean()) / 2
    np.testing.assert_allclose(test_case.to_numpy(accuracy), expected_accuracy, rtol=1e-6)
