"""4x time subsampling of speech features by two strided 2D convolutions (SLAM)."""

import keras
from keras import ops

from keras_slam.layers.flat_dense import FlatDense
from keras_slam.layers.initializers import clone_initializer
from keras_slam.layers.padding import zero_padded_frames

_STRIDE = 2
_NUM_CONVS = 2


def _conv_output_length(length):
    """One 3x3 stride-2 conv, one zero each side: floor((n + 2 - 3) / 2) + 1."""
    return (length + 1) // _STRIDE


def output_length(length):
    """Frames after `ConvSubsampling`: `ceil(ceil(length / 2) / 2)`.

    Works on Python ints, numpy arrays and backend tensors of integer
    lengths (the frequency axis shrinks the same way).
    """
    for _ in range(_NUM_CONVS):
        length = _conv_output_length(length)
    return length


@keras.saving.register_keras_serializable(package="keras_slam")
class ConvSubsampling(keras.layers.Layer):
    """Two 3x3 stride-2 Conv2D + ReLU over (time, frequency), then Dense.

    Both axes are padded with one zero on each side (a symmetric "same"
    padding whose alignment does not depend on the batch's length, unlike
    TensorFlow's "SAME"), and frames past each item's length are zeroed
    (by a select, so NaN/inf there cannot leak) before every convolution, so real outputs never see padding and a padded
    batch gives exactly the outputs of each item alone. Output frame t covers
    input frames [4t - 3, 4t + 3].

    Args:
        output_dim: width D of the projected frames.
        filters: channels of both convolutions.

    Call args:
        features: (B, T, F).
        padding_mask: (B, T), 1 = real frame.
    Returns:
        (x, padding_mask): (B, T', D) zero at padded frames, and the (B, T')
        mask, T' = `output_length(T)`.
    """

    def __init__(self, output_dim, filters=128, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.filters = filters
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.convs = [
            keras.layers.Conv2D(
                filters,
                3,
                strides=_STRIDE,
                padding="valid",
                activation="relu",
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy,
                name=f"conv_{i}",
            )
            for i in range(_NUM_CONVS)
        ]
        self.projection = FlatDense(
            output_dim,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, input_shape):
        batch, _, num_features = input_shape
        channels = 1
        for conv in self.convs:
            conv.build((batch, None, num_features + 2, channels))  # + the zero padding
            num_features, channels = _conv_output_length(num_features), self.filters
        self.projection.build((batch, None, num_features * self.filters))
        self.built = True

    def call(self, features, padding_mask):
        x = ops.cast(features, self.compute_dtype)[..., None]
        mask = ops.cast(padding_mask, "float32")
        for conv in self.convs:
            x = zero_padded_frames(x, mask)
            x = conv(ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))))
            # Output frame t is centred on input frame 2t: real iff 2t is.
            mask = mask[:, ::_STRIDE]
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, length, x.shape[2] * self.filters))
        return zero_padded_frames(self.projection(x), mask), mask

    def compute_output_shape(self, features_shape, padding_mask_shape=None):
        batch, length, _ = features_shape
        length = None if length is None else output_length(length)
        return (batch, length, self.output_dim), (batch, length)

    def get_config(self):
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            filters=self.filters,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
