"""Checkpoints resume a fit exactly; writes are atomic; keep-last-N; recipe flags."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_slam import checkpointing
from keras_slam.callbacks import ObjectiveSchedule
from keras_slam.optimizers import FiniteStepOptimizer, find_finite_step_optimizer
from tests import test_case

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Weighted(keras.Model):
    """Dense -> Dropout (a SeedGenerator) -> Dense, MSE scaled by an
    `objective_weights["mse"]` variable that `ObjectiveSchedule` sets."""

    def __init__(self):
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(8, name="hidden")(inputs)
        hidden = keras.layers.Dropout(0.5, seed=1)(hidden)
        super().__init__(inputs, keras.layers.Dense(1, name="out")(hidden))
        self.objective_weights = {
            "mse": self.add_weight(shape=(), initializer="ones", trainable=False, name="mse")
        }

    def set_objective_weights(self, weights):
        for name, value in weights.items():
            self.objective_weights[name].assign(value)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return self.objective_weights["mse"] * keras.ops.mean((y_pred - y) ** 2)


STAGES = ((0, {"mse": 1.0}), (4, {"mse": 3.0}))


def build_model():
    keras.utils.set_random_seed(0)
    model = Weighted()
    # Accumulation over 2 steps: a checkpoint at an odd step holds a half sum.
    inner = keras.optimizers.Adam(1e-2, gradient_accumulation_steps=2, global_clipnorm=1.0)
    model.compile(optimizer=FiniteStepOptimizer(inner))
    return model


def dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    y[9] = np.nan  # one batch (step 3) is skipped and counted
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()


def train(directory, steps, every_steps=3, keep=2, checkpointer="h5"):
    """Fits a fresh model `steps` steps (resuming from `directory`)."""
    model = build_model()
    checkpoint = checkpointing.TrainingCheckpoint(
        directory, every_steps=every_steps, keep=keep, checkpointer=checkpointer
    )
    schedule = ObjectiveSchedule(STAGES, initial_step=checkpoint.restore(model))
    history = checkpointing.fit(model, dataset(), steps, 2, checkpoint, [schedule], verbose=0)
    return model, checkpoint, history


def values(variables):
    return [test_case.to_numpy(v) for v in variables]


def test_resumed_fit_equals_the_uninterrupted_fit(tmp_path):
    """Weights, optimizer state (moments, accumulators, skip counter), the
    dropout RNG, the schedule's stage and the data position all resume."""
    reference, _, reference_history = train(str(tmp_path / "a"), 8)
    train(str(tmp_path / "b"), 3)  # stops after step 3: mid-accumulation, mid-epoch
    resumed, checkpoint, history = train(str(tmp_path / "b"), 8)
    assert checkpoint.step == 8
    for expected, actual in zip(values(reference.variables), values(resumed.variables)):
        np.testing.assert_allclose(actual, expected, atol=1e-6)
    for expected, actual in zip(
        values(reference.optimizer.variables), values(resumed.optimizer.variables)
    ):
        np.testing.assert_allclose(actual, expected, atol=1e-6)
    assert int(test_case.to_numpy(find_finite_step_optimizer(resumed.optimizer).skipped_steps)) == 1
    assert float(test_case.to_numpy(resumed.objective_weights["mse"])) == 3.0
    # Epochs 1 (steps 1-2) and 2 (cut at step 3) before the stop, then
    # steps 4-5, 6-7, 8.
    assert history["loss"][0] == reference_history["loss"][0]
    assert len(history["loss"]) == 5


def test_keeps_the_newest_checkpoints_and_a_finished_run_does_nothing(tmp_path, capsys):
    _, checkpoint, _ = train(str(tmp_path), 7, every_steps=2, keep=2)
    # Steps 2, 4, 6 and the last step 7; the newest two kept.
    assert [step for step, _ in checkpoint.checkpoints()] == [6, 7]
    model, checkpoint, history = train(str(tmp_path), 7, every_steps=2, keep=2)
    assert "resumed from step 7" in capsys.readouterr().out
    assert checkpoint.step == 7 and len(history["loss"]) == 4


