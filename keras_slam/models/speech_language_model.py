"""SLM (arXiv 2310.00230): a frozen speech encoder and a frozen keras-hub
language model (decoder-only `CausalLM` or encoder-decoder `Seq2SeqLM`)
joined by a trained adapter.

    speech_features (B, T, F), speech_padding_mask (B, T)
      -> frozen speech encoder (`encode_speech`: speech tower [+ shared encoder])
      -> SpeechAdapter: stack `stack_frames` frames, Dense, Transformer
         layers, Dense to the LM's embedding width      -> (B, S, D_lm)
    prompt_token_ids (B, P): "<bos>" + instruction [+ context_template
      filled with a context text, e.g. "Context: <words>\n"], LM-embedded
    response_token_ids (B, R): response + "<eos>" (teacher forcing)

    decoder-only: packed per item, no gaps:
      [prompt | adapted speech | response | padding]
      -> the frozen LM's decoder layers on the embeddings, final norm
      -> logits only where the next token is a response token (B, R, V)
    encoder-decoder (as in the paper): [prompt | adapted speech | padding]
      -> the frozen LM's encoder on the embeddings; its decoder reads
      [decoder start ids | response] and cross-attends to it
      -> logits of the positions that predict a response token (B, R, V)

The loss is the cross-entropy of the response tokens: the prompt (its
context included) and the speech never have labels because the logits are taken only at the R
positions that predict a response token (decoder-only: position
l_p + l_s + r - 1 for response token r of an item with l_p prompt tokens
and l_s speech frames); this also keeps the vocabulary projection to
(B, R, V).

CTC auxiliary (`ctc_loss_weight` > 0): the adapted speech (B, S, D_lm)
through the frozen LM's (tied) token embedding as output projection, plus a
blank logit (the adapter's Dense "blank_projection"; class V), gives CTC
logits (B, S, V + 1) against the utterance's transcript in LM tokens
("transcript_token_ids" (B, U), `transcript_ids`), and

    loss += ctc_loss_weight * CTC / transcript length   (mean over items)

so the adapter emits token-like embeddings in the transcript's order, which
an LM that copies from its context can read out.

Packing each item without gaps keeps the LM's positions (RoPE, learned or
relative) those of the item alone, so a padded batch gives each item's
outputs (padding invariance). `generate` runs greedy decoding through
`keras_hub.samplers.GreedySampler` with the LM's key/value cache
(decoder-only: the prefixes, right-aligned, seed the cache in one pass;
encoder-decoder: the encoder runs once and seeds the cross-attention
cache), then one token per step: `max_new_tokens` steps at most.

Hooks into the LM (`LM_FAMILIES`, one hooks object per backbone class)
mirror each family's `CausalLM.call_with_cache` / `Seq2SeqLM.call_encoder`
and `call_decoder_with_cache`, on embeddings instead of token ids and with
`training=False` (the frozen LM runs without dropout). Supported: Gemma
(the architecture of `recipes/lm.py`), Llama, Qwen, GPT-2, BART and T5,
from any preset on disk (`SpeechLanguageModel.from_frozen_presets`).

Presets: `save_to_preset(dir)` copies the two frozen models into
`dir/speech_encoder` and `dir/language_model`; with `reference_frozen=True`
it stores only their paths. Either way `dir` holds `config.json` (the
adapter's config) and `adapter.weights.h5` (the only trained weights).
"""

import json
import os

import h5py
import keras
import keras_hub
import numpy as np
from keras import ops

from keras_slam.data.instructions import pad_rows
from keras_slam.layers.flat_dense import FlatDense
from keras_slam.models import layout_map
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.speech_recognizer import encode_speech
from keras_slam.models.subclassed_task import SubclassedTask
from keras_slam.objectives.ctc import ctc_loss
from keras_slam.optimizers import log_finite_losses, skip_non_finite_steps
from keras_slam.utils import preset_utils
from keras_slam.utils.inference_function import inference_function
from keras_slam.utils.keras_private import scale_loss_for_distribution

CONFIG_FILE = "config.json"
ADAPTER_WEIGHTS_FILE = "adapter.weights.h5"
CONTEXT_TEMPLATE = "Context: {context}\n"
SPEECH_ENCODER_DIR = "speech_encoder"
LANGUAGE_MODEL_DIR = "language_model"


class DecoderHooks:
    """How `SpeechLanguageModel` runs a keras-hub decoder-only backbone on
    embeddings: `token_embedding` (reversible: also the output projection),
    `transformer_layers`, final `layer_norm`, as each family's
    `CausalLM.call_with_cache` does. The default is the Llama / Qwen layout;
    a family differs only in the hooks it overrides.
    """

    encoder_decoder = False
    padding_mask_key = "decoder_padding_mask"
    cache_key = "self_attention_cache"
    cache_index_key = "self_attention_cache_update_index"

    def embed(self, backbone, token_ids):
        return backbone.token_embedding(token_ids)

    def prompt_start_ids(self, tokenizer):
        """Ids before the instruction: the start token, when there is one."""
        return [] if tokenizer.start_token_id is None else [tokenizer.start_token_id]

    def add_positions(self, backbone, x, positions):
        """Absolute position embeddings at `positions` (B or 1, n) (RoPE
        families: none; their attention sees only position differences)."""
        return x

    def cache_heads(self, backbone):
        """(key/value heads, head dim) of the key/value cache."""
        return backbone.num_key_value_heads, backbone.hidden_dim // backbone.num_query_heads

    def decoder(self, backbone, x, padding_mask):
        """x (B, L, D), padding mask (B, L) -> final hidden states (B, L, D)."""
        x = self.add_positions(backbone, x, ops.arange(ops.shape(x)[1], dtype="int32")[None])
        for layer in backbone.transformer_layers:
            x = layer(x, **{self.padding_mask_key: padding_mask}, training=False)
        return backbone.layer_norm(x)

    def decoder_with_cache(self, backbone, x, cache, cache_update_index, positions, key_mask):
        """x (B, n, D) in cache columns cache_update_index.. -> (hidden, cache).

        positions (B, n): each item's own position of each column, negative
        for padding; key_mask (B, cache length): the real columns. Padding
        columns leave each layer as zeros, so their keys and values stay
        finite (a fused attention op may give NaN to a fully masked row).
        """
        x = self.add_positions(backbone, x, ops.maximum(positions, 0))
        real = (positions >= 0)[..., None]
        caches = []
        for i, layer in enumerate(backbone.transformer_layers):
            x, layer_cache = layer(
                x,
                **{
                    self.padding_mask_key: key_mask,
                    self.cache_key: cache[:, i],
                    self.cache_index_key: cache_update_index,
                },
                training=False,
            )
            x = ops.where(real, x, ops.zeros_like(x))
            caches.append(layer_cache)
        return backbone.layer_norm(x), ops.stack(caches, axis=1)

    def empty_cache(self, backbone, batch_size, length, dtype):
        shape = (batch_size, backbone.num_layers, 2, length, *self.cache_heads(backbone))
        return ops.zeros(shape, dtype=dtype)


