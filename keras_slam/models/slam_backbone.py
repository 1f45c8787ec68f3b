"""SLAM / mSLAM backbone: speech tower, text tower, shared Conformer encoder.

    speech: features -> front end -> N Conformer blocks -> projection
    text:   token embedding * sqrt(D) + sinusoidal positions -> LayerNorm
    shared: M Conformer blocks over speech | text | packed speech ++ text

Packing. The shared encoder sees speech and text together as one sequence
per item: [real speech frames, real text tokens, padding]. The order is
computed from the two masks (a static-shape gather), so the depthwise
convolution and the relative positions of every real position see the same
neighbours whatever the padding of either modality; a plain concatenation
would put speech padding between the two. `unpack_sequences` undoes it.
Text positions count from 0 in the text tower (they are absolute positions
of the text alone); across modalities the shared encoder only uses
relative positions.
"""

import math

import keras
import keras_hub
from keras import ops

from keras_slam.layers.conformer import ConformerConfig, ConformerEncoder
from keras_slam.models.layout_map import LayoutMapMixin
from keras_slam.models.speech_encoder import SpeechTower
from keras_slam.utils.preset_utils import PresetMixin


def _packing_destinations(speech_padding_mask, token_padding_mask):
    """Where each position of speech ++ text goes when packed.

    Returns:
        (destination (B, Ts + Tt) int32, num_real (B, 1) int32).
    """
    mask = ops.concatenate(
        [
            ops.cast(ops.cast(speech_padding_mask, "float32") > 0, "int32"),
            ops.cast(ops.cast(token_padding_mask, "float32") > 0, "int32"),
        ],
        axis=1,
    )
    real_before = ops.cumsum(mask, axis=1) - mask
    num_real = ops.sum(mask, axis=1, keepdims=True)
    positions = ops.arange(ops.shape(mask)[1], dtype="int32")[None, :]
    pads_before = positions - real_before
    return ops.where(mask > 0, real_before, num_real + pads_before), num_real


def _gather_time(x, indices):
    """x[b, indices[b, t]] for (B, T, D) x and (B, T) indices."""
    indices = ops.broadcast_to(indices[:, :, None], ops.shape(x))
    return ops.take_along_axis(x, indices, axis=1)


def pack_sequences(speech, speech_padding_mask, text, token_padding_mask):
    """Packs each item's real speech frames, then its real text tokens.

    Args:
        speech: (B, Ts, D); speech_padding_mask: (B, Ts).
        text: (B, Tt, D); token_padding_mask: (B, Tt).

    Returns:
        (packed (B, Ts + Tt, D), packed_padding_mask (B, Ts + Tt) float32,
        a prefix of ones).
    """
    destination, num_real = _packing_destinations(speech_padding_mask, token_padding_mask)
    source = ops.cast(ops.argsort(destination, axis=1), "int32")
    joint = ops.concatenate([speech, ops.cast(text, speech.dtype)], axis=1)
    packed_padding_mask = ops.cast(ops.arange(ops.shape(joint)[1])[None, :] < num_real, "float32")
    return _gather_time(joint, source), packed_padding_mask


def unpack_sequences(packed, speech_padding_mask, token_padding_mask):
    """Inverse of `pack_sequences`: (B, Ts + Tt, D) -> (B, Ts, D), (B, Tt, D)."""
    destination, _ = _packing_destinations(speech_padding_mask, token_padding_mask)
    joint = _gather_time(packed, destination)
    speech_length = ops.shape(speech_padding_mask)[1]
    return joint[:, :speech_length], joint[:, speech_length:]


@keras.saving.register_keras_serializable(package="keras_slam")
class SpeechTextPacking(keras.layers.Layer):
    """`pack_sequences` as a layer (the functional graph needs one).

    Call args: speech (B, Ts, D), speech_padding_mask (B, Ts), text
        (B, Tt, D), token_padding_mask (B, Tt).
    Returns: (packed (B, Ts + Tt, D), packed_padding_mask (B, Ts + Tt)).
    """

    def call(self, speech, speech_padding_mask, text, token_padding_mask):
        return pack_sequences(speech, speech_padding_mask, text, token_padding_mask)

    def compute_output_shape(
        self, speech_shape, speech_padding_mask_shape, text_shape, token_padding_mask_shape
    ):
        length = None
        if speech_shape[1] is not None and text_shape[1] is not None:
            length = speech_shape[1] + text_shape[1]
        return (speech_shape[0], length, speech_shape[2]), (speech_shape[0], length)


