"""Codebook metrics: perplexity, usage window, plot."""

import numpy as np

from keras_slam.metrics.codebook import (
    CodebookUsage,
    code_counts,
    codebook_perplexity,
    frame_perplexity,
    save_codebook_usage_plot,
)
from tests import test_case


def numpy_perplexity(probs, mask):
    marginals = probs[mask > 0].mean(0)  # (G, V)
    entropy = -np.sum(
        np.where(marginals > 0, marginals * np.log(np.where(marginals > 0, marginals, 1)), 0), -1
    )
    return np.exp(entropy).sum()


def test_perplexity_known_answers(seeded):
    one_hot = np.zeros((1, 4, 1, 4), "float32")
    one_hot[0, np.arange(4), 0, np.arange(4)] = 1  # every code once: perplexity 4
    np.testing.assert_allclose(test_case.to_numpy(codebook_perplexity(one_hot)), 4.0, rtol=1e-6)
    same = np.zeros((1, 4, 2, 4), "float32")
    same[..., 1] = 1  # one code per group, two groups: 1 + 1
    np.testing.assert_allclose(test_case.to_numpy(codebook_perplexity(same)), 2.0, rtol=1e-6)
    logits = seeded.normal(size=(2, 5, 2, 3))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    mask = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 1, 0]], "float32")
    np.testing.assert_allclose(
        test_case.to_numpy(codebook_perplexity(probs, mask)),
        numpy_perplexity(probs, mask),
        rtol=1e-5,
    )
    # Nothing selected: G, not NaN.
    np.testing.assert_allclose(
        test_case.to_numpy(codebook_perplexity(probs, np.zeros_like(mask))), 2.0
    )


def test_frame_perplexity_known_answers(seeded):
    one_hot = np.zeros((1, 4, 1, 4), "float32")
    one_hot[0, np.arange(4), 0, np.arange(4)] = 1
    # Every code used (marginal perplexity 4), each frame certain (1).
    np.testing.assert_allclose(test_case.to_numpy(frame_perplexity(one_hot)), 1.0, rtol=1e-6)
    uniform = np.full((2, 3, 2, 4), 0.25, "float32")
    np.testing.assert_allclose(test_case.to_numpy(frame_perplexity(uniform)), 8.0, rtol=1e-6)
    np.testing.assert_allclose(test_case.to_numpy(codebook_perplexity(uniform)), 8.0, rtol=1e-6)
    logits = seeded.normal(size=(2, 5, 2, 3))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    mask = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 1, 0]], "float32")
    entropy = -(probs * np.log(probs)).sum(-1)[mask > 0].mean(0)  # (G,)
    np.testing.assert_allclose(
        test_case.to_numpy(frame_perplexity(probs, mask)), np.exp(entropy).sum(), rtol=1e-5
    )
    # Never above the marginal perplexity (entropy is concave).
    assert test_case.to_numpy(frame_perplexity(probs, mask)) <= test_case.to_numpy(
        codebook_perplexity(probs, mask)
    )
    np.testing.assert_allclose(
        test_case.to_numpy(frame_perplexity(probs, np.zeros_like(mask))), 2.0
    )


def test_code_counts_known_answer(seeded):
    ids = seeded.integers(0, 6, size=(3, 7, 2))
    mask = test_case.random_padding_mask(seeded, 3, 7)
    counts = test_case.to_numpy(code_counts(ids, 6, mask))
    for group in range(2):
        expected = np.bincount(ids[..., group][mask > 0], minlength=6)
        np.testing.assert_array_equal(counts[group], expected)
    single = test_case.to_numpy(code_counts(ids[..., 0], 6))
    np.testing.assert_array_equal(single[0], np.bincount(ids[..., 0].ravel(), minlength=6))


def test_usage_over_a_window_of_steps():
    usage = CodebookUsage(num_codes=4, window_steps=2)
    mask = np.ones((1, 2), "float32")
    usage.update_state(np.array([[0, 1]]), mask)
    assert float(test_case.to_numpy(usage.result())) == 0.5
    usage.update_state(np.array([[2, 2]]), mask)
    assert float(test_case.to_numpy(usage.result())) == 0.75
    usage.update_state(np.array([[3, 3]]), mask)  # the first step leaves the window
    assert float(test_case.to_numpy(usage.result())) == 0.5
    np.testing.assert_array_equal(test_case.to_numpy(usage.total_counts()), [[0, 0, 2, 2]])
    assert float(test_case.to_numpy(usage.frames())) == 4.0
    usage.reset_state()  # keras' every epoch: the window stays
    assert float(test_case.to_numpy(usage.result())) == 0.5

    cumulative = CodebookUsage(num_codes=4, num_groups=2)
    cumulative.update_state(
        np.array([[[0, 1], [0, 2]]]), np.array([[1.0, 0.0]])
    )  # frame 1 is padding
    cumulative.update_state(np.array([[[3, 3]]]))
    np.testing.assert_array_equal(
        test_case.to_numpy(cumulative.total_counts()), [[1, 0, 0, 1], [0, 1, 0, 1]]
    )
    assert float(test_case.to_numpy(cumulative.result())) == 0.5
    assert float(test_case.to_numpy(cumulative.frames())) == 2.0
    cumulative.reset_state()
    assert float(test_case.to_numpy(cumulative.result())) == 0.0
    clone = CodebookUsage.from_config(cumulative.get_config())
    assert (clone.num_codes, clone.num_groups, clone.window_steps) == (4, 2, None)


def test_usage_plot_is_a_png(tmp_path):
    import matplotlib.image

    counts = np.array([[5, 0, 3, 1], [0, 0, 9, 2]], "float32")
    path = save_codebook_usage_plot(counts, str(tmp_path / "usage.png"))
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    save_codebook_usage_plot(counts[0], str(tmp_path / "single.png"))
