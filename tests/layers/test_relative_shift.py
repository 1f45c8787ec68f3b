"""Gather-free relative-position logits (`relative_shift`, `clipped_relative_logits`)."""

import numpy as np
import pytest

from keras_slam.layers.attention import (
    RelativePositionAttention,
    clipped_relative_logits,
    relative_shift,
)
from tests import test_case


@pytest.mark.parametrize("length", [1, 2, 7])
def test_relative_shift_reads_each_query_s_offsets(seeded, length):
    per_offset = seeded.normal(size=(2, 3, length, 2 * length - 1)).astype("float32")
    query, key = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    expected = per_offset[..., query, key - query + length - 1]
    np.testing.assert_array_equal(test_case.to_numpy(relative_shift(per_offset)), expected)


@pytest.mark.parametrize(
    "length, left, right", [(1, 4, 2), (3, 4, 2), (20, 4, 2), (5, 64, 8), (12, 0, 0), (9, 0, 3)]
)
def test_clipped_logits_match_the_clipped_distance_index(seeded, length, left, right):
    """Including T - 1 below either context (the clipping never reached)."""
    per_distance = seeded.normal(size=(2, 3, length, left + right + 1)).astype("float32")
    query, key = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    expected = per_distance[..., query, np.clip(key - query, -left, right) + left]
    actual = test_case.to_numpy(clipped_relative_logits(per_distance, left))
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("length, start, rows", [(7, 0, 3), (7, 3, 3), (7, 6, 1), (20, 13, 7)])
def test_relative_shift_of_a_query_chunk(seeded, length, start, rows):
    """Rows `start, ..., start + rows - 1` alone give those rows of the whole."""
    per_offset = seeded.normal(size=(2, 3, length, 2 * length - 1)).astype("float32")
    whole = test_case.to_numpy(relative_shift(per_offset))
    chunk = relative_shift(per_offset[:, :, start : start + rows], query_start=start)
    np.testing.assert_array_equal(test_case.to_numpy(chunk), whole[:, :, start : start + rows])


@pytest.mark.parametrize(
    "length, left, right, start, rows",
    [(20, 4, 2, 0, 7), (20, 4, 2, 7, 7), (20, 4, 2, 14, 6), (9, 0, 3, 8, 1), (5, 64, 8, 2, 2)],
)
def test_clipped_logits_of_a_query_chunk(seeded, length, left, right, start, rows):
    """Against the clipped distance index, for query rows starting past the left context too."""
    per_distance = seeded.normal(size=(2, 3, rows, left + right + 1)).astype("float32")
    query, key = np.meshgrid(np.arange(start, start + rows), np.arange(length), indexing="ij")
    expected = per_distance[..., query - start, np.clip(key - query, -left, right) + left]
    actual = clipped_relative_logits(per_distance, left, key_length=length, query_start=start)
    np.testing.assert_array_equal(test_case.to_numpy(actual), expected)


@pytest.mark.slow(backend="jax")  # inspects XLA's program: JAX only
@pytest.mark.parametrize("position_encoding", ["relative_key", "relative_sinusoidal"])
def test_training_step_has_no_gather_or_scatter(position_encoding):
    """A (T, T) gather's scatter-add gradient runs serially on CPU; the
    relative shift keeps the step to pads, slices and reshapes."""
    import jax

    layer = RelativePositionAttention(16, 2, position_encoding, left_context=4, right_context=2)
    x, padding_mask = np.ones((2, 12, 16), "float32"), np.ones((2, 12), "float32")
    layer.build(x.shape)
    weights = [variable.value for variable in layer.trainable_variables]

    def loss(weights, x):
        outputs, _ = layer.stateless_call(weights, [], x, padding_mask, training=True)
        return (outputs**2).mean()

    program = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(weights, x).as_text()
    assert "dot_general" in program
    assert "gather" not in program and "scatter" not in program
