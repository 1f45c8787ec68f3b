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


def test_layers_and_objectives_work_without_tensorflow():
    # `None` in sys.modules makes `import tensorflow` fail as if not installed
    # (keras-hub, a base of LogMelSpectrogram, then runs without it).
    code = (
        "import sys; sys.modules['tensorflow'] = None; import numpy as np; "
        "import keras_slam.layers, keras_slam.objectives; "
        "keras_slam.layers.LogMelSpectrogram()(np.zeros((1, 800), 'float32'))"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def _modules():
    """Dotted names of every keras_slam module."""
    root = PACKAGE.parent
    return sorted(
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
        if path.name != "__main__.py"
    )


def test_no_function_level_import_of_keras_slam():
    """Imports inside functions were how the preset modules dodged an import
    circle; keras_slam modules import each other at the top only."""
    import ast

    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for function in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = ["keras_slam" if node.level else node.module or ""]
                else:
                    continue
                if any(name.split(".")[0] == "keras_slam" for name in names):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def test_every_module_imports_in_a_fresh_process():
    """`import keras_slam` exposes its subpackages lazily; then the deepest
    importer first (the converter imports the models, which import the
    preset tables and the converter back), then every module."""
    modules = ["keras_slam.presets.hf_w2v_bert"] + _modules()[::-1]
    code = (
        "import importlib, sys, keras_slam\n"
        "assert 'keras_slam.layers' not in sys.modules\n"
        "assert keras_slam.layers.ConformerBlock\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from keras_slam.utils import preset_utils\n"
        "print(sorted(preset_utils.NAMED_PRESETS), [s.name for s in preset_utils.PRESET_SOURCES])\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        env=dict(os.environ, PYTHONPATH=str(PACKAGE.parent)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'slam_tiny'" in result.stdout and "huggingface_w2v_bert" in result.stdout


def test_metrics_import_first_in_a_fresh_process():
    """`keras_slam.metrics` imports `keras_slam.layers`, which imports a
    metrics module back: either may be the first import."""
    result = subprocess.run(
        [sys.executable, "-c", "from keras_slam.metrics import translation_scores, CodebookUsage"],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        env=dict(os.environ, PYTHONPATH=str(PACKAGE.parent)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
