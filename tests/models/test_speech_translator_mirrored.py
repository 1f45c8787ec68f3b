"""SpeechTranslator under tf.distribute.MirroredStrategy (the multi-GPU path)
over 2 logical CPUs: one training step on a joint ST + MT batch equals the
single-device step. TensorFlow-only by design; runs
tests/models/mirrored_worker.py in a subprocess (`MIRRORED_TASK=translator`),
as test_mirrored_strategy.py does for the recognizer."""

import pytest

from tests.models.distribution_worker import run_worker


@pytest.mark.slow(backend="tensorflow")
def test_mirrored_translator_step_equals_single_device_step():
    report = run_worker(
        "tests.models.mirrored_worker", KERAS_BACKEND="tensorflow", MIRRORED_TASK="translator"
    )
    assert report["replicas"] == 2
    assert report["loss"] <= 1e-5, report
    assert report["weights"] <= 1e-5, report
