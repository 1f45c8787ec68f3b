import keras
import numpy as np
import pytest

from keras_slam.layers.flat_dense import FlatDense
from tests import test_case


def dense_pair(rng, dim=6, units=5):
    """A FlatDense and a keras Dense with the same random weights."""
    flat, dense = FlatDense(units), keras.layers.Dense(units)
    for layer in (flat, dense):
        layer.build((None, dim))
    kernel = rng.normal(size=(dim, units)).astype("float32")
    bias = rng.normal(size=(units,)).astype("float32")
    for layer in (flat, dense):
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    return flat, dense


@pytest.mark.parametrize("shape", [(4, 6), (3, 7, 6), (2, 3, 4, 6)])
def test_same_outputs_and_gradients_as_keras_dense(seeded, shape):
    flat, dense = dense_pair(seeded)
    x = seeded.normal(size=shape).astype("float32")
    weights = seeded.normal(size=shape[:-1] + (5,)).astype("float32")
    expected = test_case.to_numpy(dense(x))
    np.testing.assert_allclose(test_case.to_numpy(flat(x)), expected, rtol=1e-6, atol=1e-6)
    assert flat.compute_output_shape(shape) == expected.shape

    def loss_of(layer):
        return lambda: keras.ops.sum(layer(x) ** 2 * keras.ops.convert_to_tensor(weights))

    for got, want in zip(
        test_case.gradients(flat.trainable_variables, loss_of(flat)),
        test_case.gradients(dense.trainable_variables, loss_of(dense)),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unknown_batch_and_length_compile(seeded):
    """TensorFlow traces (None, None, D) inputs, as tf.data length buckets give them."""
    flat, dense = dense_pair(seeded)
    x = seeded.normal(size=(3, 7, 6)).astype("float32")
    got = test_case.call_with_unknown_lengths(flat, x)
    np.testing.assert_allclose(got, test_case.to_numpy(dense(x)), rtol=1e-6, atol=1e-6)


def build_flat_dense(inputs):
    layer = FlatDense(3)
    layer(inputs["x"])
    return layer, lambda batch: layer(batch["x"])


def test_backend_parity(seeded, parity_worker):
    test_case.assert_backend_parity(
        "tests.layers.test_flat_dense:build_flat_dense",
        {"x": seeded.normal(size=(2, 5, 4)).astype("float32")},
        parity_worker=parity_worker,
    )


def test_serialization_roundtrip(seeded):
    layer = FlatDense(3, activation="relu")
    x = seeded.normal(size=(2, 5, 4)).astype("float32")
    layer(x)
    test_case.assert_serialization_roundtrip(
        layer, lambda obj: lambda b: obj(b["inputs"]), {"inputs": x}
    )


@pytest.mark.slow(backend="jax")  # inspects XLA's program: JAX only
def test_kernel_gradient_copies_no_activation():
    """The reason for the layer: keras Dense's (B, T, D) kernel gradient is
    lowered with a transposed (F, B*T) copy of the activations on XLA:CPU;
    FlatDense's is not."""
    import jax

    x = np.ones((4, 50, 8), "float32")

    def transposed_activation_copies(layer):
        layer.build(x.shape)
        weights = [variable.value for variable in layer.trainable_variables]

        def loss(weights):
            outputs, _ = layer.stateless_call(weights, [], x)
            return (outputs**2).sum()

        program = jax.jit(jax.grad(loss)).lower(weights).compile().as_text()
        return [line for line in program.splitlines() if "copy" in line and "[16,200]" in line]

    assert transposed_activation_copies(keras.layers.Dense(16))
    assert not transposed_activation_copies(FlatDense(16))


def test_padding_invariance(seeded):
    """Row by row: padded frames change no real frame's output."""
    layer = FlatDense(3)
    batch = {
        "x": seeded.normal(size=(3, 6, 4)).astype("float32"),
        "padding_mask": test_case.random_padding_mask(seeded, 3, 6),
    }
    test_case.assert_padding_invariant(
        lambda b: (layer(b["x"]), b["padding_mask"]), batch, {"x": "padding_mask"}
    )
