"""CTC speech recognition on a pre-trained SLAM backbone or SpeechEncoder.

    speech_features (B, T, F), speech_padding_mask (B, T)
      -> SpecAugment (training only, real frames only)
      -> backbone.speech_tower            (both backbones have one)
      -> backbone.shared_encoder          (SLAMBackbone, `use_shared_encoder`)
      -> dropout -> Dense(vocabulary_size) "ctc_head"
      -> {"logits" (B, T', V), "padding_mask" (B, T')}

Class `blank_index` (0: the keras-slam tokenizers' pad id) is the CTC blank.
The loss is `keras_slam.objectives.ctc.ctc_loss` (float32 inside, so it is safe
under mixed_bfloat16), computed in `compute_loss` from the labels
{"token_ids", "token_padding_mask"}; `split_asr_batch` turns a pipeline
batch into (x, y). It stays summed per utterance (not per target token, as
the pre-trainer's): under `global_clipnorm=5` every step is then clipped to
one norm, and in the main job (300 English fine-tuning steps, lr 2e-3) the
summed loss left the CTC plateau first (held-out CER 86.5%, vs 93% with
torch's per-utterance mean and 95% with fairseq's batch-token mean).

Fine-tuning schedule (`compile`): `EncoderHeadAdam` gives the encoder its own
learning rate (`encoder_learning_rate_multiplier` x the head's) and keeps the
encoder frozen for the first `freeze_encoder_steps` steps by giving it a zero
learning rate. This replaces the usual callback that flips
`backbone.trainable`: flipping trainability changes the set of trained
variables, which forces a new train function (a recompile on JAX/TF XLA) and
an optimizer that has no slots for the unfrozen variables. Here the
variables, the optimizer state and the compiled step stay the same; the
price is that encoder gradients are still computed while frozen.
"""

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_slam.layers.flat_dense import FlatDense
from keras_slam.layers.spec_augment import SpecAugment
from keras_slam.metrics.error_rates import ErrorRateAccumulator
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor, waveform_list
from keras_slam.models.ctc_decoding import ctc_decode, token_id_lists
from keras_slam.models.layout_map import LayoutMapMixin
from keras_slam.objectives.ctc import ctc_loss
from keras_slam.optimizers import EncoderHeadAdam, log_finite_losses, skip_non_finite_steps
from keras_slam.utils.keras_private import scale_loss_for_distribution
from keras_slam.utils.preset_utils import PresetMixin

HEAD_NAME = "ctc_head"
FEATURE_KEYS = ("speech_features", "speech_padding_mask")
LABEL_KEYS = ("token_ids", "token_padding_mask")


def split_asr_batch(batch):
    """Pipeline batch dict -> (x features dict, y labels dict) for `fit`."""
    return {k: batch[k] for k in FEATURE_KEYS}, {k: batch[k] for k in LABEL_KEYS}


def encode_speech(backbone, features, padding_mask, use_shared_encoder, training=None):
    """Speech tower (+ shared encoder) of either backbone.

    `training=False` runs a frozen encoder without dropout inside `fit`.
    Returns: (sequence (B, T', D), frame padding mask (B, T')).
    """
    sequence, frame_mask = backbone.speech_tower(features, padding_mask, training=training)
    if use_shared_encoder:
        sequence = backbone.shared_encoder(sequence, frame_mask, training=training)
    return sequence, frame_mask


