"""Speech encoder: front end -> Conformer stack -> optional projection.

`SpeechTower` is the layer (SLAM's speech tower; w2v-BERT's contrastive
module), `SpeechEncoder` the `keras_hub` Backbone around it (w2v-BERT 2.0,
fine-tuning encoders). Two front ends:

- "conv_subsampling" (SLAM, w2v-BERT): 80-dim log-mel -> `ConvSubsampling`
  (two stride-2 convs, 4x fewer frames) -> hidden_dim.
- "stacked_features" (w2v-BERT 2.0 / Hugging Face `Wav2Vec2Bert`): the
  features arrive already stacked two frames at a time (160 dims at 20 ms);
  `feature_layer_norm` -> `feature_projection` (Linear 160 -> D), no
  subsampling.

The tower exposes its two halves, `subsample` (front end, the frames that
w2v-BERT masks and quantizes) and `encode` (Conformer stack + projection,
from possibly-masked frames), because pre-training needs the frames in
between.
"""

import keras
import keras_hub

from keras_slam.layers.conformer import ConformerConfig, ConformerEncoder
from keras_slam.layers.conv_subsampling import ConvSubsampling
from keras_slam.layers.conv_subsampling import output_length as subsampled_length
from keras_slam.layers.flat_dense import FlatDense
from keras_slam.layers.padding import zero_padded_frames
from keras_slam.models.layout_map import LayoutMapMixin
from keras_slam.utils.preset_utils import PresetMixin

FRONT_ENDS = ("conv_subsampling", "stacked_features")