def test_an_interrupted_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, checkpoint, _ = train(str(tmp_path), 3)

    def killed_while_writing(filepath, **kwargs):
        with open(filepath, "wb") as file:
            file.write(b"\x89HDF half a file")
        raise KeyboardInterrupt("killed")

    checkpoint.step = 6
    monkeypatch.setattr(model, "save_weights", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save()
    assert [step for step, _ in checkpoint.checkpoints()] == [3]
    assert any(name.startswith(".step-") for name in os.listdir(tmp_path))
    fresh = build_model()
    assert checkpointing.TrainingCheckpoint(str(tmp_path)).restore(fresh) == 3
    for expected, actual in zip(values(model.weights), values(fresh.weights)):
        np.testing.assert_array_equal(actual, expected)


def test_a_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    train(str(tmp_path), 3)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match=r"Cannot resume from checkpoint .*step-000000003"):
        checkpointing.TrainingCheckpoint(str(tmp_path)).restore(other)


def test_training_flags():
    parser = argparse.ArgumentParser()
    checkpointing.add_training_arguments(parser)
    args = parser.parse_args(
        ["--clipnorm", "0.5", "--gradient-accumulation-steps", "4", "--mixed-precision", "bf16"]
    )
    assert checkpointing.optimizer_arguments(args, global_clipnorm=5.0) == {
        "global_clipnorm": 0.5,
        "gradient_accumulation_steps": 4,
    }
    defaults = parser.parse_args([])
    assert checkpointing.optimizer_arguments(defaults, global_clipnorm=5.0) == {
        "global_clipnorm": 5.0
    }
    checkpoint = checkpointing.checkpoint_from_args(defaults, "/runs/x", name="pretraining")
    assert checkpoint.directory == os.path.join("/runs/x", "checkpoints", "pretraining")
    try:
        checkpointing.apply_mixed_precision(args)
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.config.set_dtype_policy("float32")


def run_killed_and_resumed(tmp_path, steps=30, kill_after_step=10):
    """Runs `recipes.slam` (best_rq_tiny, a checkpoint every 5 steps), kills it
    with SIGKILL once a checkpoint of `kill_after_step` exists, reruns the
    same command to the end; returns (resumed step, history before the kill,
    final history, rerun's stdout)."""
    command = [
        sys.executable,
        "-m",
        "recipes.slam",
        "--config",
        "best_rq_tiny",
        "--steps",
        str(steps),
        "--steps-per-epoch",
        "5",
        "--checkpoint-every-steps",
        "5",
        "--output",
        str(tmp_path),
    ]
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), PYTHONPATH=REPO_ROOT)
    checkpoint = checkpointing.TrainingCheckpoint(str(tmp_path / "checkpoints"))
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
        deadline = time.time() + 600
        while not any(step >= kill_after_step for step, _ in checkpoint.checkpoints()):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint within 600 s"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait()
    newest, path = checkpoint.checkpoints()[-1]
    assert newest < steps, "the run finished before it was killed"
    with open(os.path.join(path, checkpointing.STATE_FILE)) as file:
        killed_history = json.load(file)["history"]
    rerun = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=test_case.SUBPROCESS_TIMEOUT_S,
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    with open(tmp_path / "history.json") as file:
        history = json.load(file)
    return newest, killed_history, history, rerun.stdout


def check_resumed(tmp_path):
    step, killed, history, stdout = run_killed_and_resumed(tmp_path)
    assert f"resumed from step {step} " in stdout, stdout[-2000:]
    # Keras counts the resumed epochs on: no "Epoch 1/" after a resume.
    assert f"Epoch {step // 5 + 1}/6" in stdout and "Epoch 1/6" not in stdout, stdout[-2000:]
    # The epochs before the kill are kept; the run still ends at step 30.
    epochs = len(killed["loss"])
    assert history["loss"][:epochs] == killed["loss"]
    assert len(history["loss"]) == 6
    losses = np.asarray(history["w2v_mlm_loss"])
    # The first resumed epoch continues from the last one before the kill,
    # not from the initial loss.
    assert abs(losses[epochs] - losses[epochs - 1]) < abs(losses[epochs] - losses[0]), losses
    from keras_slam.models.slam_backbone import SLAMBackbone

    backbone = SLAMBackbone.from_preset(str(tmp_path / "preset"))
    assert backbone.count_params() > 0


@pytest.mark.slow(backend="jax")
def test_slam_recipe_resumes_after_sigkill_on_jax(tmp_path):
    check_resumed(tmp_path)


@pytest.mark.slow(backend="tensorflow")
def test_slam_recipe_resumes_after_sigkill_on_tensorflow(tmp_path):
    check_resumed(tmp_path)
