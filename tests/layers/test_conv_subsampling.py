import numpy as np
import pytest

from keras_slam.layers.conv_subsampling import ConvSubsampling, output_length
from tests import test_case

FEATURES, FILTERS, OUTPUT_DIM, LENGTH = 16, 8, 24, 23


def make_inputs(rng, batch_size=3):
    return {
        "features": rng.normal(size=(batch_size, LENGTH, FEATURES)).astype("float32"),
        "padding_mask": test_case.random_padding_mask(rng, batch_size, LENGTH, min_length=1),
    }


def build_subsampling(inputs):
    layer = ConvSubsampling(OUTPUT_DIM, filters=FILTERS)
    layer(inputs["features"], inputs["padding_mask"])

    def call_fn(batch):
        return layer(batch["features"], batch["padding_mask"])  # (x, its mask)

    return layer, call_fn


BUILDER = "tests.layers.test_conv_subsampling:build_subsampling"


def test_layer(seeded):
    inputs = make_inputs(seeded)
    x, mask = test_case.run_layer_test(
        ConvSubsampling(OUTPUT_DIM, filters=FILTERS),
        inputs,
        ((3, 6, OUTPUT_DIM), (3, 6)),
        6,
    )
    lengths = inputs["padding_mask"].sum(axis=1).astype(int)
    np.testing.assert_array_equal(test_case.to_numpy(mask).sum(axis=1), output_length(lengths))
    assert np.all(test_case.to_numpy(x)[test_case.to_numpy(mask) == 0] == 0)


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 8, 9, 100, 101])
def test_output_length_formula(seeded, length):
    def torch_conv_length(n):  # torch Conv2d(kernel 3, stride 2, padding 1)
        return (n + 2 - 3) // 2 + 1

    assert output_length(length) == torch_conv_length(torch_conv_length(length))
    features = np.zeros((1, length, FEATURES), "float32")
    x, mask = ConvSubsampling(OUTPUT_DIM, filters=FILTERS)(
        features, np.ones((1, length), "float32")
    )
    assert x.shape[1] == mask.shape[1] == output_length(length)
    assert test_case.to_numpy(mask).sum() == output_length(length)


def test_padding_invariance(seeded):
    inputs = make_inputs(seeded, batch_size=5)
    _, call_fn = build_subsampling(inputs)
    test_case.assert_padding_invariant(call_fn, inputs, {"features": "padding_mask"})


def test_matches_torch_convolutions(seeded):
    """Same weights in torch Conv2d(3, stride 2, padding 1) + ReLU + Linear."""
    import torch

    inputs = make_inputs(seeded, batch_size=1)
    inputs["padding_mask"][:] = 1.0
    layer, _ = build_subsampling(inputs)
    x = torch.from_numpy(inputs["features"])[:, None]  # (B, 1, T, F)
    with torch.no_grad():
        for conv in layer.convs:
            kernel, bias = (test_case.to_numpy(w) for w in conv.weights)
            weight = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())  # HWIO -> OIHW
            x = torch.relu(
                torch.nn.functional.conv2d(x, weight, torch.from_numpy(bias), stride=2, padding=1)
            )
        frames = x.permute(0, 2, 3, 1).flatten(2)  # (B, T', F' * C), frequency-major
        kernel, bias = (test_case.to_numpy(w) for w in layer.projection.weights)
        expected = frames.numpy() @ kernel + bias
    actual, _ = layer(inputs["features"], inputs["padding_mask"])
    np.testing.assert_allclose(test_case.to_numpy(actual), expected, atol=1e-5)


def test_backend_parity(seeded, parity_worker):
    test_case.assert_backend_parity(BUILDER, make_inputs(seeded), parity_worker=parity_worker)


def test_serialization_roundtrip(seeded):
    inputs = make_inputs(seeded)
    layer, _ = build_subsampling(inputs)

    def call_fn_of(obj):
        def call_fn(batch):
            x, mask = obj(batch["features"], batch["padding_mask"])
            return (x, mask)

        return call_fn

    test_case.assert_serialization_roundtrip(layer, call_fn_of, inputs)


def test_mixed_bfloat16_finite(seeded):
    test_case.assert_mixed_precision_finite(BUILDER, make_inputs(seeded))
