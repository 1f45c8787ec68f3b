"""The shared checks themselves catch what they are meant to catch."""

import keras
import keras_hub
import pytest

from tests import test_case


def build_dense(inputs):
    layer = keras.layers.Dense(3)
    layer(inputs["x"])

    def call_fn(batch):
        return layer(batch["x"])

    return layer, call_fn


class LeakyMean(keras.layers.Layer):
    """Mean over time that (wrongly) counts padded frames."""

    def call(self, x, padding_mask):
        return keras.ops.mean(x, axis=1)


def test_padding_invariance_catches_a_leak(seeded):
    x = seeded.normal(size=(3, 7, 2)).astype("float32")
    mask = test_case.random_padding_mask(seeded, 3, 7, min_length=2)
    mask[1, 3:] = 0
    layer = LeakyMean()
    with pytest.raises(AssertionError):
        test_case.assert_padding_invariant(
            lambda b: layer(b["x"], b["padding_mask"]),
            {"x": x, "padding_mask": mask},
            {"x": "padding_mask"},
        )


class MultipliedMaskMean(keras.layers.Layer):
    """Masked mean over time that zeroes padding by a multiply: right for
    finite padding, NaN when a padded frame holds NaN/inf (0 * NaN)."""

    def call(self, x, padding_mask):
        mask = padding_mask[:, :, None]
        return keras.ops.sum(x * mask, axis=1) / keras.ops.sum(mask, axis=1)


def test_padding_invariance_catches_non_finite_padding_leak(seeded):
    x = seeded.normal(size=(3, 7, 2)).astype("float32")
    mask = test_case.random_padding_mask(seeded, 3, 7, min_length=2)
    mask[1, 3:] = 0
    layer = MultipliedMaskMean()
    with pytest.raises(AssertionError, match="non-finite padding, item 1"):
        test_case.assert_padding_invariant(
            lambda b: layer(b["x"], b["padding_mask"]),
            {"x": x, "padding_mask": mask},
            {"x": "padding_mask"},
        )


def test_serialization_roundtrip_dense(seeded):
    layer = keras.layers.Dense(3)
    inputs = {"inputs": seeded.normal(size=(2, 4)).astype("float32")}
    layer(inputs["inputs"])
    test_case.assert_serialization_roundtrip(layer, lambda obj: lambda b: obj(**b), inputs)


def test_backend_parity_dense(seeded, parity_worker):
    inputs = {"x": seeded.normal(size=(2, 4)).astype("float32")}
    test_case.assert_backend_parity(
        "tests.test_test_case:build_dense", inputs, parity_worker=parity_worker
    )


class TwoOutputs(keras.layers.Layer):
    def call(self, x):
        return x, keras.ops.sum(x, axis=-1)


def test_run_layer_test_checks_each_output_shape(seeded):
    inputs = {"x": seeded.normal(size=(2, 5, 3)).astype("float32")}
    test_case.run_layer_test(TwoOutputs(), inputs, ((2, 5, 3), (2, 5)), 0)
    with pytest.raises(AssertionError):
        test_case.run_layer_test(TwoOutputs(), inputs, ((2, 5, 3), (2, 4)), 0)
    test_case.run_layer_test(keras.layers.Dense(4), {"inputs": inputs["x"]}, (2, 5, 4), 2)


class TwoBranches(keras_hub.models.Backbone):
    """Two same-shape branches, tracked in the opposite order of the graph:
    torch lists their weights in graph order, JAX and TensorFlow in
    attribute order, so a positional weight copy swaps them."""

    def __init__(self, **kwargs):
        self.second_dense = keras.layers.Dense(2, name="second_dense")
        self.first_dense = keras.layers.Dense(2, name="first_dense")
        first = keras.Input((3,), name="first")
        second = keras.Input((3,), name="second")
        outputs = keras.layers.Concatenate()([self.first_dense(first), self.second_dense(second)])
        super().__init__(inputs={"first": first, "second": second}, outputs=outputs, **kwargs)


def build_two_branches(inputs):
    model = TwoBranches()
    return model, model


def test_backend_parity_two_branch_functional_model(seeded, parity_worker):
    inputs = {name: seeded.normal(size=(2, 3)).astype("float32") for name in ("first", "second")}
    test_case.assert_backend_parity(
        "tests.test_test_case:build_two_branches", inputs, parity_worker=parity_worker
    )


def test_load_weights_names_missing_and_extra_paths(tmp_path):
    model, _ = build_two_branches(None)
    first_only = keras.layers.Dense(2, name="first_dense")
    first_only.build((None, 3))
    (tmp_path / "model").mkdir()
    first_path, _ = test_case.save_case(str(tmp_path), first_only, {})
    model_path, _ = test_case.save_case(str(tmp_path / "model"), model, {})
    with pytest.raises(
        ValueError, match=r"missing \['second_dense/bias', 'second_dense/kernel'\], extra \[\]"
    ):
        test_case.load_weights(model, first_path)
    with pytest.raises(
        ValueError, match=r"missing \[\], extra \['second_dense/bias', 'second_dense/kernel'\]"
    ):
        test_case.load_weights(first_only, model_path)