@keras.saving.register_keras_serializable(package="keras_slam")
class SpeechTower(keras.layers.Layer):
    """Front end -> `num_layers` Conformer blocks -> optional projection.

    Args:
        hidden_dim: Conformer width D.
        num_layers: Conformer blocks.
        conformer: `ConformerConfig` (or its dict) of every block; its
            `dropout` and `layer_norm_epsilon` also serve the front end.
        feature_dim: F, size of an input feature frame (80 log-mel; 160 for
            stacked features).
        front_end: "conv_subsampling" or "stacked_features" (see module).
        subsampling_filters: channels of the `ConvSubsampling` convs.
        projection_dim: size of the final linear projection, or None for
            none (w2v-BERT 2.0).

    Call args:
        features: (B, T, F).
        padding_mask: (B, T), 1 = real frame.
        training: enables dropout.
    Returns:
        (outputs (B, T', projection_dim or D), frame_mask (B, T')); T' = T
        for stacked features, the subsampled length otherwise.
    """

    def __init__(
        self,
        hidden_dim,
        num_layers,
        conformer,
        feature_dim=80,
        front_end="conv_subsampling",
        subsampling_filters=128,
        projection_dim=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if front_end not in FRONT_ENDS:
            raise ValueError(f"front_end must be one of {FRONT_ENDS}, got {front_end!r}")
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.conformer = ConformerConfig.coerce(conformer)
        self.feature_dim = feature_dim
        self.front_end = front_end
        self.subsampling_filters = subsampling_filters
        self.projection_dim = projection_dim
        policy = self.dtype_policy
        if front_end == "conv_subsampling":
            self.subsampling = ConvSubsampling(
                hidden_dim, filters=subsampling_filters, dtype=policy, name="subsampling"
            )
        else:
            self.feature_layer_norm = keras.layers.LayerNormalization(
                epsilon=self.conformer.layer_norm_epsilon,
                dtype=policy,
                name="feature_layer_norm",
            )
            self.feature_projection = FlatDense(hidden_dim, dtype=policy, name="feature_projection")
        self.front_end_dropout = keras.layers.Dropout(
            self.conformer.dropout, dtype=policy, name="front_end_dropout"
        )
        self.encoder = ConformerEncoder(
            num_layers, hidden_dim, self.conformer, dtype=policy, name="encoder"
        )
        self.output_projection = None
        if projection_dim is not None:
            self.output_projection = FlatDense(
                projection_dim, dtype=policy, name="output_projection"
            )

    def build(self, features_shape, padding_mask_shape=None):
        frames_shape = (features_shape[0], None, self.hidden_dim)
        if self.front_end == "conv_subsampling":
            self.subsampling.build(features_shape)
        else:
            self.feature_layer_norm.build(features_shape)
            self.feature_projection.build(features_shape)
        self.encoder.build(frames_shape)
        if self.output_projection is not None:
            self.output_projection.build(frames_shape)
        self.built = True

    def subsample(self, features, padding_mask, training=False):
        """Front end: (B, T, F), (B, T) -> frames (B, T', D), mask (B, T')."""
        if self.front_end == "conv_subsampling":
            frames, padding_mask = self.subsampling(features, padding_mask)
        else:
            frames = self.feature_projection(self.feature_layer_norm(features))
        frames = self.front_end_dropout(frames, training=training)
        return zero_padded_frames(frames, padding_mask), padding_mask

    def encode(self, frames, padding_mask, training=False):
        """Conformer stack + projection over (possibly masked) frames."""
        outputs = self.encoder(frames, padding_mask, training=training)
        if self.output_projection is not None:
            outputs = self.output_projection(outputs)
        return outputs

    def call(self, features, padding_mask, training=False):
        frames, padding_mask = self.subsample(features, padding_mask, training)
        return self.encode(frames, padding_mask, training), padding_mask

    def output_length(self, length):
        """Frames out for `length` frames in (int or int tensor)."""
        if self.front_end == "conv_subsampling":
            return subsampled_length(length)
        return length

    def compute_output_shape(self, features_shape, padding_mask_shape=None):
        length = features_shape[1]
        if length is not None:
            length = self.output_length(length)
        dim = self.projection_dim or self.hidden_dim
        return (features_shape[0], length, dim), (features_shape[0], length)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            conformer=self.conformer.to_dict(),
            feature_dim=self.feature_dim,
            front_end=self.front_end,
            subsampling_filters=self.subsampling_filters,
            projection_dim=self.projection_dim,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_slam")
class SpeechEncoder(LayoutMapMixin, PresetMixin, keras_hub.models.Backbone):
    """A `SpeechTower` as a keras-hub Backbone (w2v-BERT 2.0, ASR encoders).

    Args: as `SpeechTower`, plus `dtype`.

    Inputs: {"speech_features" (B, T, F), "speech_padding_mask" (B, T)}.
    Outputs: {"sequence_output" (B, T', D'), "padding_mask" (B, T')}.

    Example (the w2v-BERT 2.0 layout of the "w2v_bert_2_0" preset):
    ```python
    encoder = SpeechEncoder.from_preset("w2v_bert_2_0", load_weights=False)
    ```
    """

    def __init__(
        self,
        hidden_dim,
        num_layers,
        conformer,
        feature_dim=80,
        front_end="conv_subsampling",
        subsampling_filters=128,
        projection_dim=None,
        dtype=None,
        **kwargs,
    ):
        # === Layers ===
        self.speech_tower = SpeechTower(
            hidden_dim,
            num_layers,
            conformer,
            feature_dim=feature_dim,
            front_end=front_end,
            subsampling_filters=subsampling_filters,
            projection_dim=projection_dim,
            dtype=dtype,
            name="speech_tower",
        )

        # === Functional Model ===
        speech_features = keras.Input((None, feature_dim), name="speech_features")
        speech_padding_mask = keras.Input((None,), name="speech_padding_mask")
        sequence_output, padding_mask = self.speech_tower(speech_features, speech_padding_mask)
        super().__init__(
            inputs={
                "speech_features": speech_features,
                "speech_padding_mask": speech_padding_mask,
            },
            outputs={"sequence_output": sequence_output, "padding_mask": padding_mask},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.conformer = self.speech_tower.conformer
        self.feature_dim = feature_dim
        self.front_end = front_end
        self.subsampling_filters = subsampling_filters
        self.projection_dim = projection_dim

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            conformer=self.conformer.to_dict(),
            feature_dim=self.feature_dim,
            front_end=self.front_end,
            subsampling_filters=self.subsampling_filters,
            projection_dim=self.projection_dim,
        )
        return config
