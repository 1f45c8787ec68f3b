"""Speech translation, and joint text translation, on a SLAM backbone or SpeechEncoder.

    speech: speech_features (B, T, F), speech_padding_mask (B, T)
        -> backbone.speech_tower (-> backbone.shared_encoder)   (`encode_speech`)
    text (SLAMBackbone only): token_ids (B, S), token_padding_mask (B, S)
        -> backbone.embed_text -> backbone.shared_encoder
    -> [Dense "decoder_encoder_projection" when encoder width != decoder width]
    -> decoder: token + position embedding of decoder_token_ids (B, L),
       N keras-hub `TransformerDecoder` blocks (pre-norm; causal self-attention
       over decoder_padding_mask, cross-attention over the encoder's real
       frames), final LayerNorm, transposed token embedding (tied) -> logits (B, L, V)

Target ids are the target tokenizer's ids, then two more: BOS =
`target_vocabulary_size - 2` and EOS = `target_vocabulary_size - 1` (the
keras-slam tokenizers reserve pad/unk/mask but have no BOS/EOS).
`keras_slam.data.translation.split_translation_batch` builds the
teacher-forced (x, y) from a pipeline batch.

Joint ST + MT training (mSLAM) uses a combined batch {"speech": ST batch,
"text": MT batch}: one step sees both, shapes stay static (one compile per
bucket pair) and the MT weight applies within the step. The loss is

    loss = mean_ST + mt_loss_weight * mean_MT

each mean over the real target tokens of its sub-batch (0 for a sub-batch
without any). A flat batch of either modality also trains (its MT loss is
scaled by `mt_loss_weight` too). Per-token loss: cross-entropy with label
smoothing eps, (1 - eps) * -log p(y) + eps * mean_v -log p(v), in float32.

CTC auxiliary (`ctc_loss_weight` > 0): a Dense "encoder_ctc_head" on the
speech encoder's output (before the projection) predicts the source
transcript's tokens (source tokenizer, blank = pad id 0), and

    loss += ctc_loss_weight * CTC / transcript length   (mean over items)

on speech examples whose labels carry "transcript_ids" (a paired pipeline
batch; `split_translation_batch` puts them there). It makes the encoder
carry the source content from the first steps, before the decoder has
learnt to read it (ST systems on top of ASR encoders do the same). The head
trains with the encoder (its learning rate and freezing).
"""

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_slam.data.translation import (
    MODALITIES,
    SPEECH_KEYS,
    encoder_keys,
    split_translation_batch,  # noqa: F401  (public here too)
)
from keras_slam.layers.flat_dense import FlatDense
from keras_slam.models.layout_map import LayoutMapMixin
from keras_slam.models.speech_recognizer import ctc_vocabulary_size_of, encode_speech
from keras_slam.models.speech_translator_preprocessor import SpeechTranslatorPreprocessor
from keras_slam.models.subclassed_task import SubclassedTask
from keras_slam.objectives.ctc import ctc_loss
from keras_slam.optimizers import EncoderHeadAdam, log_finite_losses, skip_non_finite_steps
from keras_slam.utils.inference_function import inference_function
from keras_slam.utils.keras_private import scale_loss_for_distribution
from keras_slam.utils.preset_utils import PresetMixin

DECODER_PREFIX = "decoder"
CTC_HEAD_NAME = "encoder_ctc_head"
STRATEGIES = ("greedy", "beam")


@keras.saving.register_keras_serializable(package="keras_slam")
class TransformerDecoder(keras_hub.layers.TransformerDecoder):
    """keras-hub's decoder block whose `compute_output_shape` also takes the
    encoder shape that its `build` records: `Model.summary()` passes every
    recorded build shape and raised a TypeError on keras-hub's. Same class
    name, so weight files keep their paths."""

    def compute_output_shape(self, decoder_sequence_shape, encoder_sequence_shape=None):
        return decoder_sequence_shape


