"""SpecAugment frequency and time masking, aware of padded frames."""

import keras
from keras import ops

from keras_slam.layers.padding import masked_mean


@keras.saving.register_keras_serializable(package="keras_slam")
class SpecAugment(keras.layers.Layer):
    """Masks random mel-bin bands and time spans of real frames while training.

    Each utterance gets `num_freq_masks` bands of width ~ U{0..freq_mask_width}
    bins and `num_time_masks` spans of width ~ U{0..floor(time_mask_ratio * L)}
    frames, L being its number of real frames (Park et al. 2019 "adaptive"
    time masks; the Conformer paper uses 2 x F=27 and 10 x pS=0.05, the
    defaults). Spans start uniformly where they fit inside the real frames, so
    padding is never masked and never shifts a mask. Masked values become 0
    (`mask_value="zero"`, natural for per-bin normalised features) or the
    utterance's per-bin mean over its real frames (`mask_value="mean"`).
    Identity unless `training=True`. Random draws use `keras.random` with a
    `SeedGenerator`, so the layer runs under jit on every backend.

    Args:
        num_freq_masks: frequency bands per utterance.
        freq_mask_width: largest band width F, in bins.
        num_time_masks: time spans per utterance.
        time_mask_ratio: largest span width pS as a fraction of L.
        mask_value: "zero" or "mean".
        seed: int seed of the layer's `SeedGenerator`, or None.

    Call args:
        features: (B, T, F) features.
        padding_mask: (B, T), 1 for real frames; default all real.
        training: masks only when True.

    Returns:
        (B, T, F) features, masked inside real frames only.
    """

    def __init__(
        self,
        num_freq_masks=2,
        freq_mask_width=27,
        num_time_masks=10,
        time_mask_ratio=0.05,
        mask_value="zero",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mask_value not in ("zero", "mean"):
            raise ValueError(f"mask_value must be 'zero' or 'mean', got {mask_value!r}")
        if not 0.0 <= time_mask_ratio <= 1.0:
            raise ValueError(f"time_mask_ratio must be in [0, 1], got {time_mask_ratio}")
        self.num_freq_masks = num_freq_masks
        self.freq_mask_width = freq_mask_width
        self.num_time_masks = num_time_masks
        self.time_mask_ratio = time_mask_ratio
        self.mask_value = mask_value
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _random_spans(self, batch_size, num_masks, max_width, limit, size):
        """(B, size) bool: union of `num_masks` random spans per row.

        Span widths ~ U{0..max_width}, starts ~ U{0..limit - width}, so every
        span lies in [0, limit). `max_width` and `limit` are (B, 1) floats.
        """
        shape = (batch_size, num_masks)
        width = ops.floor(keras.random.uniform(shape, seed=self.seed_generator) * (max_width + 1.0))
        start = ops.floor(
            keras.random.uniform(shape, seed=self.seed_generator) * (limit - width + 1.0)
        )
        position = ops.cast(ops.arange(size), "float32")[None, None, :]
        inside = ops.logical_and(
            position >= start[..., None], position < (start + width)[..., None]
        )
        return ops.any(inside, axis=1)

    def call(self, features, padding_mask=None, training=None):
        if not training or (self.num_freq_masks == 0 and self.num_time_masks == 0):
            return features
        batch_size, num_frames, num_bins = ops.shape(features)
        if padding_mask is None:
            padding_mask = ops.ones((batch_size, num_frames))
        real_frame = ops.cast(padding_mask, "float32")
        lengths = ops.sum(real_frame, axis=1, keepdims=True)

        masked = ops.zeros((batch_size, num_frames, num_bins), "bool")
        if self.num_freq_masks:
            freq_masked = self._random_spans(
                batch_size,
                self.num_freq_masks,
                ops.full((batch_size, 1), float(min(self.freq_mask_width, num_bins))),
                ops.full((batch_size, 1), float(num_bins)),
                num_bins,
            )
            masked = ops.logical_or(masked, freq_masked[:, None, :])
        if self.num_time_masks:
            time_masked = self._random_spans(
                batch_size,
                self.num_time_masks,
                ops.floor(self.time_mask_ratio * lengths),
                lengths,
                num_frames,
            )
            masked = ops.logical_or(masked, time_masked[:, :, None])
        # Frequency bands cover all frames; padded frames stay as they are.
        masked = ops.logical_and(masked, (real_frame > 0)[..., None])

        if self.mask_value == "zero":
            fill = ops.zeros_like(features)
        else:
            fill = masked_mean(features, real_frame, axis=1, keepdims=True)
        return ops.where(masked, fill, features)

    def compute_output_shape(self, features_shape, padding_mask_shape=None):
        return features_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_freq_masks=self.num_freq_masks,
            freq_mask_width=self.freq_mask_width,
            num_time_masks=self.num_time_masks,
            time_mask_ratio=self.time_mask_ratio,
            mask_value=self.mask_value,
            seed=self.seed,
        )
        return config
