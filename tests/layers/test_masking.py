"""Span masking and mask embeddings: statistics, padding, jit, parity."""

import keras
import numpy as np
import pytest

from keras_slam.layers.masking import (
    MaskEmbedding,
    SpanMasking,
    compute_span_mask,
    mask_rate_to_start_probability,
)
from tests import test_case


def expected_fraction(lengths, span_length, probability):
    """Exact expected masked fraction for the documented start rule."""
    masked, total = 0.0, 0
    for length in lengths:
        starts = np.zeros(length, bool)
        starts[: max(length - span_length, 0) + 1] = True
        for t in range(length):
            chances = starts[max(t - span_length + 1, 0) : t + 1].sum()
            masked += 1 - (1 - probability) ** chances
        total += length
    return masked / total


def test_masked_fraction_matches_expectation_and_padding_is_never_masked(seeded):
    padding_mask = test_case.random_padding_mask(seeded, 64, 200, min_length=30)
    mask = test_case.to_numpy(compute_span_mask(padding_mask, 10, start_probability=0.065, seed=11))
    assert mask.dtype == np.float32 and mask.shape == padding_mask.shape
    assert np.all(mask[padding_mask == 0] == 0)
    lengths = padding_mask.sum(1).astype(int)
    expected = expected_fraction(lengths, 10, 0.065)
    observed = mask.sum() / padding_mask.sum()
    assert abs(observed - expected) < 0.03, (observed, expected)
    assert 0.40 < expected < 0.50  # ~49% for long utterances, as w2v-BERT


@pytest.mark.parametrize("mask_rate, span_length", [(0.15, 5), (0.15, 20)])
def test_text_mask_rate(seeded, mask_rate, span_length):
    probability = mask_rate_to_start_probability(mask_rate, span_length)
    np.testing.assert_allclose(1 - (1 - probability) ** span_length, mask_rate)
    padding_mask = np.ones((64, 400), "float32")
    mask = test_case.to_numpy(
        compute_span_mask(padding_mask, span_length, mask_rate=mask_rate, seed=3)
    )
    expected = expected_fraction([400] * 64, span_length, probability)
    assert abs(mask.mean() - expected) < 0.02, (mask.mean(), expected)
    assert abs(expected - mask_rate) < 0.01


def test_spans_are_contiguous_runs_of_span_length():
    padding_mask = np.ones((32, 60), "float32")
    mask = test_case.to_numpy(compute_span_mask(padding_mask, 6, start_probability=0.02, seed=5))
    # Overlapping spans merge; every run is at least one span long.
    for row in mask:
        edges = np.diff(np.concatenate([[0], row, [0]]))
        runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        assert np.all(runs >= 6), runs


def test_min_spans(seeded):
    padding_mask = test_case.random_padding_mask(seeded, 16, 50, min_length=20)
    mask = test_case.to_numpy(
        compute_span_mask(padding_mask, 4, start_probability=0.0, min_spans=2, seed=9)
    )
    per_item = mask.sum(1)
    assert np.all((per_item >= 5) & (per_item <= 8)), per_item  # two spans of 4, maybe overlapping
    assert np.all(mask[padding_mask == 0] == 0)
    # Shorter than a span: the whole utterance is one span.
    short = np.array([[1, 1, 0, 0, 0, 0]], "float32")
    mask = test_case.to_numpy(
        compute_span_mask(short, 4, start_probability=0.0, min_spans=1, seed=1)
    )
    np.testing.assert_array_equal(mask, short)


def test_min_spans_leaves_enough_spans_alone():
    padding_mask = np.ones((8, 40), "float32")
    keras.utils.set_random_seed(0)
    plain = compute_span_mask(padding_mask, 3, start_probability=0.5, seed=4)
    with_min = compute_span_mask(padding_mask, 3, start_probability=0.5, min_spans=2, seed=4)
    np.testing.assert_array_equal(test_case.to_numpy(plain), test_case.to_numpy(with_min))


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="exactly one"):
        compute_span_mask(np.ones((1, 4)), 2, start_probability=0.1, mask_rate=0.1)
    with pytest.raises(ValueError, match="exactly one"):
        SpanMasking(span_length=2)
    with pytest.raises(ValueError, match="mode"):
        MaskEmbedding(mode="zeros")


def jit(function):
    backend = test_case.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, jit_compile=True)
    return function  # torch runs eagerly: torch.compile is too slow for the suite


