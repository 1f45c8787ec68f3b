"""`FlatDense`: keras Dense over a sequence, multiplied as one matrix."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_slam")
class FlatDense(keras.layers.Dense):
    """`keras.layers.Dense` that multiplies a (..., D) input as one (N, D) matrix.

    Same weights, outputs and gradients as `keras.layers.Dense`. Why: on JAX,
    a (B, T, D) @ (D, F) product's kernel gradient contracts over B and T,
    and XLA:CPU lowers it with a transposed copy of the activation (a
    (F, B*T) copy per projection, forward activations and backward
    gradients alike); from (B*T, D) rows the gradient is one plain matmul.
    Measured 2026-12-01 (JAX, 2-core CPU, two variants interleaved in one
    process, 10-15 rounds, load 12-16, so ratios only): FFN (8 x 250 x 512,
    hidden 2048) forward + backward CPU time -30%, a whole Conformer block
    (benchmark config) -5 to -7%; the block's 12 transposed copies of
    (512-2048, 2000) activations are gone. Benchmark train step (8 x 250,
    8 layers, `benchmarks.train_step`), 6 interleaved rounds on the idle
    machine (load 1.7): 4.78 s min / 5.34 s median per step against 5.72 /
    6.09 s with keras Dense (-16% / -12%).

    Call args:
        inputs: (..., D); rank 2 goes straight to Dense.
    Returns:
        (..., units).
    """

    def call(self, inputs, training=None):
        if len(inputs.shape) == 2:
            return super().call(inputs, training=training)
        leading = ops.shape(inputs)[:-1]
        rows = ops.reshape(inputs, (-1, inputs.shape[-1]))
        return ops.reshape(super().call(rows, training=training), (*leading, self.units))
