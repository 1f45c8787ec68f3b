"""The collapse monitor judges codebook usage over a window of enough masked frames."""

import numpy as np
import pytest

from keras_slam.callbacks import CodebookCollapseError, CodebookCollapseMonitor
from keras_slam.metrics.codebook import CodebookUsage
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.slam_pretrainer import SLAMPretrainer
from recipes.slam import COLLAPSE_THRESHOLDS, TINY_SPEECH_MASKING
from tests import test_case
from tests.models.test_slam_backbone import TINY


def test_a_collapse_that_fills_the_window_stops_naming_metric_and_step(seeded):
    """10 steps of diverse codes, then every frame takes code 0: the stop
    comes when the 5-step window holds only collapsed steps (step 15)."""
    usage = CodebookUsage(num_codes=64, window_steps=5)
    monitor = CodebookCollapseMonitor(COLLAPSE_THRESHOLDS, check_every_n_batches=1)
    mask = np.ones((1, 64), "float32")
    with pytest.raises(
        CodebookCollapseError, match=r"codebook_usage = 0\.0156 < threshold 0\.1 at step 15 "
    ):
        for step in range(1, 21):
            diverse = seeded.integers(0, 64, size=(1, 64))
            usage.update_state(diverse if step <= 10 else np.zeros((1, 64), "int32"), mask)
            logs = {
                "codebook_usage": test_case.to_numpy(usage.result()),
                "codebook_usage_frames": test_case.to_numpy(usage.frames()),
            }
            monitor.on_train_batch_end(step - 1, logs)
    assert monitor.step == 15


def test_few_masked_frames_of_a_healthy_codebook_do_not_stop(seeded):
    """Smoke-run batches: one short utterance, 1-step epochs. Each step's ~4
    masked frames show at most 4 of 64 codes (usage < 0.1 without any
    collapse); the window keeps counting across keras' epoch resets and
    usage is not judged before it holds 256 masked frames."""
    import tensorflow as tf

    pretrainer = SLAMPretrainer(
        SLAMBackbone(**TINY),
        objectives=("contrastive", "diversity"),
        num_codes=64,
        code_dim=8,
        num_negatives=4,
        seed=3,
        **TINY_SPEECH_MASKING,
    )
    # Cheapest step: XLA compiles take minutes on TF, eager JAX dispatches slowly.
    pretrainer.compile(jit_compile=test_case.backend() == "jax")
    features = seeded.normal(size=(1, 48, 12)).astype("float32")
    batch = {"speech": {"speech_features": features, "speech_padding_mask": np.ones((1, 48))}}
    monitor = CodebookCollapseMonitor(COLLAPSE_THRESHOLDS, check_every_n_batches=1)
    pretrainer.fit(
        tf.data.Dataset.from_tensors(batch).repeat(),
        epochs=3,
        steps_per_epoch=1,
        verbose=0,
        callbacks=[monitor],
    )
    usages = [values["codebook_usage"] for _, values in monitor.history]
    frames = [values["codebook_usage_frames"] for _, values in monitor.history]
    assert len(usages) == 3 and min(usages) < 0.1, usages
    assert frames == sorted(frames) and frames[0] < frames[-1] < 256, frames
