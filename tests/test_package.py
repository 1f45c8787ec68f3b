"""Package-level rules from DESIGN.md."""

import os
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_slam"


def test_model_code_never_imports_tensorflow():
    """layers/, models/ and objectives/ run on JAX and torch without TensorFlow."""
    folders = [PACKAGE / name for name in ("layers", "models", "objectives")]
    assert all(folder.is_dir() for folder in folders)
    offenders = [
        str(path.relative_to(PACKAGE))
        for folder in folders
        for path in folder.rglob("*.py")
        if "import tensorflow" in path.read_text()
    ]
    assert offenders == []


def test_layers_and_objectives_import_without_tensorflow():
    code = (
        "import sys, keras_slam.layers, keras_slam.objectives; "
        "sys.exit('tensorflow' in sys.modules)"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
