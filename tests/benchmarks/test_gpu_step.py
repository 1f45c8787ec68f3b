import json
import subprocess
import sys

import pytest

from benchmarks import gpu_step, harness
from keras_slam.layers.conformer import ConformerConfig
from tests import test_case


def test_block_flops_formula_at_one_frame():
    """At T = 1 (one key, one distance) a block's forward FLOPs are the
    module docstring's terms: 8DF + 14D^2 (feed-forward, projections,
    pointwise convs) + 2KD (depthwise) + 4D (scores, weights) + 2D^2 + 2D
    (relative_sinusoidal's position_dense and q.P at the one distance)."""
    d, f, k = 8, 16, 3
    conformer = ConformerConfig(num_heads=2, ffn_dim=f, kernel_size=k)
    expected = 8 * d * f + 14 * d * d + 2 * k * d + 4 * d + 2 * d * d + 2 * d
    assert gpu_step.conformer_block_flops(1, d, conformer) == expected


@pytest.mark.slow(backend="jax")
def test_tiny_config_runs_on_cpu(tmp_path):
    output = tmp_path / "gpu_step.json"
    command = [sys.executable, "benchmarks/gpu_step.py", "--config", "tiny", "--device", "cpu"]
    command += ["--warmup", "1", "--steps", "1", "--output", str(output)]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=harness.REPO_ROOT,
        timeout=test_case.SUBPROCESS_TIMEOUT_S,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ours, theirs = json.loads(output.read_text())
    assert ours["name"] == "keras-slam slam_tiny (jax, mixed_bfloat16, relative_sinusoidal)"
    assert ours["frames_per_step"] == 2 * 16 and ours["frames_per_second"] > 0
    # The documented count and the 6 x parameters x tokens rule agree at
    # this length within the attention terms they treat differently.
    assert ours["flops"] == pytest.approx(ours["flops_6nd"], rel=0.15)
    assert ours["peak_memory_gb"] > 0.1 and ours["mfu"] is None
    assert theirs["name"].startswith("HF Wav2Vec2Bert") and theirs["frames_per_step"] == 32
