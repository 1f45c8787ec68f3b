"""The guides run end to end in their tiny form."""

import os
import subprocess
import sys

import keras
import pytest

from tests import test_case
from tests.conftest import xla_flags_with_devices

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_guide(name, **extra_env):
    """Runs guides/<name> in its tiny form (with `extra_env` set); returns its stdout."""
    env = dict(
        os.environ,
        KERAS_BACKEND=keras.backend.backend(),
        KERAS_SLAM_GUIDE_TINY="1",
        PYTHONPATH=REPO_ROOT,
        **extra_env,
    )
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "guides", name)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=test_case.SUBPROCESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "guide finished" in result.stdout
    return result.stdout


@pytest.mark.slow(backend="torch")
def test_first_model_guide_runs():
    assert "CER" in run_guide("01_first_model.py")


@pytest.mark.slow(backend="torch")
def test_speech_translation_guide_runs():
    output = run_guide("02_speech_translation.py")
    assert "chrF" in output and "from text:" in output


@pytest.mark.slow(backend="tensorflow")
def test_classification_guide_runs():
    assert "text-trained head on speech" in run_guide("03_classification.py")


@pytest.mark.slow(backend="torch")
def test_slm_guide_runs():
    assert "ASR CER: SLM" in run_guide("04_slm.py")


@pytest.mark.slow(backend="jax")
def test_scale_out_guide_runs():
    output = run_guide("05_scale_out.py", XLA_FLAGS=xla_flags_with_devices())
    assert "model parallel 2x4" in output and "max |loss - 1 device| / loss" in output
    assert "mslam_2b on a 8x4 (data x model) mesh" in output and "fits in 32 GiB" in output


# On torch: eager steps cost less than JAX's compiles (guide 06 smoke, CPU s:
# 101 on torch; 243 on JAX, of which 79 the pre-training step's compile and
# 74 the eager per-shape compiles of the held-out cross-modal scores).
@pytest.mark.slow(backend="torch")
def test_slam_ablation_guide_runs():
    output = run_guide("06_slam_ablation.py")
    assert "| random_init | - |" in output and "| +ctc | w2v-BERT + text_mlm" in output
