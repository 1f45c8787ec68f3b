"""Held-out evaluation of the paired objectives (recipes.slam.evaluate_paired)."""

import numpy as np

from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.slam_pretrainer import SLAMPretrainer
from recipes.slam import evaluate_paired
from tests import test_case
from tests.models.test_slam_backbone import TINY


def paired_batch(rng, batch_size, frames=40, tokens=6):
    speech_mask = test_case.random_padding_mask(rng, batch_size, frames, min_length=frames // 2)
    token_mask = test_case.random_padding_mask(rng, batch_size, tokens, min_length=2)
    return {
        "speech_features": rng.normal(size=(batch_size, frames, 12)).astype("float32"),
        "speech_padding_mask": speech_mask,
        "token_ids": (rng.integers(3, 40, size=(batch_size, tokens)) * token_mask).astype("int32"),
        "token_padding_mask": token_mask,
        "language": np.array([b"en"] * batch_size),
    }


def test_evaluate_paired_is_the_mean_of_each_held_out_batch(seeded):
    """STM and CTC draw nothing at evaluation: each result is the mean over
    the batches of what `compute_objectives` gives each batch; speech and
    text metrics are not reported, extra keys ("language") are dropped."""
    import tensorflow as tf

    pretrainer = SLAMPretrainer(SLAMBackbone(**TINY), objectives=("stm", "ctc", "text_mlm"), seed=3)
    # Cheapest step: XLA compiles take minutes on TF, eager JAX dispatches slowly.
    pretrainer.compile(jit_compile=test_case.backend() == "jax")
    batches = [paired_batch(seeded, 3), paired_batch(seeded, 3)]
    dataset = tf.data.Dataset.from_tensor_slices(
        {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    )
    results = evaluate_paired(pretrainer, dataset)
    assert set(results) == {"stm_loss", "stm_accuracy", "ctc_loss"}
    per_batch = [
        pretrainer.compute_objectives(
            {"paired": {k: v for k, v in batch.items() if k != "language"}}
        )
        for batch in batches
    ]
    for name, value in results.items():
        expected = np.mean([test_case.to_numpy(objectives[name]) for objectives in per_batch])
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=name)
