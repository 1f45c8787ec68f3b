import numpy as np

from keras_slam.layers.padding import masked_mean
from tests import test_case


def test_masked_mean_over_time_ignores_padding_even_when_it_is_nan(seeded):
    x = seeded.normal(size=(2, 5, 3)).astype("float32")
    x[0, 3:] = np.nan  # padding
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], "float32")
    pooled = test_case.to_numpy(masked_mean(x, mask, axis=1))
    np.testing.assert_allclose(pooled[0], x[0, :3].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(pooled[1], 0.0)
    kept = test_case.to_numpy(masked_mean(x, mask, axis=1, keepdims=True))
    assert kept.shape == (2, 1, 3)


def test_masked_mean_over_every_masked_axis(seeded):
    values = seeded.normal(size=(2, 4, 3)).astype("float32")
    mask = np.array([[1, 0, 1, 1], [0, 1, 0, 0]], "float32")
    expected = values[mask > 0].mean(0)
    over_frames = test_case.to_numpy(masked_mean(values, mask, axis=(0, 1)))
    np.testing.assert_allclose(over_frames, expected, rtol=1e-6)
    scalar = test_case.to_numpy(masked_mean(values[..., 0], mask))
    np.testing.assert_allclose(scalar, values[..., 0][mask > 0].mean(), rtol=1e-6)
    nothing = test_case.to_numpy(masked_mean(values[..., 0], np.zeros_like(mask)))
    assert float(nothing) == 0.0


def test_masked_mean_with_fractional_weights_is_the_weighted_mean():
    # Weights 0.5, 0.25, 0.25 and a NaN at weight 0: (0.5*4 + 0.25*8 + 0.25*0) / 1.
    values = np.array([4.0, 8.0, 0.0, np.nan], "float32")
    weights = np.array([0.5, 0.25, 0.25, 0.0], "float32")
    assert test_case.to_numpy(masked_mean(values, weights)) == 4.0