class GemmaHooks(DecoderHooks):
    """Gemma: embeddings scaled by sqrt(hidden_dim), its own keyword names."""

    padding_mask_key = "padding_mask"
    cache_key = "cache"
    cache_index_key = "cache_update_index"

    def embed(self, backbone, token_ids):
        x = backbone.token_embedding(token_ids)
        return x * ops.cast(ops.sqrt(backbone.hidden_dim), x.dtype)

    def cache_heads(self, backbone):
        return backbone.num_key_value_heads, backbone.head_dim


class GPT2Hooks(DecoderHooks):
    """GPT-2: learned absolute positions added to the token embeddings."""

    def add_positions(self, backbone, x, positions):
        table = backbone.position_embedding.position_embeddings
        return ops.add(x, ops.cast(ops.take(table, positions, axis=0), x.dtype))

    def cache_heads(self, backbone):
        return backbone.num_heads, backbone.hidden_dim // backbone.num_heads


class Seq2SeqHooks:
    """How `SpeechLanguageModel` runs a keras-hub encoder-decoder backbone:
    its encoder on [prompt | speech] embeddings, its decoder on token ids
    with self- and cross-attention caches, as `BartSeq2SeqLM.call_encoder`
    and `call_decoder_with_cache` do (the default is BART's layout).
    """

    encoder_decoder = True

    def embed(self, backbone, token_ids):
        return backbone.token_embedding(token_ids)

    def prompt_start_ids(self, tokenizer):
        return [tokenizer.start_token_id]

    def decoder_start_ids(self, tokenizer):
        """What the decoder reads before the response (BART: "</s> <s>")."""
        return [tokenizer.end_token_id, tokenizer.start_token_id]

    def cache_heads(self, backbone):
        return backbone.num_heads, backbone.hidden_dim // backbone.num_heads

    def empty_caches(self, backbone, batch_size, length, encoder_length, dtype):
        """(self-attention cache (B, layers, 2, length, heads, head dim),
        cross-attention cache (B, layers, 2, encoder_length, heads, head dim))."""
        shape = (batch_size, backbone.num_layers, 2)
        heads = self.cache_heads(backbone)
        return (
            ops.zeros((*shape, length, *heads), dtype=dtype),
            ops.zeros((*shape, encoder_length, *heads), dtype=dtype),
        )

    def encoder(self, backbone, x, padding_mask):
        """Embeddings (B, L, D), padding mask (B, L) -> encoder output (B, L, D)."""
        positions = backbone.encoder_position_embedding(x)
        x = backbone.encoder_embeddings_layer_norm(backbone.encoder_embeddings_add((x, positions)))
        for layer in backbone.encoder_transformer_layers:
            x = layer(x, padding_mask=ops.cast(padding_mask, "bool"), training=False)
        return x

    def decoder(
        self, backbone, token_ids, encoder_output, encoder_mask, caches=None, index=0, cross_index=0
    ):
        """Token ids (B, n) at positions index.. -> (logits (B, n, V), caches).

        Without caches: the whole decoder sequence (teacher forcing; no
        cache update, which TensorFlow cannot differentiate under XLA).
        With caches (self, cross): `cross_index` 0 fills the cross-attention
        cache from `encoder_output`, None reuses it.
        """
        x = backbone.token_embedding(token_ids)
        positions = backbone.decoder_position_embedding(x, start_index=index)
        x = backbone.decoder_embeddings_add((x, positions))
        x = backbone.decoder_embeddings_layer_norm(x)
        new_caches = []
        for i, layer in enumerate(backbone.decoder_transformer_layers):
            x = layer(
                decoder_sequence=x,
                encoder_sequence=encoder_output,
                encoder_padding_mask=ops.cast(encoder_mask, "bool"),
                training=False,
                **_layer_caches(caches, i, index, cross_index),
            )
            if caches is not None:
                x, *layer_caches = x
                new_caches.append(layer_caches)
        logits = backbone.token_embedding(x, reverse=True)
        return logits, _stack_caches(caches, new_caches, cross_index)


class T5Hooks(Seq2SeqHooks):
    """T5: relative position bias from the first layer of each stack, final
    RMS norms, no start token (the decoder starts from "<pad>"), and the
    tied output projection scaled by hidden_dim ** -0.5."""

    def prompt_start_ids(self, tokenizer):
        return []

    def decoder_start_ids(self, tokenizer):
        return [tokenizer.pad_token_id]

    def cache_heads(self, backbone):
        return (
            backbone.num_heads,
            backbone.key_value_dim or backbone.hidden_dim // backbone.num_heads,
        )

    def encoder(self, backbone, x, padding_mask):
        attention_mask = ops.cast(padding_mask, "int32")[:, None, :]
        position_bias = None
        for layer in backbone.encoder_transformer_layers:
            x, position_bias = layer(
                x,
                attention_mask=attention_mask,
                position_bias=position_bias,
                use_causal_mask=False,
                training=False,
            )
        return backbone.encoder_layer_norm(x)

    def decoder(
        self, backbone, token_ids, encoder_output, encoder_mask, caches=None, index=0, cross_index=0
    ):
        x = backbone.token_embedding(token_ids)
        encoder_attention_mask = ops.cast(encoder_mask, "int32")[:, None, :]
        position_bias = None
        new_caches = []
        for i, layer in enumerate(backbone.decoder_transformer_layers):
            x, position_bias, *layer_caches = layer(
                x,
                position_bias=position_bias,
                encoder_hidden_states=encoder_output,
                encoder_attention_mask=encoder_attention_mask,
                use_causal_mask=True,
                training=False,
                **_layer_caches(caches, i, index, cross_index),
            )
            new_caches.append(layer_caches)
        x = backbone.decoder_layer_norm(x)
        if backbone.tie_embedding_weights:
            x = x * ops.cast(backbone.hidden_dim**-0.5, x.dtype)
        logits = backbone.token_embedding(x, reverse=True)
        return logits, _stack_caches(caches, new_caches, cross_index)