@keras.saving.register_keras_serializable(package="keras_slam")
class SLAMBackbone(LayoutMapMixin, PresetMixin, keras_hub.models.Backbone):
    """SLAM (Bapna et al. 2021) / mSLAM (2022) speech-text encoder.

    Args:
        vocabulary_size: text vocabulary (SLAM 32k SentencePiece, mSLAM 4096
            characters).
        hidden_dim: D of both towers and the shared encoder.
        num_speech_layers: N, Conformer blocks of the speech tower.
        num_shared_layers: M, Conformer blocks of the shared encoder.
        conformer: `ConformerConfig` (or its dict) of every block of both
            stacks; its `dropout` and `layer_norm_epsilon` also serve the
            front end and the text tower.
        feature_dim, speech_front_end, subsampling_filters: the speech
            front end (see `SpeechTower`).
        max_wavelength: of the sinusoidal text positions.
        dtype: dtype policy of every layer.

    Inputs: {"speech_features" (B, T, F), "speech_padding_mask" (B, T),
        "token_ids" (B, L) int, "token_padding_mask" (B, L)}; either
        modality may be fully masked.
    Outputs: {"speech_tower_output" (B, T', D), "speech_padding_mask"
        (B, T') of the subsampled frames, "sequence_output" (B, T' + L, D):
        the shared encoder over the packed speech ++ text,
        "padding_mask" (B, T' + L) its (prefix) mask}. `unpack` splits
        `sequence_output` back into speech and text positions.
    """

    def __init__(
        self,
        vocabulary_size,
        hidden_dim,
        num_speech_layers,
        num_shared_layers,
        conformer,
        feature_dim=80,
        speech_front_end="conv_subsampling",
        subsampling_filters=128,
        max_wavelength=10000,
        dtype=None,
        **kwargs,
    ):
        conformer = ConformerConfig.coerce(conformer)

        # === Layers ===
        self.speech_tower = SpeechTower(
            hidden_dim,
            num_speech_layers,
            conformer,
            feature_dim=feature_dim,
            front_end=speech_front_end,
            subsampling_filters=subsampling_filters,
            projection_dim=hidden_dim,
            dtype=dtype,
            name="speech_tower",
        )
        self.token_embedding = keras_hub.layers.ReversibleEmbedding(
            vocabulary_size,
            hidden_dim,
            tie_weights=True,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=hidden_dim**-0.5),
            dtype=dtype,
            name="token_embedding",
        )
        # float32 on purpose: bfloat16 cannot count past 256 positions.
        self.text_position_embedding = keras_hub.layers.SinePositionEncoding(
            max_wavelength=max_wavelength, dtype="float32", name="text_position_embedding"
        )
        self.text_layer_norm = keras.layers.LayerNormalization(
            epsilon=conformer.layer_norm_epsilon, dtype=dtype, name="text_layer_norm"
        )
        self.text_dropout = keras.layers.Dropout(
            conformer.dropout, dtype=dtype, name="text_dropout"
        )
        self.packing = SpeechTextPacking(dtype=dtype, name="packing")
        self.shared_encoder = ConformerEncoder(
            num_shared_layers, hidden_dim, conformer, dtype=dtype, name="shared_encoder"
        )

        # === Functional Model ===
        speech_features = keras.Input((None, feature_dim), name="speech_features")
        speech_padding_mask = keras.Input((None,), name="speech_padding_mask")
        token_ids = keras.Input((None,), dtype="int32", name="token_ids")
        token_padding_mask = keras.Input((None,), name="token_padding_mask")
        speech_tower_output, frame_padding_mask = self.speech_tower(
            speech_features, speech_padding_mask
        )
        text_embedding = self.embed_text(token_ids, token_padding_mask)
        packed, packed_padding_mask = self.packing(
            speech_tower_output, frame_padding_mask, text_embedding, token_padding_mask
        )
        sequence_output = self.shared_encoder(packed, packed_padding_mask)
        super().__init__(
            inputs={
                "speech_features": speech_features,
                "speech_padding_mask": speech_padding_mask,
                "token_ids": token_ids,
                "token_padding_mask": token_padding_mask,
            },
            outputs={
                "speech_tower_output": speech_tower_output,
                "speech_padding_mask": frame_padding_mask,
                "sequence_output": sequence_output,
                "padding_mask": packed_padding_mask,
            },
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.hidden_dim = hidden_dim
        self.num_speech_layers = num_speech_layers
        self.num_shared_layers = num_shared_layers
        self.conformer = conformer
        self.feature_dim = feature_dim
        self.speech_front_end = speech_front_end
        self.subsampling_filters = subsampling_filters
        self.max_wavelength = max_wavelength

    # Step-by-step pieces, for pre-training and downstream tasks.

    def subsample_speech(self, features, padding_mask, training=False):
        """Front end: (B, T, F), (B, T) -> frames (B, T', D), mask (B, T')."""
        return self.speech_tower.subsample(features, padding_mask, training=training)

    def encode_speech_tower(self, frames, padding_mask, training=False):
        """Speech Conformer blocks + projection over (masked) frames."""
        return self.speech_tower.encode(frames, padding_mask, training=training)

    def embed_text(self, token_ids, token_padding_mask, training=False):
        """Text tower: (B, L) ids -> (B, L, D), zero at padding."""
        embedded = self.token_embedding(token_ids)
        # sqrt(D) so that tokens are not drowned by the unit-scale positions.
        embedded = embedded * ops.cast(math.sqrt(self.token_embedding.output_dim), embedded.dtype)
        positions = self.text_position_embedding(ops.cast(embedded, "float32"))
        embedded = self.text_layer_norm(embedded + ops.cast(positions, embedded.dtype))
        embedded = self.text_dropout(embedded, training=training)
        return embedded * ops.cast(token_padding_mask, embedded.dtype)[:, :, None]

    def encode_shared(self, x, padding_mask, training=False):
        """Shared Conformer blocks over (B, T, D) speech, text or packed."""
        return self.shared_encoder(x, padding_mask, training=training)

    def encode_speech(self, features, padding_mask, training=False):
        """Speech alone through tower and shared encoder.

        Returns:
            {"speech_tower_output", "sequence_output" (B, T', D),
            "padding_mask" (B, T')}.
        """
        frames, frame_mask = self.subsample_speech(features, padding_mask, training)
        tower_output = self.encode_speech_tower(frames, frame_mask, training)
        return {
            "speech_tower_output": tower_output,
            "sequence_output": self.encode_shared(tower_output, frame_mask, training),
            "padding_mask": frame_mask,
        }

    def pack(self, speech, speech_padding_mask, text, token_padding_mask):
        """See `pack_sequences`."""
        return self.packing(speech, speech_padding_mask, text, token_padding_mask)

    def unpack(self, packed, speech_padding_mask, token_padding_mask):
        """See `unpack_sequences`; masks are the (subsampled) input masks."""
        return unpack_sequences(packed, speech_padding_mask, token_padding_mask)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            hidden_dim=self.hidden_dim,
            num_speech_layers=self.num_speech_layers,
            num_shared_layers=self.num_shared_layers,
            conformer=self.conformer.to_dict(),
            feature_dim=self.feature_dim,
            speech_front_end=self.speech_front_end,
            subsampling_filters=self.subsampling_filters,
            max_wavelength=self.max_wavelength,
        )
        return config


def with_text_vocabulary(backbone, vocabulary_size):
    """A copy of a `SLAMBackbone` that reads another text vocabulary.

    The copy has a new, randomly initialised token embedding (V, D) and
    every other weight of `backbone` (speech tower, text positions and
    LayerNorm, shared encoder): a pre-trained encoder under a tokenizer it
    was not pre-trained with (e.g. word pieces instead of characters).
    """
    copy = SLAMBackbone.from_config(dict(backbone.get_config(), vocabulary_size=vocabulary_size))
    for layer in copy.layers:
        if layer.name != "token_embedding":
            layer.set_weights(backbone.get_layer(layer.name).get_weights())
    return copy
