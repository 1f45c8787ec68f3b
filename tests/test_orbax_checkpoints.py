"""Orbax checkpoints (`--checkpointer orbax`, JAX): a fit saved on a 2x4 mesh
resumes to the uninterrupted fit's weights, optimizer state and step, each
array back in its sharding, and loads on one device too. The 8 simulated
devices need XLA_FLAGS before JAX starts, so the mesh run is a subprocess."""

import os

import keras
import numpy as np
import pytest

from keras_slam import checkpointing, distribution
from tests.test_checkpointing import build_model, train, values
from tests.test_distribution import run_on_simulated_devices


def layout_map(device_mesh):
    """The test model's Dense kernels split over the model axis."""
    layout = keras.distribution.LayoutMap(device_mesh)
    layout["hidden/kernel"] = (None, "model")
    layout["out/kernel"] = ("model", None)
    return layout


def resume_on_a_2x4_mesh(directory):
    """Run in the subprocess: 8 steps straight, and 3 steps then a resume to 8."""
    distribution.apply_mesh("2x4", layout_map)
    reference, _, reference_history = train(os.path.join(directory, "straight"), 8, 3, 2, "orbax")
    train(os.path.join(directory, "resumed"), 3, 3, 2, "orbax")
    resumed, checkpoint, history = train(os.path.join(directory, "resumed"), 8, 3, 2, "orbax")
    assert checkpoint.step == 8 and checkpoint.restored
    assert [step for step, _ in checkpoint.checkpoints()] == [6, 8]  # keep=2
    assert sorted(os.listdir(os.path.join(directory, "resumed"))) == ["6", "8"]
    for expected, actual in zip(
        values(reference.variables + reference.optimizer.variables),
        values(resumed.variables + resumed.optimizer.variables),
    ):
        np.testing.assert_allclose(actual, expected, atol=1e-6)
    assert history["loss"][0] == reference_history["loss"][0] and len(history["loss"]) == 5
    kernel = resumed.get_layer("hidden").kernel
    assert tuple(kernel.value.sharding.spec) == (None, "model"), kernel.value.sharding
    keras.distribution.set_distribution(None)  # one device: the arrays reshard as they load
    alone = build_model()
    saved = checkpointing.TrainingCheckpoint(
        os.path.join(directory, "resumed"), checkpointer="orbax"
    )
    assert saved.restore(alone) == 8
    for expected, actual in zip(values(resumed.weights), values(alone.weights)):
        np.testing.assert_array_equal(actual, expected)
    assert len(alone.get_layer("hidden").kernel.value.sharding.device_set) == 1
    print("resumed on the mesh")


@pytest.mark.slow(backend="jax")
def test_a_fit_saved_on_a_2x4_mesh_resumes_exactly(tmp_path):
    code = f"from tests.test_orbax_checkpoints import *; resume_on_a_2x4_mesh({str(tmp_path)!r})"
    stdout = run_on_simulated_devices(["-c", code])
    assert "--mesh 2x4: ModelParallel over 8 devices" in stdout
    assert "resumed on the mesh" in stdout


def test_orbax_is_the_multi_host_jax_default_and_jax_only(monkeypatch, tmp_path):
    args = checkpointing.default_training_arguments()
    assert checkpointing.checkpoint_from_args(args, str(tmp_path)).orbax is None
    if keras.backend.backend() == "jax":
        monkeypatch.setattr(distribution, "processes", lambda: (2, 0))
        assert checkpointing.checkpoint_from_args(args, str(tmp_path)).orbax is not None
    else:
        with pytest.raises(ValueError, match="--checkpointer orbax writes sharded JAX arrays"):
            checkpointing.TrainingCheckpoint(str(tmp_path), checkpointer="orbax")