def _layer_caches(caches, layer_index, index, cross_index):
    """The cache keywords of decoder layer `layer_index` (none without caches)."""
    if caches is None:
        return {}
    self_cache, cross_cache = caches
    return dict(
        self_attention_cache=self_cache[:, layer_index],
        self_attention_cache_update_index=index,
        cross_attention_cache=cross_cache[:, layer_index],
        cross_attention_cache_update_index=cross_index,
    )


def _stack_caches(caches, layer_caches, cross_index):
    """Per-layer [(self, cross), ...] -> (self, cross) caches (B, layers, ...);
    the cross-attention cache is kept when it was reused (`cross_index` None)."""
    if caches is None:
        return None
    self_cache = ops.stack([self_layer for self_layer, _ in layer_caches], axis=1)
    if cross_index is None:
        return self_cache, caches[1]
    return self_cache, ops.stack([cross_layer for _, cross_layer in layer_caches], axis=1)


LM_FAMILIES = {
    keras_hub.models.GemmaBackbone: GemmaHooks(),
    keras_hub.models.LlamaBackbone: DecoderHooks(),
    keras_hub.models.QwenBackbone: DecoderHooks(),
    keras_hub.models.GPT2Backbone: GPT2Hooks(),
    keras_hub.models.BartBackbone: Seq2SeqHooks(),
    keras_hub.models.T5Backbone: T5Hooks(),
}


def lm_hooks(language_model):
    for backbone_cls, hooks in LM_FAMILIES.items():
        if isinstance(language_model.backbone, backbone_cls):
            return hooks
    raise ValueError(
        f"SpeechLanguageModel: no hooks for {type(language_model.backbone).__name__}; "
        f"supported LM backbones: {[cls.__name__ for cls in LM_FAMILIES]}"
    )