def label_smoothed_cross_entropy(target_ids, target_padding_mask, logits, label_smoothing):
    """Mean label-smoothed cross-entropy over real target tokens, float32.

    Args:
        target_ids: (B, L) int; target_padding_mask: (B, L), 1 = real.
        logits: (B, L, V).
    Returns:
        () float32; 0 when no token is real.
    """
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    true_log_probs = ops.take_along_axis(log_probs, ops.cast(target_ids, "int32")[..., None], -1)
    token_losses = -(1.0 - label_smoothing) * true_log_probs[..., 0]
    token_losses = token_losses - label_smoothing * ops.mean(log_probs, axis=-1)
    real = ops.cast(target_padding_mask, "float32") > 0
    total = ops.sum(ops.where(real, token_losses, 0.0))
    return total / ops.maximum(ops.sum(ops.cast(real, "float32")), 1.0)


@keras.saving.register_keras_serializable(package="keras_slam")
class SpeechTranslator(LayoutMapMixin, PresetMixin, SubclassedTask):
    """Encoder-decoder translator (see the module docstring for the graph).

    Args:
        backbone: `SLAMBackbone` (speech and text input) or `SpeechEncoder`
            (speech only).
        preprocessor: `SpeechTranslatorPreprocessor` (front end, source and
            target tokenizers) for `translate` / `translate_text`.
        target_vocabulary_size: V, output classes including BOS and EOS;
            default: the target tokenizer's vocabulary + 2.
        decoder_num_layers, decoder_hidden_dim, decoder_intermediate_dim,
            decoder_num_heads: the Transformer decoder (mSLAM: 6, 512,
            2048, 8).
        dropout: of the decoder (mSLAM: 0.3).
        max_target_length: longest decoder sequence (BOS + tokens, or
            tokens + EOS), the size of the position table.
        label_smoothing: eps of the loss (mSLAM: 0.1).
        mt_loss_weight: scale of the text-MT examples' loss (mSLAM: 5.0).
        use_shared_encoder: run the shared encoder after the speech tower
            (default: whenever the backbone has one).
        ctc_loss_weight: weight of the CTC auxiliary on the speech
            encoder (module docstring); 0 (default): no CTC head.
        ctc_vocabulary_size: CTC classes (blank included); default: the
            source tokenizer's vocabulary, else a SLAM backbone's.
        compile: compile with the defaults of `compile`.

    Call: a dict of encoder inputs (speech: "speech_features",
    "speech_padding_mask"; text: "token_ids", "token_padding_mask") plus
    "decoder_token_ids" (B, L) and "decoder_padding_mask" (B, L) -> logits
    (B, L, V); a joint batch {"speech": ..., "text": ...} -> {modality:
    logits}. With a CTC head, speech input gives {"logits", "ctc_logits"
    (B, T', C), "ctc_padding_mask" (B, T')} instead of the logits. Labels y:
    {"target_ids", "target_padding_mask"} (B, L) (+ "transcript_ids",
    "transcript_padding_mask" (B, S) for the CTC auxiliary), or the same per
    modality.

    Example:
    ```python
    translator = SpeechTranslator.from_preset("runs/x/pretrained", preprocessor=...)
    translator.compile(learning_rate=1e-3)
    split = lambda b: split_translation_batch(b, translator.bos_id, translator.eos_id)
    translator.fit(train.map(split), epochs=5)
    translator.translate([waveform])            # -> ["hello world"]
    ```
    """

    backbone_cls = keras_hub.models.Backbone
    preprocessor_cls = SpeechTranslatorPreprocessor

    def __init__(
        self,
        backbone,
        preprocessor=None,
        target_vocabulary_size=None,
        decoder_num_layers=6,
        decoder_hidden_dim=512,
        decoder_intermediate_dim=2048,
        decoder_num_heads=8,
        dropout=0.3,
        max_target_length=256,
        label_smoothing=0.1,
        mt_loss_weight=5.0,
        use_shared_encoder=None,
        ctc_loss_weight=0.0,
        ctc_vocabulary_size=None,
        compile=True,
        **kwargs,
    ):
        if target_vocabulary_size is None:
            if preprocessor is None or preprocessor.target_tokenizer is None:
                raise ValueError(
                    "pass target_vocabulary_size or a preprocessor with a target tokenizer"
                )
            target_vocabulary_size = preprocessor.target_tokenizer.vocabulary_size() + 2
        has_shared = hasattr(backbone, "shared_encoder")
        if use_shared_encoder is None:
            use_shared_encoder = has_shared
        if use_shared_encoder and not has_shared:
            raise ValueError(f"{type(backbone).__name__} has no shared encoder")
        if ctc_loss_weight and ctc_vocabulary_size is None:
            ctc_vocabulary_size = ctc_vocabulary_size_of(backbone, preprocessor)
        super().__init__(compile=False, **kwargs)
        dtype = backbone.dtype_policy

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        encoder_dim = backbone.speech_tower.compute_output_shape((None, None, backbone.feature_dim))
        encoder_dim = encoder_dim[0][-1]
        self.encoder_projection = None
        if encoder_dim != decoder_hidden_dim:
            self.encoder_projection = FlatDense(
                decoder_hidden_dim, dtype=dtype, name=f"{DECODER_PREFIX}_encoder_projection"
            )
            self.encoder_projection.build((None, None, encoder_dim))
        self.ctc_head = None
        if ctc_loss_weight:
            self.ctc_head = FlatDense(ctc_vocabulary_size, dtype=dtype, name=CTC_HEAD_NAME)
            self.ctc_head.build((None, None, encoder_dim))
        self.decoder_embedding = keras_hub.layers.TokenAndPositionEmbedding(
            target_vocabulary_size,
            max_target_length,
            decoder_hidden_dim,
            tie_weights=True,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=decoder_hidden_dim**-0.5),
            dtype=dtype,
            name=f"{DECODER_PREFIX}_embedding",
        )
        self.decoder_embedding.build((None, None))
        self.decoder_embedding_dropout = keras.layers.Dropout(
            dropout, dtype=dtype, name=f"{DECODER_PREFIX}_embedding_dropout"
        )
        self.decoder_layers = []
        for i in range(decoder_num_layers):
            layer = TransformerDecoder(
                decoder_intermediate_dim,
                decoder_num_heads,
                dropout=dropout,
                normalize_first=True,
                dtype=dtype,
                name=f"{DECODER_PREFIX}_layer_{i}",
            )
            sequence_shape = (None, None, decoder_hidden_dim)
            layer.build(sequence_shape, sequence_shape)
            self.decoder_layers.append(layer)
        self.decoder_layer_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype=dtype, name=f"{DECODER_PREFIX}_layer_norm"
        )
        self.decoder_layer_norm.build((None, None, decoder_hidden_dim))
        # === Config ===
        self.target_vocabulary_size = target_vocabulary_size
        self.decoder_num_layers = decoder_num_layers
        self.decoder_hidden_dim = decoder_hidden_dim
        self.decoder_intermediate_dim = decoder_intermediate_dim
        self.decoder_num_heads = decoder_num_heads
        self.dropout = dropout
        self.max_target_length = max_target_length
        self.label_smoothing = label_smoothing
        self.mt_loss_weight = mt_loss_weight
        self.use_shared_encoder = use_shared_encoder
        self.ctc_loss_weight = ctc_loss_weight
        self.ctc_vocabulary_size = ctc_vocabulary_size

        self._generate_functions = {}  # (strategy, beam_width, max_length, eager) -> function

        # === Metrics ===
        loss_names = ("st", "mt", "ctc") if self.ctc_head is not None else ("st", "mt")
        self.loss_trackers = {name: keras.metrics.Mean(name=f"{name}_loss") for name in loss_names}
        self.built = True
        if compile:
            self.compile()

    @property
    def bos_id(self):
        return self.target_vocabulary_size - 2

    @property
    def eos_id(self):
        return self.target_vocabulary_size - 1

    # --- forward ----------------------------------------------------------

    def encode(self, inputs, training=False):
        """Encoder inputs (speech or text fields) -> ((B, S, Dd) sequence, (B, S) mask).

        Padded positions of the sequence are zero.
        """
        return self._project(*self._encode_unprojected(inputs, training))

    def _encode_unprojected(self, inputs, training):
        """`encode` before the projection: ((B, S, De) sequence, (B, S) mask)."""
        if encoder_keys(inputs) == SPEECH_KEYS:
            return encode_speech(
                self.backbone,
                inputs["speech_features"],
                inputs["speech_padding_mask"],
                self.use_shared_encoder,
            )
        if not (self.use_shared_encoder and hasattr(self.backbone, "embed_text")):
            raise ValueError(
                "text input (token_ids) needs a SLAMBackbone and use_shared_encoder=True; "
                f"this translator has a {type(self.backbone).__name__} "
                f"(use_shared_encoder={self.use_shared_encoder})"
            )
        mask = inputs["token_padding_mask"]
        sequence = self.backbone.embed_text(inputs["token_ids"], mask, training=training)
        return self.backbone.encode_shared(sequence, mask, training=training), mask

    def _project(self, sequence, mask):
        if self.encoder_projection is not None:
            sequence = self.encoder_projection(sequence)
        real = ops.cast(mask, "float32")[:, :, None] > 0
        return ops.where(real, sequence, ops.zeros_like(sequence)), mask

    def _embed(self, decoder_token_ids, start_index=0, training=False):
        length = decoder_token_ids.shape[1]
        if length is not None and length > self.max_target_length:
            raise ValueError(
                f"decoder_token_ids: {length} positions, more than max_target_length="
                f"{self.max_target_length}"
            )
        x = self.decoder_embedding(decoder_token_ids, start_index=start_index)
        return self.decoder_embedding_dropout(x, training=training)

    def _logits(self, x):
        # The output projection is the transposed token embedding (tied).
        return self.decoder_embedding.token_embedding(self.decoder_layer_norm(x), reverse=True)

    def decode(
        self,
        decoder_token_ids,
        decoder_padding_mask,
        encoder_sequence,
        encoder_padding_mask,
        training=False,
    ):
        """Teacher-forced decoder: (B, L) ids, (B, L) mask, encoder output -> (B, L, V) logits."""
        x = self._embed(decoder_token_ids, training=training)
        decoder_padding_mask = ops.cast(decoder_padding_mask, "bool")
        encoder_padding_mask = ops.cast(encoder_padding_mask, "bool")
        for layer in self.decoder_layers:
            x = layer(
                x,
                encoder_sequence,
                decoder_padding_mask=decoder_padding_mask,
                encoder_padding_mask=encoder_padding_mask,
                training=training,
            )
        return self._logits(x)

    def call(self, inputs, training=False):
        if any(name in inputs for name in MODALITIES):
            return {name: self.call(batch, training=training) for name, batch in inputs.items()}
        sequence, mask = self._encode_unprojected(inputs, training)
        logits = self.decode(
            inputs["decoder_token_ids"],
            inputs["decoder_padding_mask"],
            *self._project(sequence, mask),
            training=training,
        )
        if self.ctc_head is None or encoder_keys(inputs) != SPEECH_KEYS:
            return logits
        return {"logits": logits, "ctc_logits": self.ctc_head(sequence), "ctc_padding_mask": mask}

    # --- training ---------------------------------------------------------

    def compile(
        self,
        optimizer="auto",
        learning_rate=1e-3,
        encoder_learning_rate_multiplier=1.0,
        freeze_encoder_steps=0,
        global_clipnorm=5.0,
        **kwargs,
    ):
        """Compiles with `compute_loss` and `EncoderHeadAdam` (the decoder is
        the head); steps with a non-finite loss or gradient are skipped and
        counted, and the logged "loss" averages the finite ones. Arguments as
        `SpeechRecognizer.compile`."""
        if optimizer == "auto":
            optimizer = EncoderHeadAdam(
                head_prefix=DECODER_PREFIX,
                encoder_learning_rate_multiplier=encoder_learning_rate_multiplier,
                freeze_encoder_steps=freeze_encoder_steps,
                learning_rate=learning_rate,
                global_clipnorm=global_clipnorm,
            )
        super().compile(optimizer=skip_non_finite_steps(optimizer), **kwargs)
        log_finite_losses(self)

    def modality_losses(self, x, y, y_pred):
        """{"st": loss, "mt": loss, "ctc": loss} of the sub-batches present
        (module docstring; "ctc" for speech with transcripts and a CTC head)."""
        if not any(name in x for name in MODALITIES):
            name = "speech" if encoder_keys(x) == SPEECH_KEYS else "text"
            x, y, y_pred = {name: x}, {name: y}, {name: y_pred}
        losses = {}
        for name in x:
            outputs = y_pred[name] if isinstance(y_pred[name], dict) else {"logits": y_pred[name]}
            labels = y[name]
            losses[{"speech": "st", "text": "mt"}[name]] = label_smoothed_cross_entropy(
                labels["target_ids"],
                labels["target_padding_mask"],
                outputs["logits"],
                self.label_smoothing,
            )
            if "ctc_logits" in outputs and "transcript_ids" in labels:
                losses["ctc"] = ctc_loss(
                    labels["transcript_ids"],
                    labels["transcript_padding_mask"],
                    outputs["ctc_logits"],
                    outputs["ctc_padding_mask"],
                    divide_by_target_length=True,
                )
        return losses

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """ST loss + mt_loss_weight * MT loss + ctc_loss_weight * CTC (float32)."""
        if y_pred is None:
            y_pred = self(x, training=training)
        losses = self.modality_losses(x, y, y_pred)
        for name, value in losses.items():
            self.loss_trackers[name].update_state(value)
        weights = {"st": 1.0, "mt": self.mt_loss_weight, "ctc": self.ctc_loss_weight}
        loss = sum(weights[name] * value for name, value in losses.items())
        # Keeps keras' regularization losses (none by default) in the sum.
        loss = loss + ops.cast(sum(self.losses, 0.0), "float32") if self.losses else loss
        return scale_loss_for_distribution(loss)

    # --- generation -------------------------------------------------------

    def _decode_step(self, token_ids, index, cache):
        """One cached decoder step: (B, 1) ids at position `index` -> (B, V) logits, cache."""
        self_cache, encoder_sequence, encoder_padding_mask, cross_cache = cache
        x = self._embed(token_ids, start_index=index)
        new_self_caches = []
        for i, layer in enumerate(self.decoder_layers):
            x, layer_cache, _ = layer(
                x,
                encoder_sequence,
                encoder_padding_mask=encoder_padding_mask,
                self_attention_cache=self_cache[:, i],
                self_attention_cache_update_index=index,
                cross_attention_cache=cross_cache[:, i],
                cross_attention_cache_update_index=None,
            )
            new_self_caches.append(layer_cache)
        cache = (ops.stack(new_self_caches, axis=1), encoder_sequence, encoder_padding_mask)
        return self._logits(x)[:, 0], cache + (cross_cache,)

    def _initial_cache(self, encoder_sequence, encoder_padding_mask, max_length):
        """Zero self-attention caches and the cross-attention keys/values of the encoder."""
        batch_size, encoder_length = ops.shape(encoder_sequence)[:2]
        head_dim = self.decoder_hidden_dim // self.decoder_num_heads
        shape = (batch_size, 2, max_length, self.decoder_num_heads, head_dim)
        self_cache = ops.zeros(shape, dtype=self.compute_dtype)
        cross_shape = (batch_size, 2, encoder_length, self.decoder_num_heads, head_dim)
        encoder_padding_mask = ops.cast(encoder_padding_mask, "bool")
        bos = ops.full((batch_size, 1), self.bos_id, dtype="int32")
        x = self._embed(bos)
        cross_caches = []
        for layer in self.decoder_layers:
            x, _, cross_cache = layer(
                x,
                encoder_sequence,
                encoder_padding_mask=encoder_padding_mask,
                self_attention_cache=self_cache,
                self_attention_cache_update_index=0,
                cross_attention_cache=ops.zeros(cross_shape, dtype=self.compute_dtype),
                cross_attention_cache_update_index=0,
            )
            cross_caches.append(cross_cache)
        self_caches = ops.stack([self_cache] * len(self.decoder_layers), axis=1)
        cross_caches = ops.stack(cross_caches, axis=1)
        return self_caches, encoder_sequence, encoder_padding_mask, cross_caches

    def generate(self, inputs, strategy="greedy", beam_width=4, max_length=None):
        """Translates a batch of encoder inputs into target ids.

        The encoder runs once; the decoder runs one cached step per token
        (keras-hub `GreedySampler` / `BeamSampler`) until every row has
        produced EOS or `max_length` positions are filled. Once a row has
        EOS, it continues with pad (0) at probability 1, so a finished beam
        keeps its score (no length normalisation).

        Args:
            inputs: speech ("speech_features", "speech_padding_mask") or
                text ("token_ids", "token_padding_mask") fields, batched.
            strategy: "greedy" or "beam" (`beam_width` beams).
            max_length: decoder positions, BOS included (default
                `max_target_length`).
        Returns:
            (B, max_length) int32 numpy: BOS, the generated ids, EOS, then
            pad (0) (no EOS when the row ran out of positions).
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        max_length = max_length or self.max_target_length
        if not 2 <= max_length <= self.max_target_length:
            raise ValueError(
                f"max_length must be in [2, max_target_length={self.max_target_length}], "
                f"got {max_length}"
            )
        inputs = {key: ops.convert_to_tensor(inputs[key]) for key in encoder_keys(inputs)}
        generate_function = self._generate_function(strategy, beam_width, max_length)
        return np.asarray(ops.convert_to_numpy(generate_function(inputs))).astype("int32")

    def _generate_function(self, strategy, beam_width, max_length):
        """`_generate_step` for these settings, made once and compiled by
        `inference_function` (once per input shape; sees later training)."""
        key = (strategy, beam_width, max_length, self.run_eagerly)
        if key in self._generate_functions:
            return self._generate_functions[key]

        def generate_step(inputs):
            return self._generate_step(inputs, strategy, beam_width, max_length)

        function = inference_function(
            generate_step,
            self.trainable_variables + self.non_trainable_variables,
            self.run_eagerly,
        )
        self._generate_functions[key] = function
        return function

    def _generate_step(self, inputs, strategy, beam_width, max_length):
        """Encoder inputs (tensors) -> (B, max_length) generated ids (`generate`)."""
        encoder_sequence, encoder_padding_mask = self.encode(inputs)
        cache = self._initial_cache(encoder_sequence, encoder_padding_mask, max_length)
        batch_size = ops.shape(encoder_sequence)[0]
        prompt = ops.concatenate(
            [
                ops.full((batch_size, 1), self.bos_id, dtype="int32"),
                ops.zeros((batch_size, max_length - 1), dtype="int32"),
            ],
            axis=1,
        )
        fixed = ops.arange(max_length)[None, :] < 1
        fixed = ops.broadcast_to(fixed, (batch_size, max_length))

        def next_token_logits(prompt, cache, index):
            token = ops.slice(prompt, [0, index - 1], [ops.shape(prompt)[0], 1])
            logits, cache = self._decode_step(token, index - 1, cache)
            logits = ops.cast(logits, "float32")
            finished = ops.any(
                ops.logical_and(prompt == self.eos_id, ops.arange(max_length)[None, :] < index),
                axis=1,
            )
            only_pad = ops.where(ops.arange(self.target_vocabulary_size) == 0, 0.0, -1e9)
            logits = ops.where(finished[:, None], only_pad[None, :], logits)
            return logits, None, cache

        if strategy == "greedy":
            sampler = keras_hub.samplers.GreedySampler()
        else:
            sampler = keras_hub.samplers.BeamSampler(num_beams=beam_width)
        return sampler(
            next_token_logits,
            prompt,
            cache=cache,
            index=1,
            model=self,
            mask=fixed,
            stop_token_ids=(self.eos_id,),
        )

    def target_id_lists(self, generated):
        """(B, L) `generate` output -> per row the ids between BOS and EOS."""
        lists = []
        for row in np.asarray(generated):
            ids = [int(i) for i in row[1:]]
            if self.eos_id in ids:
                ids = ids[: ids.index(self.eos_id)]
            lists.append([i for i in ids if 0 < i < self.bos_id])
        return lists

    def translate(
        self,
        inputs,
        strategy="greedy",
        beam_width=4,
        max_length=None,
        batch_size=8,
        sample_rate=None,
        channels=None,
        non_finite="raise",
    ):
        """Translates speech into target-language strings.

        Args:
            inputs: waveforms (a list, or a (B, S) array; see
                `SpeechRecognizer.transcribe`), or an iterable of feature
                batch dicts (e.g. a `speech_dataset`).
            strategy, beam_width, max_length: see `generate`.
            batch_size, sample_rate, channels, non_finite: for waveforms, as
                `SpeechRecognizer.transcribe`.
        Returns:
            list of str: one per waveform ("" for one shorter than the front
            end's first window), or one per batch row.
        """
        preprocessor = self._preprocessor_or_error()
        waveforms = isinstance(inputs, np.ndarray) or (
            isinstance(inputs, (list, tuple)) and inputs and not isinstance(inputs[0], dict)
        )
        if not waveforms:
            texts = []
            for batch in [inputs] if isinstance(inputs, dict) else inputs:
                texts += self._translate_batch(batch, strategy, beam_width, max_length)
            return texts
        prepared, audible = preprocessor.prepare_waveforms(
            inputs, sample_rate, channels, non_finite, caller="translate"
        )
        texts = [""] * len(prepared)
        for start in range(0, len(audible), batch_size):
            rows = audible[start : start + batch_size]
            batch = preprocessor([prepared[i] for i in rows])
            for row, text in zip(
                rows, self._translate_batch(batch, strategy, beam_width, max_length)
            ):
                texts[row] = text
        return texts

    def _translate_batch(self, batch, strategy, beam_width, max_length):
        generated = self.generate(batch, strategy, beam_width, max_length)
        return self._preprocessor_or_error().detokenize_targets(self.target_id_lists(generated))

    def translate_text(
        self, sources, strategy="greedy", beam_width=4, max_length=None, batch_size=8
    ):
        """Text translation (MT, zero-shot after speech-only training): list of
        source strings (source tokenizer) -> list of target strings."""
        preprocessor = self._preprocessor_or_error()
        texts = []
        for start in range(0, len(sources), batch_size):
            batch = preprocessor.tokenize_sources(sources[start : start + batch_size])
            texts += self._translate_batch(batch, strategy, beam_width, max_length)
        return texts

    def _preprocessor_or_error(self):
        if self.preprocessor is None:
            raise ValueError(
                "this SpeechTranslator has no preprocessor: pass "
                "`preprocessor=SpeechTranslatorPreprocessor(tokenizer=..., target_tokenizer=...)`"
            )
        return self.preprocessor

    def get_config(self):
        config = super().get_config()
        config.update(
            target_vocabulary_size=self.target_vocabulary_size,
            decoder_num_layers=self.decoder_num_layers,
            decoder_hidden_dim=self.decoder_hidden_dim,
            decoder_intermediate_dim=self.decoder_intermediate_dim,
            decoder_num_heads=self.decoder_num_heads,
            dropout=self.dropout,
            max_target_length=self.max_target_length,
            label_smoothing=self.label_smoothing,
            mt_loss_weight=self.mt_loss_weight,
            use_shared_encoder=self.use_shared_encoder,
            ctc_loss_weight=self.ctc_loss_weight,
            ctc_vocabulary_size=self.ctc_vocabulary_size,
        )
        return config
