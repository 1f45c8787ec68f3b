"""Raw audio (and transcripts) -> the inputs of a `SpeechRecognizer`.

    waveforms (list of 1-D arrays, or (B, S) + mask)
        --pad--> (B, S), mask --LogMelSpectrogram--> speech_features (B, T, F),
                                                    speech_padding_mask (B, T)
    transcripts (list of str) --tokenizer--> token_ids (B, L), token_padding_mask

The same front end as the TFRecord pipeline (`keras_slam.data.pipeline`), so
audio read from files gives the features the model was trained on.
"""

import warnings

import keras
import keras_hub
import numpy as np

from keras_slam.data import tokenizers  # noqa: F401  (registers the tokenizer classes its presets hold)
from keras_slam.data.audio import resample
from keras_slam.layers.log_mel import LogMelSpectrogram
from keras_slam.utils.keras_private import (
    AUDIO_CONVERTER_CONFIG_FILE,
    PREPROCESSOR_CONFIG_FILE,
    TOKENIZER_CONFIG_FILE,
    check_file_exists,
    get_preset_loader,
)

CHANNEL_MODES = (None, "mean")


def standardize_waveform(waveform, sample_rate, target_rate, channels=None, where="waveform"):
    """One waveform -> 1-D float32 samples at `target_rate` Hz.

    Args:
        waveform: (S,) mono or (S, C) samples (channels last, as soundfile
            reads them); floats in [-1, 1], or signed integers (PCM, scaled
            by their full range).
        sample_rate: the waveform's rate in Hz; resampled with a polyphase
            filter when it differs from `target_rate`.
        channels: None: only mono ((S,), (S, 1) or (1, S)) is accepted;
            "mean": the C channels of (S, C) are averaged.
        where: names the waveform in errors (e.g. "audio item 3").
    Raises:
        ValueError: a non-integer rate, more than two dimensions,
            multi-channel audio without channels="mean", or an array that
            looks like (C, S) (fewer samples than channels).
    """
    if channels not in CHANNEL_MODES:
        raise ValueError(f"channels must be one of {CHANNEL_MODES}, got {channels!r}")
    if sample_rate != int(sample_rate) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    waveform = np.asarray(waveform)
    if waveform.dtype.kind == "i":
        waveform = waveform / float(np.iinfo(waveform.dtype).max + 1)
    waveform = waveform.astype("float32")
    if waveform.ndim == 2 and 1 in waveform.shape:
        waveform = waveform.reshape(-1)
    if waveform.ndim == 2:
        samples, num_channels = waveform.shape
        if samples < num_channels:
            raise ValueError(
                f"{where}: shape {waveform.shape} looks like (channels, samples); "
                "pass (samples, channels), e.g. `waveform.T`"
            )
        if channels != "mean":
            raise ValueError(
                f"{where}: {num_channels} channels (shape {waveform.shape}); pass mono "
                'audio or `channels="mean"` to average the channels'
            )
        waveform = waveform.mean(axis=1)
    if waveform.ndim != 1:
        raise ValueError(
            f"{where}: expected (samples,) or (samples, channels), got shape {waveform.shape}"
        )
    return resample(waveform, sample_rate, target_rate).astype("float32")


def waveform_list(array):
    """A (B, S) array of waveforms, or one (S,) waveform -> list of waveforms."""
    if array.ndim == 1:
        return [array]
    if array.ndim == 2 and array.shape[1] < array.shape[0]:
        raise ValueError(
            f"audio: a 2-D array is a (B, S) batch of mono waveforms, but shape {array.shape} "
            "has fewer samples than waveforms; for one multi-channel (S, C) waveform pass "
            '[waveform] with channels="mean"'
        )
    if array.ndim != 2:
        raise ValueError(f"audio: expected a (B, S) array of waveforms, got shape {array.shape}")
    return list(array)


