"""tf.distribute.MirroredStrategy (the multi-GPU path) over 2 logical CPUs.

TensorFlow-only by design: it runs tests/models/mirrored_worker.py in a
subprocess (logical devices must be set before TensorFlow starts) from the
TensorFlow pass of the suite. JAX's multi-device path is
`keras.distribution` (test_layout_map.py).
"""

import pytest

from tests.models.distribution_worker import run_worker


# The translator steps on a joint ST + MT batch, as recipes.st trains.
@pytest.mark.slow(backend="tensorflow")
@pytest.mark.parametrize("task", ["recognizer", "translator"])
def test_mirrored_step_equals_single_device_step(task):
    report = run_worker(
        "tests.models.mirrored_worker", KERAS_BACKEND="tensorflow", MIRRORED_TASK=task
    )
    assert report["replicas"] == 2
    # Before: the step raised (a cond around a merge_call in
    # FiniteStepOptimizer), then the loss was twice the single-device one.
    assert report["loss"] <= 1e-5, report
    assert report["weights"] <= 1e-5, report
