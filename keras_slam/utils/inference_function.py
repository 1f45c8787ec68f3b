"""`inference_function`: a model's inference step, compiled for its backend."""

import keras


def inference_function(step, variables, run_eagerly=False):
    """`step(inputs)` compiled once per input shape, reading the current
    values of `variables` at every call (so later training is seen).

    JAX: `jax.jit` with the variables' values as arguments (mapped back by a
    `keras.StatelessScope`); TensorFlow: `tf.function`, which reads the
    variables; torch: without autograd; `run_eagerly`: `step` itself on JAX
    and TensorFlow.
    """
    backend = keras.config.backend()
    if backend == "jax" and not run_eagerly:
        import jax

        @jax.jit
        def stateless_step(values, inputs):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return step(inputs)

        return lambda inputs: stateless_step([v.value for v in variables], inputs)
    if backend == "tensorflow" and not run_eagerly:
        import tensorflow as tf

        return tf.function(step)
    if backend == "torch":
        import torch

        def no_grad_step(inputs):
            with torch.no_grad():
                return step(inputs)

        return no_grad_step
    return step
