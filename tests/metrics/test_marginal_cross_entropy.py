import numpy as np

from keras_slam.metrics.codebook import marginal_cross_entropy
from tests import test_case


def test_marginal_cross_entropy_is_the_masked_codes_ce_averaged_over_groups():
    code_ids = np.array([[[0, 1], [1, 1], [2, 1], [3, 0]]])  # frame 3 is padding
    mask = np.array([[1.0, 1.0, 1.0, 0.0]])
    marginal_counts = np.array([[2.0, 1.0, 1.0, 0.0], [0.0, 4.0, 0.0, 0.0]])  # code 3 unused
    # Group 0: codes 0, 1, 2 at probabilities 1/2, 1/4, 1/4; group 1: code 1, probability 1.
    expected = -(np.log(0.5) + 2 * np.log(0.25)) / 3 / 2
    value = test_case.to_numpy(marginal_cross_entropy(code_ids, marginal_counts, mask))
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    # Under the batch's own marginal it is the batch's code entropy.
    own = test_case.to_numpy(marginal_cross_entropy(code_ids, [[1, 1, 1, 0], [0, 1, 0, 0]], mask))
    np.testing.assert_allclose(own, np.log(3) / 2, rtol=1e-6)
    empty = marginal_cross_entropy(code_ids, marginal_counts, np.zeros_like(mask))
    assert float(test_case.to_numpy(empty)) == 0.0
