"""Utterance classification (language ID, intent) on a SLAM backbone or SpeechEncoder.

    speech_features (B, T, F), speech_padding_mask (B, T)
      -> PerBinNormalization "feature_statistics"  (`feature_statistics` only)
      -> backbone.speech_tower            (both backbones have one)
      -> backbone.shared_encoder          (SLAMBackbone, `use_shared_encoder`)
         (`pool_encoder_input`: ++ its input, the speech tower's (B, T', D))
      -> ClassificationHead "classification_head" -> logits (B, C)
         (`feature_statistics`: the head also reads the (B, 2F) statistics)

`feature_statistics=True` reads features *without* the front end's
per-utterance normalisation (`without_per_bin_normalization`), normalises
them in the model as the front end would (so the encoder sees what it was
pre-trained on) and gives the head the per-utterance mean and std of each
feature, which the normalisation removes: voice, channel and spectral
envelope, what the recipes' log-mel language ID reference reads.

Training, loss, labels and the linear-probe mode: see
`keras_slam.models.sequence_classifier`.
"""

import keras
import numpy as np

from keras_slam.layers.log_mel import LogMelSpectrogram, PerBinNormalization
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.sequence_classifier import SequenceClassifier, with_encoder_input
from keras_slam.models.speech_recognizer import FEATURE_KEYS, encode_speech


