"""Text classification through a SLAM backbone's text path and shared encoder.

    token_ids (B, L), token_padding_mask (B, L)
      -> backbone.embed_text (token embedding, positions, LayerNorm)
      -> backbone.shared_encoder
         (`pool_encoder_input`: ++ its input, the text tower's (B, L, D))
      -> ClassificationHead "classification_head" -> logits (B, C)

The head class is the `SpeechClassifier`'s, so a head trained here on text
classifies speech with `SpeechClassifier.from_text_classifier`. Training,
loss, labels and the linear-probe mode: see
`keras_slam.models.sequence_classifier`.
"""

import keras

from keras_slam.models.sequence_classifier import SequenceClassifier, with_encoder_input
from keras_slam.models.slam_backbone import SLAMBackbone

FEATURE_KEYS = ("token_ids", "token_padding_mask")


@keras.saving.register_keras_serializable(package="keras_slam")
class TextClassifier(SequenceClassifier):
    """Text classifier: text tower -> shared encoder -> pooled head.

    Args:
        backbone: `SLAMBackbone` (a speech-only encoder has no text path).
        num_classes, class_names, pooling, dropout, freeze_encoder,
            pool_encoder_input, head: as `SpeechClassifier`.
        preprocessor: `SpeechRecognizerPreprocessor` with a tokenizer, for
            raw strings in `predict_labels`.

    Inputs: {"token_ids" (B, L) int, "token_padding_mask" (B, L)}.
    Outputs: logits (B, C). Labels for `fit`: int (B,), -1 = left out.

    Example:
    ```python
    classifier = TextClassifier.from_preset("runs/x/pretrained", class_names=intents)
    classifier.compile(learning_rate=1e-3)
    classifier.fit(x={"token_ids": ids, "token_padding_mask": mask}, y=labels)
    speech = SpeechClassifier.from_text_classifier(classifier)  # zero-shot on speech
    ```
    """

    backbone_cls = SLAMBackbone
    feature_keys = FEATURE_KEYS

    def __init__(
        self,
        backbone,
        num_classes=None,
        class_names=None,
        preprocessor=None,
        pooling="mean",
        dropout=0.1,
        freeze_encoder=False,
        pool_encoder_input=False,
        head=None,
        **kwargs,
    ):
        if not isinstance(backbone, SLAMBackbone):
            raise ValueError(
                f"TextClassifier needs a SLAMBackbone (text tower + shared encoder), "
                f"got {type(backbone).__name__}"
            )

        # === Layers ===
        num_classes, class_names = self._set_layers(
            backbone, preprocessor, num_classes, class_names, head, pooling, dropout, freeze_encoder
        )

        # === Functional Model ===
        token_ids = keras.Input((None,), dtype="int32", name="token_ids")
        token_padding_mask = keras.Input((None,), name="token_padding_mask")

        def encode(ids, mask, training=None):
            embedded = backbone.embed_text(ids, mask, training=training)
            output = backbone.shared_encoder(embedded, mask, training=training)
            return with_encoder_input(embedded, output, pool_encoder_input)

        sequence = self._encode(encode, token_ids, token_padding_mask)
        logits = self.head(sequence, token_padding_mask)
        super().__init__(
            inputs={"token_ids": token_ids, "token_padding_mask": token_padding_mask},
            outputs=logits,
            **kwargs,
        )

        # === Config ===
        self._set_classifier_config(num_classes, class_names, freeze_encoder)
        self.pool_encoder_input = pool_encoder_input

    def model_inputs(self, inputs):
        """A token batch dict, or a list of strings (through the
        preprocessor's tokenizer).

        Raises:
            ValueError: no tokenizer, or a string without tokens (naming it).
        """
        if isinstance(inputs, dict):
            return super().model_inputs(inputs)
        if self.preprocessor is None or self.preprocessor.tokenizer is None:
            raise ValueError(
                "this TextClassifier has no tokenizer for strings: pass "
                "`preprocessor=SpeechRecognizerPreprocessor(tokenizer=...)` or token batches"
            )
        texts = list(inputs)
        tokens = self.preprocessor.tokenize_transcripts(texts)
        for index, real in enumerate(tokens["token_padding_mask"].any(axis=1)):
            if not real:
                raise ValueError(f"text item {index} ({texts[index]!r}) has no tokens to classify")
        return tokens

    def get_config(self):
        config = super().get_config()
        config["pool_encoder_input"] = self.pool_encoder_input
        return config
