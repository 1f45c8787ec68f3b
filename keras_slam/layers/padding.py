"""Padding-mask helpers: zeroing padded frames, means over real positions.

Both select rather than multiply by the mask, so NaN/inf in padding never
reach a real output (0 * NaN = NaN).
"""

from keras import ops


def zero_padded_frames(x, padding_mask):
    """`x` with every frame where `padding_mask` is 0 set to exactly 0.

    A select, not `x * padding_mask`: 0 * NaN = NaN would carry a padded
    frame's NaN/inf into the sums of convolutions, norms and attention.

    Args:
        x: (B, T, ...) frames.
        padding_mask: (B, T), 1 = real frame, 0 = pad.
    Returns:
        (B, T, ...) in x's dtype.
    """
    real = ops.greater(padding_mask, 0)
    for _ in range(len(x.shape) - 2):
        real = ops.expand_dims(real, -1)
    return ops.where(real, x, ops.zeros((), x.dtype))


def masked_mean(values, mask, axis=None, keepdims=False):
    """Mean of `values` over the positions where `mask` is 1; 0 where none.

    Args:
        values: (B, T, ...) tensor (any leading shape that `mask` matches).
        mask: (B, T) (the leading axes of `values`), 1 = counted, 0 = not;
            other non-negative values weigh their positions (a weighted
            mean, sum(mask * values) / sum(mask)).
        axis: axes of `mask` to average over; None: all of them.
        keepdims: keep the averaged axes with size 1.
    Returns:
        `values` reduced over `axis`, in `values`' dtype.
    """
    values = ops.convert_to_tensor(values)
    counted = ops.cast(mask, values.dtype)
    if axis is None:
        axis = tuple(range(len(counted.shape)))
    for _ in range(len(values.shape) - len(counted.shape)):
        counted = ops.expand_dims(counted, -1)
    total = ops.sum(
        ops.where(counted > 0, counted * values, ops.zeros((), values.dtype)),
        axis=axis,
        keepdims=keepdims,
    )
    count = ops.sum(counted, axis=axis, keepdims=keepdims)
    return total / ops.maximum(count, ops.ones((), values.dtype))
