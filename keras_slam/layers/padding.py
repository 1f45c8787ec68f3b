"""Zeroing padded frames by a select, so NaN/inf there never reach real outputs."""

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
