"""Sequence pooling and the classification head shared by speech and text.

    sequence (B, T, D), padding_mask (B, T)
      -> SequencePooling ("mean" | "mean_std" | "attention") -> (B, D) or (B, 2D)
      -> ++ utterance features (B, E), optional (`extra_features`)
      -> standardisation (BatchNormalization without scale/offset, optional)
      -> Dropout -> Dense(num_classes) -> logits (B, C)

One head class serves `SpeechClassifier` and `TextClassifier`, so a head
trained on text can classify speech through the shared encoder (cross-modal
zero-shot transfer).
"""

import math

import keras
from keras import ops

from keras_slam.layers.padding import masked_mean, zero_padded_frames

POOLINGS = ("mean", "mean_std", "attention")
# Keeps the gradient of sqrt finite where a feature is constant over an utterance.
STD_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="keras_slam")
class SequencePooling(keras.layers.Layer):
    """Masked mean, mean+std or attention pooling over the real positions.

    "mean": the mean m of the real positions (B, D). "mean_std": [m, s]
    (B, 2D), s = sqrt(mean of (x_t - m)^2 + 1e-5) over the real positions
    (x-vector statistics pooling: how a feature varies within the utterance,
    which a mean over a LayerNorm-ended encoder averages away).
    "attention": a learned query q
    (D,) scores each position, s_t = x_t . q / sqrt(D); the output is
    sum_t softmax(s)_t x_t with the softmax over real positions only (in
    float32). A row without real positions pools to zeros (its std part to
    sqrt(1e-5)).

    Args:
        pooling: "mean", "mean_std" or "attention".

    Call args:
        sequence: (B, T, D).
        padding_mask: (B, T), 1 = real, 0 = pad.
    Returns:
        (B, D), (B, 2D) for "mean_std", in the sequence's dtype.
    """

    def __init__(self, pooling="mean", **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling

    def build(self, sequence_shape, padding_mask_shape=None):
        if self.pooling == "attention":
            self.query = self.add_weight(
                shape=(sequence_shape[-1],), initializer="zeros", name="query"
            )

    def call(self, sequence, padding_mask):
        if self.pooling == "mean":
            return masked_mean(sequence, padding_mask, axis=1)
        if self.pooling == "mean_std":
            # In float32, on zeroed padding (no NaN * 0 in the gradient).
            values = ops.cast(zero_padded_frames(sequence, padding_mask), "float32")
            mean = masked_mean(values, padding_mask, axis=1, keepdims=True)
            variance = masked_mean(ops.square(values - mean), padding_mask, axis=1)
            pooled = ops.concatenate([ops.squeeze(mean, 1), ops.sqrt(variance + STD_EPSILON)], -1)
            return ops.cast(pooled, sequence.dtype)
        real = ops.greater(padding_mask, 0)
        # Selects, so NaN/inf at padded positions never reach the sum.
        sequence = zero_padded_frames(sequence, padding_mask)
        scores = ops.einsum(
            "btd,d->bt", ops.cast(sequence, "float32"), ops.cast(self.query, "float32")
        )
        scores = scores / math.sqrt(sequence.shape[-1])
        scores = ops.where(real, scores, ops.full_like(scores, -1e9))
        weights = ops.where(real, ops.softmax(scores, axis=1), ops.zeros_like(scores))
        pooled = ops.einsum("bt,btd->bd", weights, ops.cast(sequence, "float32"))
        return ops.cast(pooled, sequence.dtype)

    def compute_output_shape(self, sequence_shape, padding_mask_shape=None):
        dim = sequence_shape[-1]
        return (sequence_shape[0], 2 * dim if self.pooling == "mean_std" and dim else dim)

    def get_config(self):
        config = super().get_config()
        config["pooling"] = self.pooling
        return config


@keras.saving.register_keras_serializable(package="keras_slam")
class ClassificationHead(keras.layers.Layer):
    """`SequencePooling` -> standardisation -> dropout -> Dense(num_classes).

    Why standardise (as MAE's linear probe does): every Conformer block ends
    in a LayerNorm, so the pooled vectors of all utterances share a large
    common part and differ by little (measured on the tiny SLAM encoder:
    per-feature mean 0.67-0.73, spread between languages 0.03). A dense
    layer trained at ~1e-3 for a few hundred steps cannot grow weights large
    enough to use such differences and learns the class prior. Batch
    standardisation (mean 0, variance 1 per feature over the batch's real
    rows in training, moving statistics at inference) makes them O(1).
    Momentum 0.9 so that the moving statistics have caught up after the few
    hundred steps of a tiny run (0.99 would still weigh the initial 0/1).

    Args:
        num_classes: C.
        pooling: "mean", "mean_std" or "attention" (see `SequencePooling`).
        dropout: rate before the dense layer.
        standardize: standardise the pooled features (see above).
        extra_features: E, the size of an utterance vector appended to the
            pooled one before standardisation (e.g. `PerBinNormalization`'s
            statistics); 0: none.

    Call args:
        sequence: (B, T, D) encoder output.
        padding_mask: (B, T), 1 = real, 0 = pad.
        extra: (B, E) when `extra_features`, else None.
        training: enables dropout.
    Returns:
        logits (B, C).
    """

    def __init__(
        self,
        num_classes,
        pooling="mean",
        dropout=0.0,
        standardize=True,
        extra_features=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.extra_features = extra_features
        self.pooling = pooling
        self.dropout = dropout
        self.standardize = standardize
        self.sequence_pooling = SequencePooling(
            pooling, dtype=self.dtype_policy, name="sequence_pooling"
        )
        self.standardization = None
        if standardize:
            self.standardization = keras.layers.BatchNormalization(
                momentum=0.9,
                center=False,
                scale=False,
                dtype=self.dtype_policy,
                name="standardization",
            )
        self.dropout_layer = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="head_dropout"
        )
        self.dense = keras.layers.Dense(num_classes, dtype=self.dtype_policy, name="logits")

    def build(self, sequence_shape, padding_mask_shape=None, extra_shape=None):
        batch, pooled = self.sequence_pooling.compute_output_shape(sequence_shape)
        pooled_shape = (batch, pooled + self.extra_features)
        self.sequence_pooling.build(sequence_shape, padding_mask_shape)
        if self.standardization is not None:
            self.standardization.build(pooled_shape)
        self.dense.build(pooled_shape)

    def call(self, sequence, padding_mask, extra=None, training=None):
        if (extra is None) != (self.extra_features == 0):
            raise ValueError(
                f"{self.name} takes {self.extra_features} extra features per utterance; "
                f"got {None if extra is None else tuple(extra.shape)}"
            )
        pooled = self.sequence_pooling(sequence, padding_mask)
        if extra is not None:
            pooled = ops.concatenate([pooled, ops.cast(extra, pooled.dtype)], axis=-1)
        if self.standardization is not None:
            # Rows without real positions (a pipeline's padded rows) stay out
            # of the batch statistics.
            has_real = ops.any(ops.greater(padding_mask, 0), axis=1)
            pooled = self.standardization(pooled, training=training, mask=has_real)
        return self.dense(self.dropout_layer(pooled, training=training))

    def compute_output_shape(self, sequence_shape, padding_mask_shape=None, extra_shape=None):
        return (sequence_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            pooling=self.pooling,
            dropout=self.dropout,
            standardize=self.standardize,
            extra_features=self.extra_features,
        )
        return config
