"""Package-level rules from DESIGN.md."""

import os
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_slam"


def test_model_code_never_imports_tensorflow():
    """layers/, models/ and losses/ run on JAX and torch without TensorFlow."""
    offenders = [
        str(path.relative_to(PACKAGE))
        for folder in ("layers", "models", "losses")
        for path in (PACKAGE / folder).rglob("*.py")
        if "import tensorflow" in path.read_text()
    ]
    assert offenders == []


def test_layers_and_losses_work_without_tensorflow():
    # `None` in sys.modules makes `import tensorflow` fail as if not installed
    # (keras-hub, a base of LogMelSpectrogram, then runs without it).
    code = (
        "import sys; sys.modules['tensorflow'] = None; import numpy as np; "
        "import keras_slam.layers, keras_slam.losses; "
        "keras_slam.layers.LogMelSpectrogram()(np.zeros((1, 800), 'float32'))"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
