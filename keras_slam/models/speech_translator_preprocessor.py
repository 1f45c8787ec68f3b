"""Raw audio / source text -> `SpeechTranslator` inputs; target ids -> text.

waveforms --front end--> speech_features, speech_padding_mask
source texts --tokenizer--> token_ids, token_padding_mask   (text MT)
target ids <--target_tokenizer--> translations
"""

import keras

from keras_slam.models.asr_preprocessor import (
    SpeechRecognizerPreprocessor,
    detokenize_ids,
    pad_token_ids,
)
from keras_slam.utils.keras_private import TOKENIZER_CONFIG_FILE

TARGET_TOKENIZER_CONFIG_FILE = "target_tokenizer.json"


@keras.saving.register_keras_serializable(package="keras_slam")
class SpeechTranslatorPreprocessor(SpeechRecognizerPreprocessor):
    """Front end, source tokenizer and target tokenizer of a `SpeechTranslator`.

    `save_to_preset` writes the front end, `tokenizer.json` (source) and
    `target_tokenizer.json` (target, assets under `assets/target_tokenizer/`)
    with `preprocessor.json`; from a backbone preset, which holds one
    tokenizer, `from_preset` uses it on both sides.

    Args:
        audio_converter, pad_to_multiple: see `SpeechRecognizerPreprocessor`.
        tokenizer: source-side tokenizer (the backbone's text vocabulary).
        target_tokenizer: target-side tokenizer (keras-slam reserved ids;
            default: `tokenizer`).
    """

    def __init__(self, audio_converter=None, tokenizer=None, target_tokenizer=None, **kwargs):
        super().__init__(audio_converter=audio_converter, tokenizer=tokenizer, **kwargs)
        if target_tokenizer is None:
            target_tokenizer = tokenizer
        elif target_tokenizer is not tokenizer and (
            target_tokenizer.config_file == TOKENIZER_CONFIG_FILE
        ):
            # Two tokenizers cannot share tokenizer.json and its assets folder.
            target_tokenizer.config_file = TARGET_TOKENIZER_CONFIG_FILE
        self.target_tokenizer = target_tokenizer

    def call(self, x, y=None, sample_weight=None):
        """Waveforms -> speech features (as `SpeechRecognizerPreprocessor`); a
        dict of model inputs (flat or {"speech", "text"}) passes unchanged."""
        if y is not None and not isinstance(y, dict):
            raise ValueError(
                "SpeechTranslatorPreprocessor takes no target strings as y: tokenize them with "
                "`tokenize_targets` and build (x, y) with `split_translation_batch`"
            )
        if isinstance(x, dict) and "waveform" not in x:
            return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
        return super().call(x, y, sample_weight)

    def tokenize_sources(self, texts):
        """list of str -> {"token_ids" (B, S) int32, "token_padding_mask" (B, S)}."""
        return self.tokenize_transcripts(texts)

    def tokenize_targets(self, texts):
        """list of str -> {"translation_ids" (B, L') int32, "translation_padding_mask"}
        (the pipeline's fields; `split_translation_batch` adds BOS / EOS)."""
        ids = pad_token_ids(self._target_tokenizer_or_error(), texts)
        return {"translation_ids": ids, "translation_padding_mask": (ids > 0).astype("float32")}

    def detokenize_targets(self, token_id_lists):
        """list of target id lists (no BOS / EOS) -> list of str."""
        return detokenize_ids(self._target_tokenizer_or_error(), token_id_lists)

    def _target_tokenizer_or_error(self):
        if self.target_tokenizer is None:
            raise ValueError("this preprocessor has no target tokenizer")
        return self.target_tokenizer

    def get_config(self):
        config = super().get_config()
        if self.target_tokenizer is not self.tokenizer:
            config["target_tokenizer"] = keras.layers.serialize(self.target_tokenizer)
        return config

    @classmethod
    def from_config(cls, config):
        if isinstance(config.get("target_tokenizer"), dict):
            config["target_tokenizer"] = keras.layers.deserialize(config["target_tokenizer"])
        return super().from_config(config)
