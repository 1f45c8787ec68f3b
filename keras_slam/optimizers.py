"""Training never applies a non-finite step.

`FiniteStepOptimizer` wraps any Keras optimizer: a step whose loss or any
gradient is NaN/inf changes no weight and no optimizer state (iterations,
moments); it only counts the step in `skipped_steps`. The same idea as
`keras.optimizers.LossScaleOptimizer`'s skip (a `keras.ops.cond` in `apply`),
so it works under `fit` on JAX, TensorFlow and torch without a per-backend
train step. `TerminateOnSkippedSteps` stops `fit` with an error naming the
step and the loss after too many consecutive skips.
"""

import keras
from keras import ops


def _all_finite(grads):
    return ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in grads if g is not None]))


def _counter_updates(finite, skipped_steps, consecutive_skips):
    """New (skipped_steps, consecutive_skips) after a step."""
    skipped = ops.cast(ops.logical_not(finite), skipped_steps.dtype)
    return skipped_steps + skipped, (consecutive_skips + skipped) * skipped


@keras.saving.register_keras_serializable(package="keras_slam")
class FiniteStepOptimizer(keras.optimizers.Optimizer):
    """Applies `inner_optimizer`'s step only when the loss and all gradients
    are finite; otherwise leaves every weight and optimizer state as it was.

    Variables `skipped_steps` (all skipped steps) and `consecutive_skips`
    (skipped since the last applied step) count the skips. Under a
    `LossScaleOptimizer` (mixed_float16) the loss scaling wraps this
    optimizer (`skip_non_finite_steps`) and skips overflow steps itself.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` that makes the steps.
    """

    def __init__(self, inner_optimizer, name=None, **kwargs):
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self.inner_optimizer = keras.optimizers.get(inner_optimizer)

    def build(self, var_list):
        self.skipped_steps = self.add_variable(
            shape=(), dtype="int", initializer="zeros", aggregation="none", name="skipped_steps"
        )
        self.consecutive_skips = self.add_variable(
            shape=(), dtype="int", initializer="zeros", aggregation="none", name="consecutive_skips"
        )
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def iterations(self):
        """Applied steps (skipped steps do not count)."""
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    def scale_loss(self, loss):
        """`loss` times a factor that is exactly 1 when the loss is finite and
        NaN when it is not, so a non-finite loss always gives NaN gradients
        (even through terms that do not depend on the weights)."""
        finite_factor = 1.0 + 0.0 * ops.stop_gradient(loss)
        return self.inner_optimizer.scale_loss(loss * finite_factor)

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
        finite = _all_finite(grads)
        skipped_steps, consecutive_skips = _counter_updates(
            finite, self.skipped_steps, self.consecutive_skips
        )
        self.skipped_steps.assign(skipped_steps)
        self.consecutive_skips.assign(consecutive_skips)
        ops.cond(
            finite,
            lambda: self.inner_optimizer.apply(grads, trainable_variables),
            lambda: None,
        )

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """JAX's `fit`: the same step on values instead of variables."""
        # A LossScaleOptimizer passes variables (read in its StatelessScope).
        optimizer_variables = [ops.convert_to_tensor(v) for v in optimizer_variables]
        own = len(self._variables)
        own_values, inner_values = optimizer_variables[:own], optimizer_variables[own:]
        finite = _all_finite(grads)
        counters = _counter_updates(
            finite,
            own_values[self._get_own_index(self.skipped_steps)],
            own_values[self._get_own_index(self.consecutive_skips)],
        )
        own_values = list(own_values)
        for variable, value in zip((self.skipped_steps, self.consecutive_skips), counters):
            own_values[self._get_own_index(variable)] = value
        new_trainable, new_inner = ops.cond(
            finite,
            lambda: self.inner_optimizer.stateless_apply(inner_values, grads, trainable_variables),
            lambda: (list(trainable_variables), list(inner_values)),
        )
        return new_trainable, own_values + list(new_inner)

    def _get_own_index(self, variable):
        return next(i for i, v in enumerate(self._variables) if v is variable)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["inner_optimizer"] = keras.saving.deserialize_keras_object(
            config["inner_optimizer"], custom_objects=custom_objects
        )
        return cls(**config)


def skip_non_finite_steps(optimizer):
    """`optimizer` (anything `keras.optimizers.get` takes) made to skip
    non-finite steps; a `LossScaleOptimizer` keeps its loss scaling outside,
    so overflow steps still lower its scale."""
    optimizer = keras.optimizers.get(optimizer)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        if not isinstance(optimizer.inner_optimizer, FiniteStepOptimizer):
            optimizer = keras.optimizers.LossScaleOptimizer(
                FiniteStepOptimizer(optimizer.inner_optimizer),
                initial_scale=optimizer.initial_scale,
                dynamic_growth_steps=optimizer.dynamic_growth_steps,
                name=optimizer.name,
            )
        return optimizer
    if isinstance(optimizer, FiniteStepOptimizer):
        return optimizer
    return FiniteStepOptimizer(optimizer)


def find_finite_step_optimizer(optimizer):
    """The `FiniteStepOptimizer` in `optimizer` (itself or under a
    `LossScaleOptimizer`), or None."""
    while optimizer is not None and not isinstance(optimizer, FiniteStepOptimizer):
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return optimizer


class TerminateOnSkippedSteps(keras.callbacks.Callback):
    """Adds `skipped_steps` to the logs and stops `fit` with an error naming
    the step and the loss after `max_consecutive_skips` skipped steps in a row.

    One skipped step is a bad batch; the weights are unchanged, so the next
    batch trains normally. Skips in a row mean the model or the data stream
    is broken, and skipping cannot mend it.

    Args:
        max_consecutive_skips: skipped steps in a row that stop training.
    """

    def __init__(self, max_consecutive_skips=10):
        super().__init__()
        self.max_consecutive_skips = max_consecutive_skips

    def _counters(self):
        """(optimizer, skipped_steps, consecutive_skips) of the model now."""
        optimizer = find_finite_step_optimizer(self.model.optimizer)
        if optimizer is None:
            raise ValueError(
                "TerminateOnSkippedSteps needs a model compiled with a "
                f"FiniteStepOptimizer; got {type(self.model.optimizer).__name__}"
            )
        return (
            optimizer,
            int(ops.convert_to_numpy(optimizer.skipped_steps)),
            int(ops.convert_to_numpy(optimizer.consecutive_skips)),
        )

    def on_epoch_end(self, epoch, logs=None):
        logs["skipped_steps"] = self._counters()[1]

    def on_train_batch_end(self, batch, logs=None):
        optimizer, skipped_steps, consecutive_skips = self._counters()
        logs["skipped_steps"] = skipped_steps
        if consecutive_skips >= self.max_consecutive_skips:
            step = int(ops.convert_to_numpy(optimizer.iterations)) + skipped_steps
            loss = logs.get("loss")
            raise RuntimeError(
                f"{consecutive_skips} training steps in a row, up to step {step} "
                f"(batch {batch} of this epoch), had a non-finite loss or gradient "
                f"(loss: {loss}); none was applied. Check the data and the learning rate."
            )
