"""The guides run end to end in their tiny form."""

import os
import subprocess
import sys

import keras
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_guide(filename):
    """Runs guides/`filename` in its tiny form on this backend; returns its stdout."""
    env = dict(
        os.environ,
        KERAS_BACKEND=keras.backend.backend(),
        KERAS_SLAM_GUIDE_TINY="1",
        PYTHONPATH=REPO_ROOT,
    )
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "guides", filename)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow(backend="torch")
def test_first_model_guide_runs():
    stdout = run_guide("01_first_model.py")
    assert "CER" in stdout and "guide finished" in stdout


@pytest.mark.slow(backend="torch")
def test_slm_guide_runs():
    stdout = run_guide("04_slm.py")
    assert "ASR CER: SLM" in stdout and "guide finished" in stdout