def pad_waveforms(waveforms, multiple=1):
    """A list of 1-D float arrays -> (B, S) float32 and its (B, S) mask.

    `S` is the longest length rounded up to `multiple` samples (fewer
    distinct shapes, fewer compiles on XLA backends).
    """
    waveforms = [np.asarray(w, dtype="float32") for w in waveforms]
    if not waveforms:
        raise ValueError("no waveforms given")
    for index, waveform in enumerate(waveforms):
        if waveform.ndim != 1:
            raise ValueError(
                f"waveform {index}: shape {waveform.shape}, expected 1-D mono samples "
                '(`SpeechRecognizer.transcribe(..., channels="mean")` downmixes)'
            )
    longest = max(len(w) for w in waveforms)
    longest = -(-longest // multiple) * multiple
    batch = np.zeros((len(waveforms), longest), "float32")
    mask = np.zeros((len(waveforms), longest), "float32")
    for i, waveform in enumerate(waveforms):
        batch[i, : len(waveform)] = waveform
        mask[i, : len(waveform)] = 1.0
    return batch, mask


@keras.saving.register_keras_serializable(package="keras_slam")
class SpeechRecognizerPreprocessor(keras_hub.models.Preprocessor):
    """Front end (log-mel) and tokenizer of a `SpeechRecognizer`.

    `save_to_preset` writes `preprocessor.json`, the front end
    (`audio_converter.json`) and the tokenizer (`tokenizer.json` + assets);
    `from_preset` reads them back.

    Args:
        audio_converter: `LogMelSpectrogram` (default: SLAM's 80-bin one,
            as the bundled recipes use).
        tokenizer: keras-hub tokenizer whose id 0 is the pad / CTC blank
            (`CharacterTokenizer`, `SentencePieceTokenizer`), or None for a
            model that only produces logits.
        pad_to_multiple: waveforms are padded to a multiple of this many
            samples (default 0.5 s at 16 kHz).

    Call args:
        x: a list of 1-D waveforms, a (B, S) array, or a dict {"waveform"
            (B, S), "waveform_padding_mask" (B, S)}; samples in [-1, 1].
            A dict that already holds "speech_features" or "token_ids" (a
            pipeline batch) passes through unchanged, so `fit` / `predict`
            take either.
        y: optional list of B transcripts (or an already tokenized dict).
    Returns:
        x = {"speech_features" (B, T, F), "speech_padding_mask" (B, T)}, or
        (x, {"token_ids" (B, L), "token_padding_mask" (B, L)}) when y is given.
    """

    audio_converter_cls = LogMelSpectrogram
    tokenizer_cls = keras_hub.tokenizers.Tokenizer

    def __init__(self, audio_converter=None, tokenizer=None, pad_to_multiple=8000, **kwargs):
        super().__init__(**kwargs)
        self.audio_converter = audio_converter or self.audio_converter_cls(name="audio_converter")
        self.tokenizer = tokenizer
        self.pad_to_multiple = pad_to_multiple
        self.built = True

    @classmethod
    def saved_in(cls, preset):
        """Whether the preset directory holds this preprocessor or one of its parts."""
        parts = (PREPROCESSOR_CONFIG_FILE, AUDIO_CONVERTER_CONFIG_FILE, TOKENIZER_CONFIG_FILE)
        return any(check_file_exists(preset, part) for part in parts)

    @classmethod
    def from_preset(cls, preset, config_file=PREPROCESSOR_CONFIG_FILE, **kwargs):
        """The preprocessor saved in `preset`, or one built from its parts.

        Reads `preprocessor.json` when the preset has one; otherwise its
        `audio_converter.json` (else the default front end) and
        `tokenizer.json` (else no tokenizer), as a backbone preset or a
        converted checkpoint holds them. One preprocessor serves every speech
        backbone, so unlike keras-hub no subclass is looked up by backbone.

        Raises:
            FileNotFoundError: the preset holds none of these files.
        """
        if not cls.saved_in(preset):
            raise FileNotFoundError(
                f"{preset}: no {PREPROCESSOR_CONFIG_FILE}, {AUDIO_CONVERTER_CONFIG_FILE} "
                f"or {TOKENIZER_CONFIG_FILE}; this preset has no preprocessor"
            )
        loader = get_preset_loader(preset)
        if check_file_exists(preset, config_file):
            return loader.load_preprocessor(cls, config_file, **kwargs)
        if "audio_converter" not in kwargs and check_file_exists(
            preset, AUDIO_CONVERTER_CONFIG_FILE
        ):
            kwargs["audio_converter"] = loader.load_audio_converter(cls.audio_converter_cls)
        if "tokenizer" not in kwargs and check_file_exists(preset, TOKENIZER_CONFIG_FILE):
            kwargs["tokenizer"] = loader.load_tokenizer(cls.tokenizer_cls)
        return cls(**kwargs)

    def call(self, x, y=None, sample_weight=None):
        if isinstance(x, dict) and ("speech_features" in x or "token_ids" in x):
            # Already model inputs (a `keras_slam.data.pipeline` batch): unchanged.
            return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
        if isinstance(x, dict):
            waveform, mask = x["waveform"], x.get("waveform_padding_mask")
        elif isinstance(x, (list, tuple)):
            waveform, mask = pad_waveforms(x, self.pad_to_multiple)
        else:
            waveform, mask = np.asarray(x, "float32"), None
            if waveform.ndim == 1:
                waveform = waveform[None]
        if mask is None:
            mask = np.ones(np.shape(waveform), "float32")
        features, frame_mask = self.audio_converter(waveform, padding_mask=mask)
        inputs = {"speech_features": features, "speech_padding_mask": frame_mask}
        if y is not None and not isinstance(y, dict):
            y = self.tokenize_transcripts(y)
        return keras.utils.pack_x_y_sample_weight(inputs, y, sample_weight)

    def prepare_waveforms(
        self, waveforms, sample_rate=None, channels=None, non_finite="raise", caller="transcribe"
    ):
        """Raw audio -> (standardized waveforms, indices of those long enough for a frame).

        Args:
            waveforms: a list of (S,) / (S, C) waveforms or a (B, S) array
                (see `SpeechRecognizer.transcribe`).
            sample_rate, channels: see `standardize_waveform`; default rate:
                the front end's.
            non_finite: a waveform with NaN or Inf samples raises ValueError
                ("raise") or, with "empty", becomes empty (no frames) and is
                counted in a warning naming `caller`.
        """
        if non_finite not in ("raise", "empty"):
            raise ValueError(f'non_finite must be "raise" or "empty", got {non_finite!r}')
        if isinstance(waveforms, np.ndarray):
            waveforms = waveform_list(waveforms)
        target_rate = self.audio_converter.sample_rate
        prepared, non_finite_items = [], []
        for index, waveform in enumerate(waveforms):
            waveform = standardize_waveform(
                waveform,
                target_rate if sample_rate is None else sample_rate,
                target_rate,
                channels,
                where=f"audio item {index}",
            )
            if not np.all(np.isfinite(waveform)):
                if non_finite == "raise":
                    raise ValueError(
                        f'audio item {index}: NaN or Inf samples (pass non_finite="empty" '
                        'to give such items "")'
                    )
                non_finite_items.append(index)
                waveform = waveform[:0]
            prepared.append(waveform)
        if non_finite_items:
            warnings.warn(
                f"{caller}: {len(non_finite_items)} of {len(prepared)} waveforms have NaN or "
                f'Inf samples and give "": items {non_finite_items}',
                stacklevel=3,
            )
        # No output frame (shorter than one window, or than the frames one
        # stacked frame needs): nothing to run the model on.
        front_end = self.audio_converter
        return prepared, [i for i, w in enumerate(prepared) if front_end.num_frames(len(w)) >= 1]

    def tokenize_transcripts(self, transcripts):
        """list of str -> {"token_ids" (B, L) int32, "token_padding_mask" (B, L)}."""
        if self.tokenizer is None:
            raise ValueError("this preprocessor has no tokenizer")
        token_ids = pad_token_ids(self.tokenizer, transcripts)
        return {"token_ids": token_ids, "token_padding_mask": (token_ids > 0).astype("float32")}

    def detokenize(self, token_id_lists):
        """list of id lists -> list of str (ids < 0 and the pad id dropped)."""
        if self.tokenizer is None:
            raise ValueError(
                "this SpeechRecognizer has no tokenizer to turn ids into text: pass "
                "`preprocessor=SpeechRecognizerPreprocessor(tokenizer=...)`"
            )
        return detokenize_ids(self.tokenizer, token_id_lists)

    def get_config(self):
        config = super().get_config()
        config["pad_to_multiple"] = self.pad_to_multiple
        return config


def pad_token_ids(tokenizer, texts):
    """list of str -> (B, L) int32 ids right-padded with 0 (L >= 1)."""
    ids = [list(np.asarray(keras.ops.convert_to_numpy(tokenizer(t))).reshape(-1)) for t in texts]
    ids = [[i for i in row if i != 0] for row in ids]  # drop fixed-length padding
    token_ids = np.zeros((len(ids), max(1, max(len(row) for row in ids))), "int32")
    for i, row in enumerate(ids):
        token_ids[i, : len(row)] = row
    return token_ids


def detokenize_ids(tokenizer, token_id_lists):
    """list of id lists -> list of str (ids < 0 and the pad id dropped)."""
    texts = []
    for ids in token_id_lists:
        ids = [int(i) for i in ids if i > 0]
        text = tokenizer.detokenize([ids])[0] if ids else ""
        if hasattr(text, "numpy"):
            text = text.numpy()
        texts.append(text.decode("utf-8") if isinstance(text, bytes) else str(text))
    return texts
