import os
import tempfile

import keras
import numpy as np
import pytest

from keras_slam.callbacks import TerminateOnSkippedSteps
from keras_slam.optimizers import (
    FiniteStepOptimizer,
    TransformerSchedule,
    log_finite_losses,
    skip_non_finite_steps,
)
from tests import test_case


def make_model():
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=FiniteStepOptimizer(keras.optimizers.Adam(0.1)), loss="mse")
    return model


def batches(rng, num_batches, nan_batches=()):
    """num_batches batches of 2 rows; rows of the `nan_batches` hold a NaN."""
    x = rng.normal(size=(num_batches * 2, 3)).astype("float32")
    y = rng.normal(size=(num_batches * 2, 1)).astype("float32")
    for batch in nan_batches:
        x[2 * batch, 1] = np.nan
    return x, y


def state(model):
    """Weights and optimizer variables other than the skip counters."""
    counters = {"skipped_steps", "consecutive_skips"}
    optimizer = [v for v in model.optimizer.variables if v.name not in counters]
    return [test_case.to_numpy(v) for v in model.weights + optimizer]


def test_a_non_finite_step_changes_nothing_and_is_counted(seeded):
    x, y = batches(seeded, 3, nan_batches=[1])
    with_nan = make_model()
    with_nan.fit(x, y, batch_size=2, shuffle=False, verbose=0)
    without = make_model()
    without.fit(
        np.delete(x, [2, 3], axis=0),
        np.delete(y, [2, 3], axis=0),
        batch_size=2,
        shuffle=False,
        verbose=0,
    )

    assert all(np.all(np.isfinite(w)) for w in state(with_nan))
    for a, b in zip(state(with_nan), state(without)):
        np.testing.assert_array_equal(a, b)
    assert int(test_case.to_numpy(with_nan.optimizer.iterations)) == 2
    assert int(test_case.to_numpy(with_nan.optimizer.skipped_steps)) == 1
    assert int(test_case.to_numpy(with_nan.optimizer.consecutive_skips)) == 0


def test_a_non_finite_loss_with_finite_gradients_is_skipped(seeded):
    model = make_model()
    x, y = batches(seeded, 1)
    model(x)
    model.optimizer.build(model.trainable_variables)
    before = state(model)

    def mse_plus_inf(y_true, y_pred):
        # +inf that does not depend on the weights: alone, finite gradients.
        return keras.ops.mean(keras.ops.square(y_true - y_pred)) + np.inf

    model.compile(optimizer=model.optimizer, loss=mse_plus_inf)
    model.fit(x, y, batch_size=2, verbose=0)
    for a, b in zip(before, state(model)):
        np.testing.assert_array_equal(a, b)
    assert int(test_case.to_numpy(model.optimizer.skipped_steps)) == 1


def test_consecutive_skips_stop_with_the_step_and_loss(seeded):
    model = make_model()
    x, y = batches(seeded, 6, nan_batches=[2, 3, 4])
    callback = TerminateOnSkippedSteps(max_consecutive_skips=3)
    with pytest.raises(
        RuntimeError, match=r"3 training steps in a row, up to step 5 \(batch 4 .*loss: nan"
    ):
        model.fit(x, y, batch_size=2, shuffle=False, verbose=0, callbacks=[callback])
    assert int(test_case.to_numpy(model.optimizer.iterations)) == 2


def test_skipped_steps_in_logs(seeded):
    model = make_model()
    x, y = batches(seeded, 3, nan_batches=[0])
    history = model.fit(
        x, y, batch_size=2, shuffle=False, verbose=0, callbacks=[TerminateOnSkippedSteps()]
    )
    assert history.history["skipped_steps"] == [1]


def test_mixed_bfloat16_skips(seeded):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = make_model()
    x, y = batches(seeded, 2, nan_batches=[0])
    model.fit(x, y, batch_size=2, shuffle=False, verbose=0)
    assert int(test_case.to_numpy(model.optimizer.skipped_steps)) == 1
    assert int(test_case.to_numpy(model.optimizer.iterations)) == 1
    assert all(np.all(np.isfinite(w)) for w in state(model))


def test_loss_scale_optimizer_stays_outside(seeded):
    scaled = skip_non_finite_steps(
        keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.1), initial_scale=8.0)
    )
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    assert isinstance(scaled.inner_optimizer, FiniteStepOptimizer)
    assert scaled.initial_scale == 8.0
    assert skip_non_finite_steps(scaled) is scaled
    model = make_model()
    model.compile(optimizer=scaled, loss="mse")
    x, y = batches(seeded, 2, nan_batches=[0])
    model.fit(x, y, batch_size=2, shuffle=False, verbose=0)
    # The loss scale optimizer skipped the NaN step itself (halving its scale).
    assert float(test_case.to_numpy(scaled.dynamic_scale)) == 4.0
    assert int(test_case.to_numpy(scaled.iterations)) == 1
    assert all(np.all(np.isfinite(w)) for w in state(model))


def test_compiled_model_saves_and_loads(seeded):
    model = make_model()
    x, y = batches(seeded, 2, nan_batches=[0])
    model.fit(x, y, batch_size=2, shuffle=False, verbose=0)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
    assert isinstance(restored.optimizer, FiniteStepOptimizer)
    assert int(test_case.to_numpy(restored.optimizer.skipped_steps)) == 1
    for a, b in zip(state(model), state(restored)):
        np.testing.assert_array_equal(a, b)


def test_transformer_schedule_peaks_at_warmup():
    schedule = TransformerSchedule(peak_learning_rate=6e-4, warmup_steps=40_000)
    steps = (0, 19_999, 39_999, 159_999)
    rates = [float(test_case.to_numpy(schedule(step))) for step in steps]
    np.testing.assert_allclose(rates, [6e-4 / 40_000, 3e-4, 6e-4, 3e-4], rtol=1e-5)


def test_saved_transformer_schedule_reloads_with_the_library_alone():
    """Saved models name the schedule "keras_slam>TransformerSchedule"; it must
    resolve to a class of the library, not of recipes/ or another module."""
    schedule = TransformerSchedule(peak_learning_rate=1e-3, warmup_steps=10)
    config = keras.optimizers.schedules.serialize(schedule)
    assert config["registered_name"] == "keras_slam>TransformerSchedule"
    registered = keras.saving.get_registered_object(config["registered_name"])
    assert registered is TransformerSchedule
    config["module"] = "no_such_package.recipes"
    restored = keras.optimizers.schedules.deserialize(config)
    assert isinstance(restored, TransformerSchedule)
    assert restored.get_config() == schedule.get_config()


def test_a_skipped_step_leaves_the_logged_loss_finite(seeded):
    """Keras' own loss tracker would log the window's loss as NaN."""
    x, y = batches(seeded, 3, nan_batches=[1])
    model = make_model()
    log_finite_losses(model)
    history = model.fit(
        x, y, batch_size=2, shuffle=False, verbose=0, callbacks=[TerminateOnSkippedSteps()]
    )
    assert history.history["skipped_steps"] == [1]
    reference = make_model()
    log_finite_losses(reference)
    finite = [0, 1, 4, 5]  # the rows of batches 0 and 2
    expected = reference.fit(x[finite], y[finite], batch_size=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-6)
