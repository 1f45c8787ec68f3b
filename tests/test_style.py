"""The repository passes `ruff check` and `ruff format --check` (pyproject's [tool.ruff])."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _ruff():
    """The ruff executable of this interpreter's environment (the `[test]` extra)."""
    candidate = pathlib.Path(sys.executable).with_name("ruff")
    found = str(candidate) if candidate.exists() else shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed; install the project's [test] extra")
    return found


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command):
    result = subprocess.run(
        [_ruff(), *command, "--no-cache", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, (
        f"ruff {' '.join(command)} failed:\n{result.stdout}{result.stderr}"
    )
