"""tf.distribute.MirroredStrategy (the multi-GPU path) over 2 logical CPUs.

TensorFlow-only by design: it runs tests/models/mirrored_worker.py in a
subprocess (logical devices must be set before TensorFlow starts) from the
TensorFlow pass of the suite. JAX's multi-device path is
`keras.distribution` (test_layout_map.py).
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow(backend="tensorflow")
def test_mirrored_step_equals_single_device_step():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "tests.models.mirrored_worker"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    # Before: the step raised (a cond around a merge_call in
    # FiniteStepOptimizer), then the loss was twice the single-device one.
    assert report["loss"] <= 1e-5, report
    assert report["weights"] <= 1e-5, report
