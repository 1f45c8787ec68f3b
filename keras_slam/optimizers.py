"""Training never applies a non-finite step.

`FiniteStepOptimizer` wraps any Keras optimizer: a step whose loss or any
gradient is NaN/inf changes no weight and no optimizer state (iterations,
moments); it only counts the step in `skipped_steps`. The same idea as
`keras.optimizers.LossScaleOptimizer`'s skip (a `keras.ops.cond` in `apply`),
so it works under `fit` on JAX, TensorFlow and torch without a per-backend
train step. `keras_slam.callbacks.TerminateOnSkippedSteps` stops `fit`
with an error naming the step and the loss after too many consecutive skips.

Also here: `EncoderHeadAdam` (the fine-tuning optimizer of
`SpeechRecognizer`) and `TransformerSchedule` (the pre-training learning
rate), registered under "keras_slam" so saved models reload with the
library alone.
"""

import keras
from keras import ops


def _all_finite(grads):
    return ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in grads if g is not None]))


def _counter_updates(finite, skipped_steps, consecutive_skips):
    """New (skipped_steps, consecutive_skips) after a step."""
    skipped = ops.cast(ops.logical_not(finite), skipped_steps.dtype)
    return skipped_steps + skipped, (consecutive_skips + skipped) * skipped


def _in_tf_distribution():
    import tensorflow as tf

    return tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context() is False


def _tf_cross_replica(apply_if_finite, grads, trainable_variables):
    """`apply_if_finite` under a tf.distribute strategy (MirroredStrategy).

    The inner step synchronises the replicas (`merge_call`), which a cond
    in replica context cannot hold; so, as `LossScaleOptimizer` does, the
    cond runs in cross-replica context and the step on every replica.
    """
    import tensorflow as tf

    def cross_replica(distribution, grads, trainable_variables):
        finite = distribution.extended.call_for_each_replica(_all_finite, args=(grads,))
        finite = ops.all(ops.stack(distribution.experimental_local_results(finite)))

        def per_replica(fn, *args):
            distribution.extended.call_for_each_replica(fn, args=args)

        apply_if_finite(finite, grads, trainable_variables, run_inner=per_replica)

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(grads, trainable_variables))


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
        if keras.backend.backend() == "tensorflow" and _in_tf_distribution():
            _tf_cross_replica(self._apply_if_finite, grads, trainable_variables)
        else:
            self._apply_if_finite(_all_finite(grads), grads, trainable_variables)

    def _apply_if_finite(self, finite, grads, trainable_variables, run_inner=None):
        """Counts the step and applies it when `finite`; `run_inner(fn, *args)`
        runs the inner step (per replica under tf.distribute)."""
        skipped_steps, consecutive_skips = _counter_updates(
            finite, self.skipped_steps, self.consecutive_skips
        )
        self.skipped_steps.assign(skipped_steps)
        self.consecutive_skips.assign(consecutive_skips)
        run_inner = run_inner or (lambda fn, *args: fn(*args))
        ops.cond(
            finite,
            lambda: run_inner(self.inner_optimizer.apply, grads, trainable_variables),
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


@keras.saving.register_keras_serializable(package="keras_slam")
class FiniteMean(keras.metrics.Mean):
    """`keras.metrics.Mean` of the finite values only: a skipped step's NaN
    loss leaves the running mean as it was (the step shows in
    `skipped_steps` instead of turning a whole logging window into NaN)."""

    def update_state(self, values, sample_weight=None):
        values = ops.convert_to_tensor(values, self.dtype)
        finite = ops.isfinite(values)
        weight = ops.cast(finite, self.dtype)
        if sample_weight is not None:
            weight = weight * ops.cast(sample_weight, self.dtype)
        return super().update_state(ops.where(finite, values, 0.0), sample_weight=weight)


def log_finite_losses(model):
    """Makes a compiled `model` log the mean of its finite losses as "loss".

    Keras' train step updates the private `model._loss_tracker` (a `Mean`)
    with every step's loss; this swaps in a `FiniteMean`. Call after
    `compile` (which creates the tracker).
    """
    # Untracked, as `Trainer.compile` sets it: a tracked assignment raises
    # "cannot add new elements of state" on a built subclassed model.
    object.__setattr__(model, "_loss_tracker", FiniteMean(name="loss"))


def find_finite_step_optimizer(optimizer):
    """The `FiniteStepOptimizer` in `optimizer` (itself or under a
    `LossScaleOptimizer`), or None."""
    while optimizer is not None and not isinstance(optimizer, FiniteStepOptimizer):
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return optimizer


@keras.saving.register_keras_serializable(package="keras_slam")
class EncoderHeadAdam(keras.optimizers.Adam):
    """Adam with a separate learning rate, and a warm-up freeze, for the encoder.

    Variables whose path starts with `head_prefix` train at the learning
    rate; all others (the encoder) at `encoder_learning_rate_multiplier`
    times it, and not at all during the first `freeze_encoder_steps` steps.

    Args:
        head_prefix: variable path prefix of the head.
        encoder_learning_rate_multiplier: encoder lr / head lr.
        freeze_encoder_steps: steps with a zero encoder learning rate.
        **kwargs: `keras.optimizers.Adam` arguments.
    """

    def __init__(
        self,
        head_prefix,
        encoder_learning_rate_multiplier=1.0,
        freeze_encoder_steps=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder_learning_rate_multiplier = encoder_learning_rate_multiplier
        self.freeze_encoder_steps = freeze_encoder_steps
        self.head_prefix = head_prefix

    def _is_head(self, variable):
        # TensorFlow hands over its own tf.Variable; map back to ours.
        keras_variable = self._trainable_variables[self._get_variable_index(variable)]
        return keras_variable.path.startswith(self.head_prefix)

    def update_step(self, gradient, variable, learning_rate):
        if not self._is_head(variable):
            frozen = ops.less(self.iterations, self.freeze_encoder_steps)
            multiplier = ops.where(frozen, 0.0, self.encoder_learning_rate_multiplier)
            learning_rate = learning_rate * ops.cast(multiplier, learning_rate.dtype)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder_learning_rate_multiplier=self.encoder_learning_rate_multiplier,
            freeze_encoder_steps=self.freeze_encoder_steps,
            head_prefix=self.head_prefix,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_slam")
class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Vaswani et al.'s schedule by its peak: linear warmup, then 1/sqrt(step).

    lr(step) = peak * min(step / warmup, sqrt(warmup / step)), step from 1.
    """

    def __init__(self, peak_learning_rate, warmup_steps):
        self.peak_learning_rate = peak_learning_rate
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32") + 1.0
        warmup = float(self.warmup_steps)
        return self.peak_learning_rate * keras.ops.minimum(
            step / warmup, keras.ops.sqrt(warmup / step)
        )

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps}