def load_language_model(preset):
    """The keras-hub `Seq2SeqLM` of an encoder-decoder backbone preset
    (its `config.json` names the backbone class), else the `CausalLM`."""
    task_cls = keras_hub.models.CausalLM
    config_path = os.path.join(os.fspath(preset), "config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as file:
            backbone_cls = keras.saving.get_registered_object(json.load(file)["registered_name"])
        hooks = LM_FAMILIES.get(backbone_cls)
        if hooks is not None and hooks.encoder_decoder:
            task_cls = keras_hub.models.Seq2SeqLM
    return task_cls.from_preset(preset)


def stack_frames(sequence, padding_mask, factor):
    """Concatenates `factor` consecutive frames.

    (B, T, D), (B, T) -> (B, ceil(T / factor), factor * D), (B, ceil(T / factor)).
    Padded frames are zeroed first (by a select, so NaN padding cannot leak);
    a stacked frame is real when its first frame is.
    """
    sequence = ops.where(padding_mask[..., None] > 0, sequence, ops.zeros_like(sequence))
    length = ops.shape(sequence)[1]
    extra = (factor - length % factor) % factor
    sequence = ops.pad(sequence, [[0, 0], [0, extra], [0, 0]])
    padding_mask = ops.pad(padding_mask, [[0, 0], [0, extra]])
    batch, dim = ops.shape(sequence)[0], sequence.shape[-1]
    stacked = ops.reshape(sequence, (batch, -1, factor * dim))
    return stacked, padding_mask[:, ::factor]


@keras.saving.register_keras_serializable(package="keras_slam")
class SpeechAdapter(keras.layers.Layer):
    """Speech encodings -> LM input embeddings (the SLM's only trained part).

    frames (B, T, D_speech), mask (B, T)
      -> `stack_frames(stack_frames)` -> Dense(hidden_dim)
      -> `num_layers` keras-hub TransformerEncoder layers (padding-masked)
      -> Dense(output_dim)  -> (B, ceil(T / stack_frames), output_dim), mask

    `num_layers=0` makes it an MLP (Dense, gelu, Dense). `blank_logit`:
    also a Dense(1) "blank_projection" of the output (`blank_logits`), the
    CTC blank of `SpeechLanguageModel`'s auxiliary loss.
    """

    def __init__(
        self,
        output_dim,
        hidden_dim=256,
        stack_frames=4,
        num_layers=1,
        num_heads=4,
        intermediate_dim=None,
        dropout=0.0,
        blank_logit=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.blank_logit = blank_logit
        self.hidden_dim = hidden_dim
        self.stack_frames = stack_frames
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim or 4 * hidden_dim
        self.dropout = dropout
        activation = None if num_layers else "gelu"
        self.input_projection = FlatDense(
            hidden_dim, activation=activation, dtype=self.dtype_policy, name="input_projection"
        )
        self.transformer_layers = [
            keras_hub.layers.TransformerEncoder(
                self.intermediate_dim,
                num_heads,
                dropout=dropout,
                activation="gelu",
                normalize_first=True,
                dtype=self.dtype_policy,
                name=f"transformer_layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.output_projection = FlatDense(
            output_dim, dtype=self.dtype_policy, name="output_projection"
        )
        self.blank_projection = None
        if blank_logit:
            self.blank_projection = FlatDense(1, dtype=self.dtype_policy, name="blank_projection")

    def build(self, sequence_shape, padding_mask_shape=None):
        stacked = (sequence_shape[0], None, self.stack_frames * sequence_shape[-1])
        self.input_projection.build(stacked)
        hidden = (sequence_shape[0], None, self.hidden_dim)
        for layer in self.transformer_layers:
            layer.build(hidden)
        self.output_projection.build(hidden)
        if self.blank_projection is not None:
            self.blank_projection.build((sequence_shape[0], None, self.output_dim))
        self.built = True

    def call(self, sequence, padding_mask, training=None):
        x, padding_mask = stack_frames(sequence, padding_mask, self.stack_frames)
        x = self.input_projection(x)
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=padding_mask > 0, training=training)
        return self.output_projection(x), padding_mask

    def blank_logits(self, embeddings):
        """(B, S, output_dim) adapter outputs -> (B, S, 1) CTC blank logits."""
        return self.blank_projection(embeddings)

    def get_config(self):
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            hidden_dim=self.hidden_dim,
            stack_frames=self.stack_frames,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            blank_logit=self.blank_logit,
        )
        return config


def pack_segments(segments):
    """Concatenates per-item segments without gaps.

    segments: [(x (B, L_k, D), padding_mask (B, L_k)), ...], each segment's
    real positions first.
    Returns: packed (B, sum L_k, D), padding mask (B, sum L_k), and each
    segment's start per item [(B,), ...].
    """
    lengths = [ops.sum(ops.cast(mask > 0, "int32"), axis=1) for _, mask in segments]
    total = sum(ops.shape(x)[1] for x, _ in segments)
    positions = ops.arange(total, dtype="int32")[None, :]
    start, starts = ops.zeros_like(lengths[0]), []
    packed = packed_mask = None
    for (x, _), length in zip(segments, lengths):
        offset = positions - start[:, None]
        inside = (offset >= 0) & (offset < length[:, None])
        index = ops.clip(offset, 0, ops.shape(x)[1] - 1)
        gathered = ops.take_along_axis(x, index[..., None], axis=1)
        if packed is None:
            packed, packed_mask = ops.zeros_like(gathered), ops.zeros_like(inside)
        packed = ops.where(inside[..., None], gathered, packed)
        packed_mask = packed_mask | inside
        starts.append(start)
        start = start + length
    return packed, packed_mask, starts


@keras.saving.register_keras_serializable(package="keras_slam")
class SpeechLanguageModel(SubclassedTask):
    """Frozen speech encoder + trained `SpeechAdapter` + frozen keras-hub LM.

    Args:
        speech_encoder: `SLAMBackbone` or `SpeechEncoder` (frozen here).
        language_model: a keras-hub `CausalLM` or `Seq2SeqLM` of a family
            in `LM_FAMILIES`,
            with its preprocessor (tokenizer) for `generate` (frozen here).
        adapter: `SpeechAdapter` arguments (dict) except `output_dim`, which
            is the LM's hidden width.
        use_shared_encoder: run a SLAM backbone's shared encoder (default:
            whenever it has one).
        audio_converter: the speech front end (e.g. `LogMelSpectrogram`)
            for `generate` on waveforms.
        speech_encoder_preset, language_model_preset: where the frozen
            models came from (set by `from_frozen_presets`); needed by
            `save_to_preset(..., reference_frozen=True)`.
        context_template: the prompt's optional context slot after the
            instruction, with a "{context}" field (saved in the config);
            prompts without a context leave it out.
        ctc_loss_weight: weight of the CTC auxiliary on the adapter output
            (module docstring); 0 (default): none, and no blank projection.

    Inputs (dict): speech_features (B, T, F), speech_padding_mask (B, T)
    (or the frozen encoder's output instead, `frozen_encodings`:
    speech_encodings (B, T', D_speech), speech_encodings_padding_mask
    (B, T')), prompt_token_ids / prompt_padding_mask (B, P), response_token_ids /
    response_padding_mask (B, R) (ids left-aligned, masks 1 = real; prompts
    with or without a context from `tokenize_prompts(instructions, contexts)`).
    Outputs: {"logits" (B, R, V): row r predicts response token r,
    "padding_mask" (B, R)} (+ "ctc_logits" (B, S, V + 1), "ctc_padding_mask"
    (B, S) with the CTC auxiliary). Labels y: {"response_token_ids",
    "response_padding_mask"} (+ "transcript_token_ids",
    "transcript_padding_mask" (B, U) for the CTC auxiliary)
    (`split_instruction_batch`).
    """

    def __init__(
        self,
        speech_encoder,
        language_model,
        adapter=None,
        use_shared_encoder=None,
        audio_converter=None,
        speech_encoder_preset=None,
        language_model_preset=None,
        context_template=CONTEXT_TEMPLATE,
        ctc_loss_weight=0.0,
        **kwargs,
    ):
        if "{context}" not in context_template:
            raise ValueError(f"context_template {context_template!r} has no {{context}} field")
        speech_encoder.trainable = False
        language_model.trainable = False
        if use_shared_encoder is None:
            use_shared_encoder = hasattr(speech_encoder, "shared_encoder")
        adapter_config = dict(adapter or {})
        super().__init__(compile=False, **kwargs)
        self.hooks = lm_hooks(language_model)
        # === Layers ===
        self.speech_encoder = speech_encoder
        self.language_model = language_model
        self.audio_converter = audio_converter
        self.adapter = SpeechAdapter(
            output_dim=language_model.backbone.hidden_dim,
            **adapter_config,
            blank_logit=ctc_loss_weight > 0,
            dtype=language_model.backbone.dtype_policy,
            name="adapter",
        )
        encoded_shape, _ = speech_encoder.speech_tower.compute_output_shape(
            (None, None, speech_encoder.feature_dim)
        )
        self.adapter.build(encoded_shape)
        # Every part is built: `load_weights` (checkpoint resume) needs no call first.
        self.built = True
        self._generate_functions = {}  # (max_new_tokens, eager) -> compiled greedy step
        # === Config ===
        self.adapter_config = adapter_config
        self.use_shared_encoder = use_shared_encoder
        self.speech_encoder_preset = speech_encoder_preset
        self.language_model_preset = language_model_preset
        self.context_template = context_template
        self.ctc_loss_weight = ctc_loss_weight

    @classmethod
    def from_frozen_presets(cls, speech_encoder_preset, language_model_preset, **kwargs):
        """Builds the task around a speech-encoder preset (any keras-slam
        backbone preset directory or name) and a keras-hub LM preset
        directory (`recipes/lm.py`'s, or a Gemma / BART / T5 ... preset on
        disk)."""
        return cls(
            preset_utils.from_preset(keras_hub.models.Backbone, os.fspath(speech_encoder_preset)),
            load_language_model(language_model_preset),
            speech_encoder_preset=os.fspath(speech_encoder_preset),
            language_model_preset=os.fspath(language_model_preset),
            **kwargs,
        )

    @classmethod
    def get_layout_map(
        cls,
        device_mesh,
        language_model_backbone_cls=keras_hub.models.GemmaBackbone,
        model_parallel_dim_name="model",
        data_parallel_dim_name="batch",
    ):
        """`keras.distribution.LayoutMap` of the SLM: the SLAM rules (frozen
        speech encoder), the adapter's and the LM backbone class's own
        keras-hub `get_layout_map` (Gemma, Llama, Qwen; keras-hub has none
        for GPT-2, BART and T5, whose weights stay replicated).

        Variable paths do not name the model that holds them, so a SLAM
        backbone's text `token_embedding/embeddings` (unused by the SLM)
        takes the LM's rule.
        """
        model, data = model_parallel_dim_name, data_parallel_dim_name
        result = layout_map.get_layout_map(device_mesh, model, data)
        for pattern, axes in adapter_layout_rules(model, data).items():
            result[pattern] = axes
        if hasattr(language_model_backbone_cls, "get_layout_map"):
            lm_map = language_model_backbone_cls.get_layout_map(
                device_mesh, model_parallel_dim_name=model, data_parallel_dim_name=data
            )
            for pattern in lm_map:
                result[pattern] = lm_map[pattern].axes
        return result

    # --- forward ----------------------------------------------------------

    def frozen_encodings(self, speech_features, speech_padding_mask):
        """The frozen encoder's output: (B, T', D_speech), (B, T') mask.

        It never changes while the adapter trains, so a recipe can compute
        it once per utterance and train on it (`speech_encodings` inputs).
        """
        return encode_speech(
            self.speech_encoder,
            speech_features,
            speech_padding_mask,
            self.use_shared_encoder,
            training=False,
        )

    def encode(self, speech_features, speech_padding_mask):
        """Frozen encoder + adapter -> (B, S, D_lm) embeddings, (B, S) mask."""
        return self.adapter(*self.frozen_encodings(speech_features, speech_padding_mask))

    def embed_tokens(self, token_ids):
        return self.hooks.embed(self.language_model.backbone, token_ids)

    def call(self, inputs, training=None):
        if "speech_encodings" in inputs:
            speech, speech_mask = self.adapter(
                inputs["speech_encodings"], inputs["speech_encodings_padding_mask"]
            )
        else:
            speech, speech_mask = self.encode(
                inputs["speech_features"], inputs["speech_padding_mask"]
            )
        response_mask = inputs["response_padding_mask"]
        prompt = (self.embed_tokens(inputs["prompt_token_ids"]), inputs["prompt_padding_mask"])
        response_logits = (
            self._seq2seq_logits if self.hooks.encoder_decoder else self._decoder_only_logits
        )
        logits = response_logits(
            prompt, (speech, speech_mask), inputs["response_token_ids"], response_mask
        )
        outputs = {"logits": logits, "padding_mask": response_mask}
        if self.ctc_loss_weight:
            outputs["ctc_logits"] = self.ctc_logits(speech)
            outputs["ctc_padding_mask"] = speech_mask
        return outputs

    def ctc_logits(self, speech):
        """Adapted speech (B, S, D_lm) -> CTC logits (B, S, V + 1): the frozen
        LM's tied token embedding as output projection, then the blank (V)."""
        tokens = self.language_model.backbone.token_embedding(speech, reverse=True)
        blank = ops.cast(self.adapter.blank_logits(speech), tokens.dtype)
        return ops.concatenate([tokens, blank], axis=-1)

    def _decoder_only_logits(self, prompt, speech, response_ids, response_mask):
        """[prompt | speech | response] through the decoder -> (B, R, V)."""
        backbone = self.language_model.backbone
        packed, packed_mask, starts = pack_segments(
            [prompt, speech, (self.embed_tokens(response_ids), response_mask)]
        )
        hidden = self.hooks.decoder(backbone, packed, packed_mask)
        # Response token r is predicted at the position just before it.
        num_responses = ops.shape(response_ids)[1]
        positions = starts[2][:, None] - 1 + ops.arange(num_responses, dtype="int32")[None, :]
        # An item without prompt and speech (batch filler) reads position 0.
        positions = ops.maximum(positions, 0)
        hidden = ops.take_along_axis(hidden, positions[..., None], axis=1)
        return backbone.token_embedding(hidden, reverse=True)

    def _seq2seq_logits(self, prompt, speech, response_ids, response_mask):
        """[prompt | speech] through the encoder; [start | response] through
        the decoder -> (B, R, V). Padding after a response comes causally
        after every real position, so it needs no mask."""
        backbone = self.language_model.backbone
        encoder_input, encoder_mask, _ = pack_segments([prompt, speech])
        encoder_output = self.hooks.encoder(backbone, encoder_input, encoder_mask)
        start_ids = self.decoder_start_ids(ops.shape(response_ids)[0])
        decoder_ids = ops.concatenate([start_ids, ops.cast(response_ids, "int32")], axis=1)
        logits, _ = self.hooks.decoder(backbone, decoder_ids, encoder_output, encoder_mask)
        # Response token r is predicted at decoder position len(start) - 1 + r.
        return logits[:, ops.shape(start_ids)[1] - 1 : -1]

    def decoder_start_ids(self, batch_size):
        """The encoder-decoder LM's decoder start ids, (B, S0) int32."""
        start = self.hooks.decoder_start_ids(self.language_model.preprocessor.tokenizer)
        return ops.tile(ops.convert_to_tensor([start], dtype="int32"), (batch_size, 1))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean cross-entropy per response token (float32) [+ the weighted
        CTC auxiliary, when y holds transcripts], scaled by 1 / replicas
        under tf.distribute as Keras' own losses."""
        loss = response_loss(y["response_token_ids"], y["response_padding_mask"], y_pred["logits"])
        if self.ctc_loss_weight and "transcript_token_ids" in y:
            loss = loss + self.ctc_loss_weight * adapter_ctc_loss(
                y["transcript_token_ids"],
                y["transcript_padding_mask"],
                y_pred["ctc_logits"],
                y_pred["ctc_padding_mask"],
            )
        return scale_loss_for_distribution(loss)

    def compile(self, optimizer="adam", **kwargs):
        """Keras `compile` with an optimizer that skips non-finite steps and a
        "loss" that averages the finite ones, as every keras-slam task (the
        recipes count the skips)."""
        super().compile(optimizer=skip_non_finite_steps(optimizer), **kwargs)
        log_finite_losses(self)

    # --- generation -------------------------------------------------------

    def generate(self, speech, instructions, max_new_tokens=32, context=None):
        """Greedy responses to `instructions` about `speech`.

        Args:
            speech: a feature batch {"speech_features", "speech_padding_mask"},
                or a list of waveforms (needs `audio_converter`).
            instructions: one string per item (or one for all).
            max_new_tokens: response tokens at most (the "<eos>" ends one).
            context: None, one context text for all items, or one per item
                (None for an item without one); fills `context_template`.
        Returns: list of response strings.
        """
        if not isinstance(speech, dict):
            speech = self._features(speech)
        batch_size = int(np.shape(speech["speech_features"])[0])
        instructions = _per_item(instructions, batch_size, "instructions")
        contexts = None if context is None else _per_item(context, batch_size, "contexts")
        prompt_ids, prompt_mask = self.tokenize_prompts(instructions, contexts)
        token_ids = self.generate_token_ids(
            speech["speech_features"],
            speech["speech_padding_mask"],
            prompt_ids,
            prompt_mask,
            max_new_tokens,
        )
        return self.detokenize(token_ids)

    def generate_token_ids(
        self, speech_features, speech_padding_mask, prompt_ids, prompt_mask, max_new_tokens
    ):
        """Greedy response ids (B, max_new_tokens), "<eos>" and after set to pad.

        Compiled once per input shape and `max_new_tokens`
        (`inference_function`): pad batches to a few shapes to reuse it.
        """
        inputs = (speech_features, speech_padding_mask, prompt_ids, prompt_mask)
        inputs = tuple(ops.convert_to_tensor(x) for x in inputs)
        response = ops.convert_to_numpy(self._generate_function(max_new_tokens)(inputs))
        tokenizer = self.language_model.preprocessor.tokenizer
        ended = np.cumsum(response == tokenizer.end_token_id, axis=1) > 0
        return np.where(ended, tokenizer.pad_token_id, response)

    def _generate_function(self, max_new_tokens):
        """The compiled greedy step for `max_new_tokens`, made once."""
        key = (max_new_tokens, self.run_eagerly)
        if key not in self._generate_functions:

            def generate_step(inputs):
                speech_features, speech_padding_mask, prompt_ids, prompt_mask = inputs
                speech, speech_mask = self.encode(speech_features, speech_padding_mask)
                prefix, prefix_mask, _ = pack_segments(
                    [(self.embed_tokens(prompt_ids), prompt_mask), (speech, speech_mask)]
                )
                greedy = (
                    self._greedy_seq2seq
                    if self.hooks.encoder_decoder
                    else self._greedy_decoder_only
                )
                return greedy(prefix, prefix_mask, max_new_tokens)

            variables = self.trainable_variables + self.non_trainable_variables
            self._generate_functions[key] = inference_function(
                generate_step, variables, self.run_eagerly
            )
        return self._generate_functions[key]

    def _greedy_decoder_only(self, prefix, prefix_mask, max_new_tokens):
        """Packed prefix (B, L, D) -> response ids (B, max_new_tokens).

        The prefix is right-aligned (each item's last prefix column is L - 1),
        so one cached pass reads every prefix and the sampler runs
        `max_new_tokens` steps for the whole batch, as `CausalLM.generate`
        after `_build_cache`. A key mask hides the left padding; positions
        count from each item's first real column (absolute embeddings), and
        RoPE attention sees only position differences, which the shift keeps.
        """
        backbone = self.language_model.backbone
        batch_size, length = ops.shape(prefix)[0], ops.shape(prefix)[1]
        total = length + max_new_tokens
        shift = length - ops.sum(ops.cast(prefix_mask, "int32"), axis=1)
        positions = ops.arange(total, dtype="int32")[None, :] - shift[:, None]  # (B, total)
        key_mask = positions >= 0
        source = ops.clip(positions[:, :length], 0, length - 1)
        prefix = ops.take_along_axis(prefix, source[..., None], axis=1)
        prefix = ops.where(key_mask[:, :length, None], prefix, ops.zeros_like(prefix))
        cache = self.hooks.empty_cache(backbone, batch_size, total, prefix.dtype)
        _, cache = self.hooks.decoder_with_cache(
            backbone, prefix, cache, 0, positions[:, :length], key_mask
        )
        last_prefix = prefix[:, -1:]

        def next_logits(token_ids, cache, index):
            # Feeds column index - 1: the last prefix column or the last token.
            previous = index - 1
            token = ops.slice(token_ids, [0, previous], [batch_size, 1])
            embedded = ops.where(previous < length, last_prefix, self.embed_tokens(token))
            column_positions = ops.slice(positions, [0, previous], [batch_size, 1])
            hidden, cache = self.hooks.decoder_with_cache(
                backbone, embedded, cache, previous, column_positions, key_mask
            )
            logits = backbone.token_embedding(hidden, reverse=True)
            return ops.squeeze(logits, 1), ops.squeeze(hidden, 1), cache

        token_ids = ops.full((batch_size, total), self._filler_id(), dtype="int32")
        in_prefix = ops.tile(ops.arange(total)[None, :] < length, (batch_size, 1))
        token_ids = self._sample(next_logits, token_ids, cache, length, in_prefix)
        return token_ids[:, length:]

    def _greedy_seq2seq(self, prefix, prefix_mask, max_new_tokens):
        """Encoder input (B, L, D) -> response ids (B, max_new_tokens)."""
        backbone = self.language_model.backbone
        encoder_output = self.hooks.encoder(backbone, prefix, prefix_mask)
        batch_size = ops.shape(prefix)[0]
        start_ids = self.decoder_start_ids(batch_size)
        num_start = ops.shape(start_ids)[1]
        caches = self.hooks.empty_caches(
            backbone,
            batch_size,
            num_start + max_new_tokens,
            ops.shape(prefix)[1],
            encoder_output.dtype,
        )
        _, caches = self.hooks.decoder(
            backbone, start_ids, encoder_output, prefix_mask, caches, 0, 0
        )

        def next_logits(token_ids, caches, index):
            token = ops.slice(token_ids, [0, index - 1], [batch_size, 1])
            logits, caches = self.hooks.decoder(
                backbone, token, encoder_output, prefix_mask, caches, index - 1, None
            )
            return ops.squeeze(logits, 1), None, caches

        filler = ops.full((batch_size, max_new_tokens), self._filler_id(), dtype="int32")
        token_ids = ops.concatenate([start_ids, filler], axis=1)
        in_start = ops.arange(num_start + max_new_tokens)[None, :] < num_start
        in_start = ops.tile(in_start, (batch_size, 1))
        token_ids = self._sample(next_logits, token_ids, caches, num_start, in_start)
        return token_ids[:, num_start:]

    def _filler_id(self):
        """Id of the positions still to generate: the sampler stops once every
        row holds a stop token outside the mask, so they hold any other id (a
        tokenizer may pad with its end token, as tiny GPT-2 / Qwen ones do)."""
        end_id = self.language_model.preprocessor.tokenizer.end_token_id
        return (end_id + 1) % self.language_model.backbone.vocabulary_size

    def _sample(self, next_logits, token_ids, cache, index, mask):
        """keras-hub's greedy sampler from `index`, stopping at "<eos>"."""
        end_id = self.language_model.preprocessor.tokenizer.end_token_id
        return keras_hub.samplers.GreedySampler()(
            next=next_logits,
            prompt=token_ids,
            cache=cache,
            index=index,
            mask=mask,
            stop_token_ids=(end_id,),
            model=self,
        )

    # --- text -------------------------------------------------------------

    def prompt_ids(self, instruction, context=None):
        """The LM's start ids (a decoder-only LM's start token, when it has
        one; BART's "<s>"; none for T5) + the instruction's ids [+ the ids
        of `context_template` filled with `context`, unless it is None]."""
        tokenizer = self.language_model.preprocessor.tokenizer
        ids = self.hooks.prompt_start_ids(tokenizer) + _ids(tokenizer, instruction)
        if context is not None:
            ids += _ids(tokenizer, self.context_template.format(context=context))
        return ids

    def response_ids(self, response):
        """The response's ids + "<eos>" (list of int)."""
        tokenizer = self.language_model.preprocessor.tokenizer
        return _ids(tokenizer, response) + [tokenizer.end_token_id]

    def transcript_ids(self, transcript):
        """The transcript's LM ids, the CTC auxiliary's labels (list of int)."""
        return _ids(self.language_model.preprocessor.tokenizer, transcript)

    def tokenize_prompts(self, instructions, contexts=None):
        """Instructions (B strings) [+ contexts: B strings or None] ->
        prompt ids (B, P) int32, mask (B, P)."""
        contexts = [None] * len(instructions) if contexts is None else contexts
        if len(contexts) != len(instructions):
            raise ValueError(f"{len(contexts)} contexts for {len(instructions)} instructions")
        pad_id = self.language_model.preprocessor.tokenizer.pad_token_id
        rows = [np.array(self.prompt_ids(*pair), "int32") for pair in zip(instructions, contexts)]
        return pad_rows(rows, None, pad_id)

    def tokenize_responses(self, responses):
        """Strings -> response ids (B, R) int32, mask (B, R)."""
        pad_id = self.language_model.preprocessor.tokenizer.pad_token_id
        return pad_rows([np.array(self.response_ids(t), "int32") for t in responses], None, pad_id)

    def detokenize(self, token_ids):
        tokenizer = self.language_model.preprocessor.tokenizer
        texts = []
        for row in token_ids:
            # Only the padding after the response goes: a pad id can be a
            # real token too (GPT-2 and Qwen presets pad with id 0, "!").
            row = [int(i) for i in row]
            while row and row[-1] == tokenizer.pad_token_id:
                row.pop()
            texts.append(str(keras.ops.convert_to_numpy(tokenizer.detokenize(row))))
        return texts

    def _features(self, waveforms):
        if self.audio_converter is None:
            raise ValueError(
                "generate: waveforms need `audio_converter` (the speech front end); "
                "or pass a feature batch"
            )
        return SpeechRecognizerPreprocessor(audio_converter=self.audio_converter)(list(waveforms))

    # --- presets ----------------------------------------------------------

    def get_config(self):
        return {
            "adapter": self.adapter_config,
            "use_shared_encoder": self.use_shared_encoder,
            "audio_converter": (
                None
                if self.audio_converter is None
                else keras.saving.serialize_keras_object(self.audio_converter)
            ),
            "context_template": self.context_template,
            "ctc_loss_weight": self.ctc_loss_weight,
            "name": self.name,
        }

    def save_to_preset(self, preset_dir, reference_frozen=False):
        """Saves the adapter and the frozen models (copied, or referenced by path).

        Args:
            preset_dir: output directory.
            reference_frozen: store the frozen presets' paths
                (`speech_encoder_preset`, `language_model_preset`) instead
                of copies; the preset then needs them at load time.
        """
        os.makedirs(preset_dir, exist_ok=True)
        if reference_frozen:
            missing = [
                name
                for name in ("speech_encoder_preset", "language_model_preset")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"save_to_preset(reference_frozen=True): {missing} unknown; build the "
                    "task with `from_frozen_presets`, or save copies (reference_frozen=False)"
                )
            frozen = {
                "speech_encoder": os.path.abspath(self.speech_encoder_preset),
                "language_model": os.path.abspath(self.language_model_preset),
            }
        else:
            self.speech_encoder.save_to_preset(os.path.join(preset_dir, SPEECH_ENCODER_DIR))
            self.language_model.save_to_preset(os.path.join(preset_dir, LANGUAGE_MODEL_DIR))
            frozen = {"speech_encoder": SPEECH_ENCODER_DIR, "language_model": LANGUAGE_MODEL_DIR}
        config = {"class_name": type(self).__name__, "config": self.get_config(), **frozen}
        with open(os.path.join(preset_dir, CONFIG_FILE), "w", encoding="utf-8") as file:
            json.dump(config, file, indent=2)
        with h5py.File(os.path.join(preset_dir, ADAPTER_WEIGHTS_FILE), "w") as file:
            for variable in self.adapter.weights:
                file[variable.path] = keras.ops.convert_to_numpy(variable)

    @classmethod
    def from_preset(cls, preset_dir):
        """Loads a `save_to_preset` directory (the frozen presets it names)."""
        config_path = os.path.join(preset_dir, CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{preset_dir}: no {CONFIG_FILE} (not an SLM preset)")
        with open(config_path, encoding="utf-8") as file:
            saved = json.load(file)
        if saved.get("class_name") != cls.__name__:
            raise ValueError(f"{config_path}: holds {saved.get('class_name')}, not {cls.__name__}")
        config = dict(saved["config"])
        if config.get("audio_converter") is not None:
            config["audio_converter"] = keras.saving.deserialize_keras_object(
                config["audio_converter"]
            )
        paths = {
            key: os.path.join(preset_dir, saved[key])  # absolute paths stay as they are
            for key in ("speech_encoder", "language_model")
        }
        for key, path in paths.items():
            if not os.path.isdir(path):
                raise FileNotFoundError(f"{config_path}: the {key} preset {path} does not exist")
        model = cls.from_frozen_presets(paths["speech_encoder"], paths["language_model"], **config)
        model.load_adapter_weights(os.path.join(preset_dir, ADAPTER_WEIGHTS_FILE))
        return model

    def load_adapter_weights(self, path):
        """Adapter weights from `path`, matched by variable path."""
        with h5py.File(path, "r") as file:
            for variable in self.adapter.weights:
                if variable.path not in file:
                    raise ValueError(f"{path}: no weights for {variable.path}")
                value = file[variable.path][()]
                if value.shape != tuple(variable.shape):
                    raise ValueError(
                        f"{path}: {variable.path} has shape {value.shape}, "
                        f"the adapter expects {tuple(variable.shape)}"
                    )
                variable.assign(value)


def adapter_layout_rules(model="model", data="batch"):
    """{variable path regex: axes} of the adapter (its `output_projection`
    is a SLAM rule) and of an untied LM output table, as
    `layout_map.layout_rules`: Megatron pairs, the other axis over data."""
    layer = "adapter/transformer_layer_\\d+"
    return {
        "adapter/input_projection/kernel": (data, model),
        f"{layer}/self_attention_layer/(query|key|value)/kernel": (data, model, None),
        f"{layer}/self_attention_layer/(query|key|value)/bias": (model, None),
        f"{layer}/self_attention_layer/attention_output/kernel": (model, None, data),
        f"{layer}/feedforward_intermediate_dense/kernel": (data, model),
        f"{layer}/feedforward_intermediate_dense/bias": (model,),
        f"{layer}/feedforward_output_dense/kernel": (model, data),
        # (D, vocabulary): the transpose of keras-hub's (model, data) table.
        "token_embedding/reverse_embeddings": (data, model),
    }


def response_loss(response_token_ids, response_padding_mask, logits):
    """Cross-entropy per real response token, mean; float32 (no log(0))."""
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    ids = ops.cast(response_token_ids, "int32")
    picked = ops.squeeze(ops.take_along_axis(log_probs, ids[..., None], axis=-1), -1)
    mask = ops.cast(response_padding_mask, "float32")
    return -ops.sum(picked * mask) / ops.maximum(ops.sum(mask), 1.0)


def adapter_ctc_loss(transcript_ids, transcript_padding_mask, ctc_logits, ctc_padding_mask):
    """The CTC auxiliary: CTC / transcript length, mean over items; the blank
    is the last class of `ctc_logits` (B, S, V + 1). float32."""
    return ctc_loss(
        transcript_ids,
        transcript_padding_mask,
        ctc_logits,
        ctc_padding_mask,
        blank_index=ctc_logits.shape[-1] - 1,
        divide_by_target_length=True,
    )


LABEL_KEYS = (
    "response_token_ids",
    "response_padding_mask",
    "transcript_token_ids",
    "transcript_padding_mask",
)


def split_instruction_batch(batch):
    """Instruction batch dict -> (x, y) for `fit` (y: the response labels,
    and the transcripts of the CTC auxiliary when the batch has them)."""
    return dict(batch), {k: batch[k] for k in LABEL_KEYS if k in batch}


def _per_item(texts, batch_size, what):
    """One string for all items, or a list of `batch_size` -> list."""
    if isinstance(texts, str):
        return [texts] * batch_size
    if len(texts) != batch_size:
        raise ValueError(f"generate: {len(texts)} {what} for {batch_size} speech items")
    return list(texts)


def _ids(tokenizer, text):
    return [int(i) for i in keras.ops.convert_to_numpy(tokenizer(text))]