def test_span_masking_layer_under_jit(seeded):
    layer = SpanMasking(span_length=3, start_probability=0.2, min_spans=1, seed=2)
    padding_mask = test_case.random_padding_mask(seeded, 4, 30, min_length=5)

    def step(seed_state, padding_mask):
        outputs, (new_state,) = layer.stateless_call([], [seed_state], padding_mask)
        return outputs, new_state

    step = jit(step)
    state = layer.seed_generator.state.value
    first, state = step(state, padding_mask)
    second, state = step(state, padding_mask)
    first, second = test_case.to_numpy(first), test_case.to_numpy(second)
    for mask in (first, second):
        assert np.all(mask[padding_mask == 0] == 0)
        assert np.all(mask.sum(1) >= 3)
    assert not np.array_equal(first, second)  # the seed state advanced


def test_span_masking_serialization():
    layer = SpanMasking(span_length=5, mask_rate=0.15, min_spans=1, seed=3)
    clone = SpanMasking.from_config(layer.get_config())
    padding_mask = np.ones((2, 30), "float32")
    np.testing.assert_array_equal(
        test_case.to_numpy(layer(padding_mask)), test_case.to_numpy(clone(padding_mask))
    )


def test_learned_mask_embedding_known_answer(seeded):
    inputs = seeded.normal(size=(2, 5, 3)).astype("float32")
    mask = np.array([[0, 1, 1, 0, 0], [1, 0, 0, 0, 1]], "float32")
    layer = MaskEmbedding()
    outputs = test_case.to_numpy(layer(inputs, mask))
    vector = test_case.to_numpy(layer.mask_vector)
    expected = np.where(mask[:, :, None] > 0, vector, inputs)
    np.testing.assert_array_equal(outputs, expected)
    assert len(layer.trainable_weights) == 1 and np.all((vector >= 0) & (vector < 1))


def test_noise_mask_embedding(seeded):
    inputs = seeded.normal(size=(4, 200, 16)).astype("float32")
    mask = (seeded.random((4, 200)) < 0.5).astype("float32")
    layer = MaskEmbedding(mode="noise", noise_stddev=0.1, seed=1)
    outputs = test_case.to_numpy(layer(inputs, mask))
    np.testing.assert_array_equal(outputs[mask == 0], inputs[mask == 0])
    noise = outputs[mask > 0]
    assert abs(noise.std() - 0.1) < 0.005 and abs(noise.mean()) < 0.005
    assert layer.trainable_weights == []


def build_mask_embedding(inputs):
    layer = MaskEmbedding()
    layer(inputs["inputs"], inputs["masked_frames"])

    def call_fn(batch):
        return layer(batch["inputs"], batch["masked_frames"])

    return layer, call_fn


def mask_embedding_inputs(rng):
    return {
        "inputs": rng.normal(size=(2, 6, 4)).astype("float32"),
        "masked_frames": (rng.random((2, 6)) < 0.5).astype("float32"),
    }


def test_mask_embedding_serialization_and_parity(seeded, parity_worker):
    inputs = mask_embedding_inputs(seeded)
    layer, _ = build_mask_embedding(inputs)
    test_case.assert_serialization_roundtrip(
        layer, lambda obj: lambda b: obj(b["inputs"], b["masked_frames"]), inputs
    )
    test_case.assert_backend_parity(
        "tests.layers.test_masking:build_mask_embedding", inputs, parity_worker=parity_worker
    )
    test_case.assert_mixed_precision_finite(
        "tests.layers.test_masking:build_mask_embedding", inputs
    )


@pytest.mark.parametrize("length", [2, 13, 30])
def test_span_mask_with_lengths_known_only_at_run_time(seeded, length):
    """A step traced without the time length (TensorFlow, several buckets)
    masks whole spans of real frames only, at least min_spans of them, also
    when the batch is shorter than min_spans. (XLA draws other random
    numbers than eager TensorFlow, so the masks themselves differ.)"""
    padding_mask = test_case.random_padding_mask(seeded, 8, length)

    def span_mask(padding_mask):
        return compute_span_mask(padding_mask, 4, start_probability=0.1, min_spans=3, seed=7)

    mask = test_case.call_with_unknown_lengths(span_mask, padding_mask)
    assert mask.shape == padding_mask.shape and np.all(mask[padding_mask == 0] == 0)
    for row, real in zip(mask, padding_mask.sum(1).astype(int)):
        edges = np.diff(np.concatenate([[0], row, [0]]))
        runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        assert len(runs) and np.all(runs >= min(4, real)), (row, real)


def test_span_length_must_be_positive():
    with pytest.raises(ValueError, match="span_length must be at least 1, got 0"):
        compute_span_mask(np.ones((1, 4)), 0, start_probability=0.1)
