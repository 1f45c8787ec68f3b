import keras
import numpy as np
import torch

from keras_slam.objectives.mlm import corrupt_tokens, masked_token_loss
from tests import test_case


def torch_reference(labels, logits, mask):
    """Mean cross-entropy over the masked positions, by torch's ignore_index."""
    targets = torch.tensor(np.where(mask > 0, labels, -100), dtype=torch.long)
    return torch.nn.functional.cross_entropy(
        torch.tensor(logits, dtype=torch.float64).reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=-100,
    ).item()


def test_loss_and_accuracy_match_reference(seeded):
    logits = seeded.normal(size=(3, 6, 11)).astype("float32") * 3
    labels = seeded.integers(0, 11, size=(3, 6))
    mask = (seeded.random((3, 6)) < 0.5).astype("float32")
    mask[0, 0] = 1
    loss, accuracy = masked_token_loss(labels, logits, mask)
    np.testing.assert_allclose(
        test_case.to_numpy(loss), torch_reference(labels, logits, mask), rtol=1e-5
    )
    expected_accuracy = ((logits.argmax(-1) == labels) * mask).sum() / mask.sum()
    np.testing.assert_allclose(test_case.to_numpy(accuracy), expected_accuracy, rtol=1e-6)


def test_nothing_to_predict_gives_zero_and_no_nan(seeded):
    logits = keras.ops.convert_to_tensor(seeded.normal(size=(2, 4, 5)).astype("float32"))
    mask = np.zeros((2, 4), "float32")
    loss, accuracy = masked_token_loss(np.zeros((2, 4), "int32"), logits, mask)
    assert float(test_case.to_numpy(loss)) == 0.0
    assert float(test_case.to_numpy(accuracy)) == 0.0


def test_bfloat16_logits_give_float32_loss(seeded):
    logits = keras.ops.cast(seeded.normal(size=(2, 4, 5)).astype("float32") * 50, "bfloat16")
    loss, _ = masked_token_loss(np.ones((2, 4), "int32"), logits, np.ones((2, 4), "float32"))
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert np.isfinite(test_case.to_numpy(loss))


def test_corruption_statistics_match_the_configured_rates(seeded):
    batch, length, vocab, mask_id = 64, 256, 100, 3
    token_ids = seeded.integers(10, vocab, size=(batch, length)).astype("int32")
    chosen = (seeded.random((batch, length)) < 0.3).astype("float32")
    corrupted = test_case.to_numpy(
        corrupt_tokens(token_ids, chosen, mask_id, (10, vocab), keras.random.SeedGenerator(7))
    )
    keep = chosen == 0
    np.testing.assert_array_equal(corrupted[keep], token_ids[keep])
    picked, original = corrupted[~keep], token_ids[~keep]
    n = picked.size
    masked = np.mean(picked == mask_id)
    unchanged = np.mean(picked == original)
    replaced = 1 - masked - unchanged
    # Binomial standard errors: 3 sigma bounds.
    for observed, rate in (
        (masked, 0.8),
        (replaced, 0.1 * (1 - 1 / 90)),
        (unchanged, 0.1 + 0.1 / 90),
    ):
        assert abs(observed - rate) < 3 * np.sqrt(rate * (1 - rate) / n), (observed, rate)
    assert picked.min() >= 3 and np.all((picked == mask_id) | (picked >= 10))


def test_always_mask(seeded):
    token_ids = seeded.integers(10, 50, size=(4, 9)).astype("int32")
    chosen = (seeded.random((4, 9)) < 0.5).astype("float32")
    corrupted = test_case.to_numpy(corrupt_tokens(token_ids, chosen, 1, (10, 50), 3, 1.0, 0.0))
    np.testing.assert_array_equal(corrupted, np.where(chosen > 0, 1, token_ids))