@keras.saving.register_keras_serializable(package="keras_slam")
class SpeechRecognizer(LayoutMapMixin, PresetMixin, keras_hub.models.Task):
    """CTC speech recognizer (see the module docstring for the graph).

    Args:
        backbone: `SLAMBackbone` or `SpeechEncoder`.
        vocabulary_size: CTC classes V, blank included; when omitted, the
            preprocessor's tokenizer's `vocabulary_size()`, else a SLAM
            backbone's text vocabulary (its pre-training CTC classes).
        preprocessor: `SpeechRecognizerPreprocessor` (front end + tokenizer)
            for `transcribe` on raw audio and for decoding to strings.
        use_shared_encoder: run the SLAM shared encoder after the speech
            tower (default: whenever the backbone has one).
        spec_augment: a `SpecAugment` layer, its config dict, or None for
            none; default: 2 frequency masks of width 27 (capped at F / 3)
            and 2 time masks of 5% of each utterance.
        head_dropout: dropout before the head.
        blank_index: CTC blank class.

    `from_preset` (`keras_slam.utils.preset_utils`) takes a task preset
    (`save_to_preset`, a converted Hugging Face `Wav2Vec2BertForCTC`), or
    any backbone preset (a name, a directory, a Hugging Face w2v-BERT 2.0
    checkpoint) to which a new head is added, with the preprocessor the
    preset holds.

    Example:
    ```python
    recognizer = SpeechRecognizer.from_preset("runs/x/pretrained", preprocessor=...)
    recognizer.compile(learning_rate=1e-3, freeze_encoder_steps=100)
    recognizer.fit(train.map(split_asr_batch), epochs=5)
    recognizer.transcribe([waveform])          # -> ["hello world"]
    ```
    """

    backbone_cls = keras_hub.models.Backbone
    preprocessor_cls = SpeechRecognizerPreprocessor

    def __init__(
        self,
        backbone,
        vocabulary_size=None,
        preprocessor=None,
        use_shared_encoder=None,
        spec_augment="default",
        head_dropout=0.1,
        blank_index=0,
        **kwargs,
    ):
        if vocabulary_size is None:
            vocabulary_size = ctc_vocabulary_size_of(backbone, preprocessor)
        has_shared = hasattr(backbone, "shared_encoder")
        if use_shared_encoder is None:
            use_shared_encoder = has_shared
        if use_shared_encoder and not has_shared:
            raise ValueError(f"{type(backbone).__name__} has no shared encoder")
        feature_dim = backbone.feature_dim
        if spec_augment == "default":
            spec_augment = dict(
                num_freq_masks=2,
                freq_mask_width=min(27, feature_dim // 3),
                num_time_masks=2,
                time_mask_ratio=0.05,
            )
        if isinstance(spec_augment, dict):
            spec_augment = SpecAugment(
                **spec_augment, dtype=backbone.dtype_policy, name="spec_augment"
            )

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.spec_augment = spec_augment
        self.head_dropout_layer = keras.layers.Dropout(
            head_dropout, dtype=backbone.dtype_policy, name="head_dropout"
        )
        self.ctc_head = FlatDense(vocabulary_size, dtype=backbone.dtype_policy, name=HEAD_NAME)

        # === Functional Model ===
        speech_features = keras.Input((None, feature_dim), name="speech_features")
        speech_padding_mask = keras.Input((None,), name="speech_padding_mask")
        features = speech_features
        if spec_augment is not None:
            features = spec_augment(features, speech_padding_mask)
        sequence, frame_mask = encode_speech(
            backbone, features, speech_padding_mask, use_shared_encoder
        )
        logits = self.ctc_head(self.head_dropout_layer(sequence))
        super().__init__(
            inputs={"speech_features": speech_features, "speech_padding_mask": speech_padding_mask},
            outputs={"logits": logits, "padding_mask": frame_mask},
            **kwargs,
        )

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.use_shared_encoder = use_shared_encoder
        self.head_dropout = head_dropout
        self.blank_index = blank_index

    def compile(
        self,
        optimizer="auto",
        learning_rate=1e-3,
        encoder_learning_rate_multiplier=1.0,
        freeze_encoder_steps=0,
        global_clipnorm=5.0,
        gradient_accumulation_steps=None,
        **kwargs,
    ):
        """Compiles with the CTC loss (`compute_loss`) and `EncoderHeadAdam`.

        Steps with a non-finite loss or gradient are skipped and counted
        (`keras_slam.optimizers.skip_non_finite_steps`).

        Args:
            optimizer: "auto" builds `EncoderHeadAdam` from the next four
                arguments; any other optimizer is used as given.
            learning_rate: head learning rate (float or schedule).
            encoder_learning_rate_multiplier: encoder lr / head lr.
            freeze_encoder_steps: steps that train only the head.
            global_clipnorm: gradient clipping of the "auto" optimizer.
            gradient_accumulation_steps: steps whose gradients the "auto"
                optimizer averages into one update (None: every step).
            **kwargs: `keras.Model.compile` arguments.
        """
        if optimizer == "auto":
            optimizer = EncoderHeadAdam(
                head_prefix=HEAD_NAME,
                encoder_learning_rate_multiplier=encoder_learning_rate_multiplier,
                freeze_encoder_steps=freeze_encoder_steps,
                learning_rate=learning_rate,
                global_clipnorm=global_clipnorm,
                gradient_accumulation_steps=gradient_accumulation_steps,
            )
        super().compile(optimizer=skip_non_finite_steps(optimizer), **kwargs)
        log_finite_losses(self)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """CTC negative log-likelihood, mean over the items with audio."""
        loss = ctc_loss(
            y["token_ids"],
            y["token_padding_mask"],
            y_pred["logits"],
            y_pred["padding_mask"],
            blank_index=self.blank_index,
        )
        # Keeps keras' regularization losses (none by default) in the sum.
        loss = loss + ops.cast(sum(self.losses, 0.0), "float32") if self.losses else loss
        return scale_loss_for_distribution(loss)

    # --- decoding ---------------------------------------------------------

    def decode(self, logits, padding_mask, strategy="greedy", beam_width=16):
        """(B, T', V) logits + mask -> B strings (needs a tokenizer)."""
        token_ids, _ = ctc_decode(
            logits,
            padding_mask,
            strategy=strategy,
            beam_width=beam_width,
            blank_index=self.blank_index,
        )
        return self._preprocessor_or_error().detokenize(token_id_lists(token_ids))

    def transcribe(
        self,
        audio,
        strategy="greedy",
        beam_width=16,
        batch_size=8,
        sample_rate=None,
        channels=None,
        non_finite="raise",
    ):
        """Transcribes raw audio or feature batches.

        Args:
            audio: a list of waveforms, each (S,) mono or (S, C) channels
                last, floats in [-1, 1] or signed-integer PCM; one (S,)
                waveform; a (B, S) array of B mono waveforms; or an iterable
                of feature batches (dicts with "speech_features" and
                "speech_padding_mask", e.g. a
                `keras_slam.data.pipeline.speech_dataset`).
            strategy, beam_width: see `keras_slam.models.ctc_decoding`.
            batch_size: waveforms per model call.
            sample_rate: the waveforms' rate in Hz, resampled (polyphase)
                to the front end's; default: the front end's (16 kHz).
            channels: None accepts only mono; "mean" averages the channels
                of (S, C) waveforms.
            non_finite: a waveform with NaN or Inf samples raises
                ValueError ("raise") or, with "empty", is transcribed as ""
                and counted in a warning.
        Returns:
            For waveforms: list of str, one per waveform, in order ("" for
            one shorter than the front end's first window). For feature
            batches: one per row with real frames (rows without any are
            batch padding and are left out).
        Raises:
            ValueError naming the item index for bad waveforms (see
            `standardize_waveform`, and `non_finite`).
        """
        if isinstance(audio, np.ndarray):
            audio = waveform_list(audio)
        if isinstance(audio, (list, tuple)) and not (audio and isinstance(audio[0], dict)):
            return self._transcribe_waveforms(
                audio, strategy, beam_width, batch_size, sample_rate, channels, non_finite
            )
        texts = []
        for batch in audio:
            texts += self._transcribe_rows_with_audio(batch, strategy, beam_width)[0]
        return texts

    def _transcribe_waveforms(
        self, waveforms, strategy, beam_width, batch_size, sample_rate, channels, non_finite
    ):
        """List of waveforms -> one text per waveform (see `transcribe`)."""
        preprocessor = self._preprocessor_or_error()
        prepared, audible = preprocessor.prepare_waveforms(
            waveforms, sample_rate, channels, non_finite, caller="transcribe"
        )
        texts = [""] * len(prepared)
        for start in range(0, len(audible), batch_size):
            rows = audible[start : start + batch_size]
            batch = preprocessor([prepared[i] for i in rows])
            for row, text in zip(rows, self._transcribe_batch(batch, strategy, beam_width)):
                texts[row] = text
        return texts

    def _transcribe_batch(self, batch, strategy, beam_width):
        """Feature batch -> one text per row ("" for rows without real frames)."""
        inputs = {k: np.asarray(batch[k]) for k in FEATURE_KEYS}
        outputs = self.predict_on_batch(inputs)
        return self.decode(outputs["logits"], outputs["padding_mask"], strategy, beam_width)

    def _transcribe_rows_with_audio(self, batch, strategy, beam_width):
        """Feature batch -> (texts of the rows with real frames, their indices)."""
        texts = self._transcribe_batch(batch, strategy, beam_width)
        rows = np.flatnonzero(np.asarray(batch["speech_padding_mask"]).sum(axis=1) > 0)
        return [texts[i] for i in rows], rows

    def evaluate_error_rates(
        self, dataset, languages=None, strategy="greedy", beam_width=16, **normalization
    ):
        """WER / CER of paired batches, per language and overall.

        Args:
            dataset: iterable of paired pipeline batches (speech features,
                token ids and, for per-language rates, "language" indices).
            languages: names of the language indices (the pipeline's
                `languages=` list).
            **normalization: `lowercase`, `remove_punctuation` (see
                `keras_slam.metrics.error_rates`).
        Returns:
            ({language: {"wer", "cer", "utterances"}, "all": ...},
            list of (language, reference, hypothesis)).
        """
        accumulator = ErrorRateAccumulator(**normalization)
        preprocessor = self._preprocessor_or_error()
        examples = []
        for batch in dataset:
            hypotheses, rows = self._transcribe_rows_with_audio(batch, strategy, beam_width)
            token_ids = np.asarray(batch["token_ids"])[rows]
            references = preprocessor.detokenize(token_ids)
            if languages is not None and "language" in batch:
                names = [languages[i] for i in np.asarray(batch["language"])[rows]]
            else:
                names = ["all"] * len(rows)
            accumulator.update_state(references, hypotheses, names)
            examples += list(zip(names, references, hypotheses))
        return accumulator.result(), examples

    def _preprocessor_or_error(self):
        if self.preprocessor is None:
            raise ValueError(
                "this SpeechRecognizer has no preprocessor (front end + tokenizer): pass "
                "`preprocessor=SpeechRecognizerPreprocessor(tokenizer=...)`"
            )
        return self.preprocessor

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            use_shared_encoder=self.use_shared_encoder,
            spec_augment=(
                None if self.spec_augment is None else keras.layers.serialize(self.spec_augment)
            ),
            head_dropout=self.head_dropout,
            blank_index=self.blank_index,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("spec_augment"), dict) and "class_name" in config["spec_augment"]:
            config["spec_augment"] = keras.layers.deserialize(config["spec_augment"])
        return super().from_config(config)


def ctc_vocabulary_size_of(backbone, preprocessor):
    """The tokenizer's vocabulary, else a SLAM backbone's text vocabulary
    (the classes its pre-training CTC head predicts)."""
    if preprocessor is not None and preprocessor.tokenizer is not None:
        return preprocessor.tokenizer.vocabulary_size()
    if hasattr(backbone, "vocabulary_size"):
        return backbone.vocabulary_size
    raise ValueError(
        f"pass vocabulary_size or a preprocessor with a tokenizer ({type(backbone).__name__} "
        "has no text vocabulary to default to)"
    )
