import json
import os
import subprocess
import sys

# Set before JAX or TensorFlow starts XLA. Test steps are tiny and compiled
# once or twice, so XLA's CPU back end spends a test's time compiling, not
# running: without LLVM optimisation one eager JAX pre-trainer call took
# 52 s of CPU instead of 93 s, its fit compile 56 s instead of 127 s. These
# flags change code speed, not float semantics (fast math stays off).
# JAX's persistent compilation cache (one per pass, also for subprocesses)
# was tried and dropped: tests rarely compile the same program twice, so it
# hit 97 of 2,484 compiles in tests/layers and 5 of 1,245 in three task
# files, and saved no CPU time there or on the resumed/meshed recipe runs.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)

import keras  # noqa: E402
import numpy as np
import pytest

from tests import test_case

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def xla_flags_with_devices(count=8):
    """The suite's XLA_FLAGS plus `count` simulated host devices, for a JAX
    subprocess (replacing the flags instead would drop the compile-time cuts
    above: the 2x4-mesh layout-map worker took 60 CPU s without them, 45 with)."""
    return f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={count}"


class ParityWorker:
    """A subprocess on `test_case.next_backend()` that answers parity runs."""

    def __init__(self):
        self.backend = test_case.next_backend()
        env = dict(os.environ, KERAS_BACKEND=self.backend, PYTHONPATH=REPO_ROOT)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.parity_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env=env,
        )

    def run(self, builder, weights, inputs, outputs):
        request = dict(builder=builder, weights=weights, inputs=inputs, outputs=outputs)
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"parity worker on {self.backend} exited")
        answer = json.loads(line)
        if not answer["ok"]:
            raise AssertionError(f"on {self.backend}:\n{answer['error']}")

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def parity_worker():
    worker = ParityWorker()
    yield worker
    worker.close()


def reset_seeds_and_policy():
    """The seeds and float32 policy every test (and shared fixture) starts from."""
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same seeds and the float32 policy."""
    reset_seeds_and_policy()
    yield np.random.default_rng(1234)


def pytest_report_header(config):
    return f"KERAS_BACKEND={keras.backend.backend()}"


def pytest_collection_modifyitems(config, items):
    """Runs each `@pytest.mark.slow(backend=...)` test on its backend only.

    End-to-end runs are too slow to repeat three times; each names the one
    backend that runs it, and the suite spreads them over all three.
    """
    current = keras.backend.backend()
    selected, deselected = [], []
    for item in items:
        marker = item.get_closest_marker("slow")
        if marker is None:
            selected.append(item)
            continue
        backend = marker.kwargs.get("backend")
        if backend not in test_case.BACKENDS:
            raise pytest.UsageError(
                f"{item.nodeid}: slow(backend=...) must name one of {test_case.BACKENDS}"
            )
        (selected if backend == current else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected
