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


def test_layers_and_losses_import_without_tensorflow():
    code = (
        "import sys, keras_slam.layers, keras_slam.losses; "
        "sys.exit('tensorflow' in sys.modules)"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
