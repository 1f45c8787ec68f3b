"""What a Conformer training step keeps for its backward pass (JAX)."""

import numpy as np
import pytest

from keras_slam.layers.conformer import ConformerFeedForward


@pytest.mark.slow(backend="jax")  # reads JAX's saved residuals: JAX only
def test_feed_forward_keeps_two_inner_width_tensors(capsys):
    """The pre-activation (for swish's gradient) and the activation (for
    the output projection's): swish's own intermediates are recomputed."""
    import jax
    from jax.ad_checkpoint import print_saved_residuals

    batch, length, hidden, inner = 2, 5, 8, 24
    layer = ConformerFeedForward(hidden, inner)
    layer.build((batch, length, hidden))
    weights = [variable.value for variable in layer.trainable_variables]
    x = np.random.default_rng(0).normal(size=(batch, length, hidden)).astype("float32")

    def loss(weights, x, training=True):
        outputs, _ = layer.stateless_call(weights, [], x, training=training)
        return (outputs**2).mean()

    capsys.readouterr()
    print_saved_residuals(loss, weights, x)
    residuals = capsys.readouterr().out.splitlines()
    # (B, T, F) or, after FlatDense's reshape, (B * T, F): the same buffer.
    inner_width = [line for line in residuals if line.startswith(("f32[2,5,24]", "f32[10,24]"))]
    assert len(inner_width) == 2, residuals
    # No dropout: training (recomputed swish) and inference share gradients.
    recomputed = jax.grad(loss, argnums=(0, 1))(weights, x)
    kept = jax.grad(loss, argnums=(0, 1))(weights, x, training=False)
    for actual, expected in zip(jax.tree.leaves(recomputed), jax.tree.leaves(kept)):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