@keras.saving.register_keras_serializable(package="keras_slam")
class SpeechClassifier(SequenceClassifier):
    """Speech classifier: encoder -> pooled head (module docstring).

    Args:
        backbone: `SLAMBackbone` or `SpeechEncoder`.
        num_classes: C; default: `len(class_names)`, else the head's.
        class_names: C names (saved with the task preset; `predict_labels`
            returns them).
        preprocessor: `SpeechRecognizerPreprocessor` (front end) for raw
            waveforms in `predict_labels`.
        pooling: "mean" or "attention" (`keras_slam.layers.pooling`).
        use_shared_encoder: run the SLAM shared encoder after the speech
            tower (default: whenever the backbone has one).
        dropout: before the head's dense layer.
        freeze_encoder: linear probe: `backbone.trainable = False`, the
            encoder in inference mode also in `fit`.
        pool_encoder_input: the head pools the shared encoder's input (the
            speech tower's output) beside its output (`with_encoder_input`).
        feature_statistics: the features come without per-utterance
            normalisation; the model normalises them and the head also
            reads their per-utterance mean and std (module docstring).
        head: a `ClassificationHead` to use (and share), e.g. a
            `TextClassifier`'s; `pooling` and `dropout` are then its own.

    Inputs: {"speech_features" (B, T, F), "speech_padding_mask" (B, T)}.
    Outputs: logits (B, C). Labels for `fit`: int (B,), -1 = left out.

    Example:
    ```python
    classifier = SpeechClassifier.from_preset(
        "runs/x/pretrained", class_names=["de", "en", "es", "it"], freeze_encoder=True
    )
    classifier.compile(learning_rate=1e-3)
    classifier.fit(batches.map(lambda b: split_classification_batch(b, FEATURE_KEYS)))
    labels, probabilities = classifier.predict_labels([waveform])
    ```
    """

    feature_keys = FEATURE_KEYS

    def __init__(
        self,
        backbone,
        num_classes=None,
        class_names=None,
        preprocessor=None,
        pooling="mean",
        use_shared_encoder=None,
        dropout=0.1,
        freeze_encoder=False,
        pool_encoder_input=False,
        feature_statistics=False,
        head=None,
        **kwargs,
    ):
        converter = getattr(preprocessor, "audio_converter", None)
        if feature_statistics and getattr(converter, "normalize_per_bin", False):
            raise ValueError(
                "feature_statistics=True reads features without per-utterance normalisation: "
                "pass `preprocessor=without_per_bin_normalization(preprocessor)`"
            )
        has_shared = hasattr(backbone, "shared_encoder")
        if use_shared_encoder is None:
            use_shared_encoder = has_shared
        if use_shared_encoder and not has_shared:
            raise ValueError(f"{type(backbone).__name__} has no shared encoder")
        if pool_encoder_input and not use_shared_encoder:
            raise ValueError("pool_encoder_input needs the shared encoder (use_shared_encoder)")

        # === Layers ===
        num_classes, class_names = self._set_layers(
            backbone,
            preprocessor,
            num_classes,
            class_names,
            head,
            pooling,
            dropout,
            freeze_encoder,
            extra_features=2 * backbone.feature_dim if feature_statistics else 0,
        )
        self.feature_normalization = (
            PerBinNormalization(name="feature_statistics") if feature_statistics else None
        )

        # === Functional Model ===
        speech_features = keras.Input((None, backbone.feature_dim), name="speech_features")
        speech_padding_mask = keras.Input((None,), name="speech_padding_mask")
        features, statistics = speech_features, None
        if feature_statistics:
            features, statistics = self.feature_normalization(speech_features, speech_padding_mask)

        def encode(features, mask, training=None):
            if not pool_encoder_input:
                return encode_speech(backbone, features, mask, use_shared_encoder, training)
            tower, frame_mask = encode_speech(backbone, features, mask, False, training)
            output = backbone.shared_encoder(tower, frame_mask, training=training)
            return with_encoder_input(tower, output, True), frame_mask

        sequence, frame_mask = self._encode(encode, features, speech_padding_mask)
        logits = self.head(sequence, frame_mask, statistics)
        super().__init__(
            inputs={"speech_features": speech_features, "speech_padding_mask": speech_padding_mask},
            outputs=logits,
            **kwargs,
        )

        # === Config ===
        self._set_classifier_config(num_classes, class_names, freeze_encoder)
        self.use_shared_encoder = use_shared_encoder
        self.feature_statistics = feature_statistics
        self.pool_encoder_input = pool_encoder_input

    @classmethod
    def from_text_classifier(cls, text_classifier, **kwargs):
        """A speech classifier sharing a `TextClassifier`'s backbone and head
        (the same variables): cross-modal zero-shot transfer, a head trained
        on text classifying speech through the shared encoder.

        Args:
            text_classifier: a `TextClassifier` (SLAM backbone).
            **kwargs: other `SpeechClassifier` arguments (e.g. `preprocessor`).
        """
        return cls(
            text_classifier.backbone,
            class_names=text_classifier.class_names,
            num_classes=text_classifier.num_classes,
            use_shared_encoder=True,
            freeze_encoder=text_classifier.freeze_encoder,
            pool_encoder_input=text_classifier.pool_encoder_input,
            head=text_classifier.head,
            **kwargs,
        )

    def model_inputs(self, inputs):
        """A feature batch dict, or raw waveforms (a list of 1-D arrays or a
        (B, S) array at the front end's rate, through the preprocessor).

        Raises:
            ValueError: no preprocessor, or a waveform that is not finite or
                too short for one feature frame (naming the item).
        """
        if isinstance(inputs, dict):
            return super().model_inputs(inputs)
        if self.preprocessor is None:
            raise ValueError(
                "this SpeechClassifier has no preprocessor for raw waveforms: pass "
                "`preprocessor=SpeechRecognizerPreprocessor()` or feature batches"
            )
        waveforms, audible = self.preprocessor.prepare_waveforms(inputs, caller="predict_labels")
        front_end = self.preprocessor.audio_converter
        for index, waveform in enumerate(waveforms):
            if index not in audible:
                raise ValueError(
                    f"audio item {index}: {len(waveform)} samples, too short for one feature "
                    f"frame of the front end ({front_end.frame_length} samples at "
                    f"{front_end.sample_rate} Hz); nothing to classify"
                )
        features = self.preprocessor(waveforms)
        return {key: np.asarray(features[key]) for key in self.feature_keys}

    def get_config(self):
        config = super().get_config()
        config["use_shared_encoder"] = self.use_shared_encoder
        config["feature_statistics"] = self.feature_statistics
        config["pool_encoder_input"] = self.pool_encoder_input
        return config


def without_per_bin_normalization(preprocessor):
    """A copy of a `SpeechRecognizerPreprocessor` whose log-mel front end
    does not normalise per utterance (for `feature_statistics=True`)."""
    converter = preprocessor.audio_converter
    config = dict(converter.get_config(), normalize_per_bin=False)
    return SpeechRecognizerPreprocessor(
        audio_converter=LogMelSpectrogram.from_config(config),
        tokenizer=preprocessor.tokenizer,
        pad_to_multiple=preprocessor.pad_to_multiple,
    )
