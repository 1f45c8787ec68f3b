"""Hugging Face `Wav2Vec2Bert` (w2v-BERT 2.0) -> keras-slam `SpeechEncoder` preset.

Input: a local directory in the format of `facebook/w2v-bert-2.0`:
`config.json` + `model.safetensors` (or a sharded
`model.safetensors.index.json`), of a `Wav2Vec2BertModel` or a
`Wav2Vec2BertForCTC` (keys under `wav2vec2_bert.` plus `lm_head`).

Output: a keras-hub preset directory (`metadata.json` records
`keras_slam_version`, `"weights": "converted"` and the source checkpoint):

- of a `Wav2Vec2BertForCTC`: a `SpeechRecognizer` task preset (task.json +
  task.weights.h5, config.json + model.weights.h5 for the `SpeechEncoder`,
  preprocessor.json whose audio converter is the front end), read back by
  `SpeechRecognizer.from_preset` through keras-hub's loader. Its CTC head
  is Hugging Face's `lm_head` exactly (`final_dropout` is inactive at
  inference) and its `blank_index` is Hugging Face's `pad_token_id`; the
  tokens of a monolingual vocab.json, ordered by id, are kept in
  `metadata.json["vocabulary"]` (its `|` word delimiter and special tokens
  do not fit the keras-slam tokenizers' reserved ids, so no tokenizer is
  written);
- of a `Wav2Vec2BertModel`: the `SpeechEncoder` backbone preset and
  `audio_converter.json`, the front end.

The front end is a `LogMelSpectrogram` in the w2v-BERT 2.0 configuration
(Hugging Face's `SeamlessM4TFeatureExtractor`).

`is_w2v_bert_checkpoint` / `from_hf_preset` are registered as a preset
source (`keras_slam.utils.preset_utils`), so every keras-slam class's
`from_preset` takes a Hugging Face checkpoint directory or an "hf://"
handle of one, converted on the fly.

config.json is checked before any weight is built; errors name the file
and every bad field: a misspelt field (close to a known one), a wrong type
or value (`conv_depthwise_kernel_size` odd, as Hugging Face requires;
`feature_projection_input_dim` even: the front end stacks 2 frames of
`feature_projection_input_dim / 2` mel bins), `pad_token_id` (the CTC
blank) outside the head's classes, and unsupported options (adapters, the
intermediate FFN before the adapter, rotary positions, activations other
than swish). Options that only matter in training are mapped or dropped:
`hidden_dropout` -> `dropout`, `attention_dropout`, `activation_dropout`;
SpecAugment (`masked_spec_embed`), `layerdrop`, `feat_proj_dropout` and
`conformer_conv_dropout` are not carried over.

`convert_to_preset` writes all or nothing: into a new folder beside
`preset_dir`, renamed to `preset_dir` once complete.
"""

import dataclasses
import difflib
import json
import os
import shutil
import tempfile
import uuid
import warnings

import numpy as np

from keras_slam.layers.conformer import ConformerConfig
from keras_slam.layers.log_mel import W2V_BERT_2_0_FRONTEND, LogMelSpectrogram
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.models.speech_recognizer import SpeechRecognizer
from keras_slam.utils import preset_utils

HF_MODEL_TYPE = "wav2vec2-bert"
HF_CONFIG_FILE = "config.json"
HF_WEIGHTS_FILE = "model.safetensors"
HF_WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
HF_VOCABULARY_FILE = "vocab.json"
HF_PREFIX = "hf://"

# Prefix of the encoder keys in `Wav2Vec2BertForCTC` (and the other heads).
_HEADED_PREFIX = "wav2vec2_bert."
# Keys that only matter in training (SpecAugment's mask vector).
_TRAINING_ONLY_KEYS = ("masked_spec_embed",)

_POSITION_ENCODINGS = {
    "relative_key": "relative_key",
    "relative": "relative_sinusoidal",
    None: "none",
}


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# What a config.json field must be: description -> check.
_KINDS = {
    "a positive integer": lambda v: _is_int(v) and v > 0,
    "a non-negative integer": lambda v: _is_int(v) and v >= 0,
    "an even positive integer": lambda v: _is_int(v) and v > 0 and v % 2 == 0,
    "an odd positive integer": lambda v: _is_int(v) and v > 0 and v % 2 == 1,
    "a number in [0, 1)": lambda v: _is_number(v) and 0 <= v < 1,
    "a positive number": lambda v: _is_number(v) and v > 0,
    "a boolean": lambda v: isinstance(v, bool),
    "a string": lambda v: isinstance(v, str),
    "a string or null": lambda v: v is None or isinstance(v, str),
}

# The config.json fields `convert_config` reads: name -> (default, kind).
# Defaults are Wav2Vec2BertConfig's, dropouts excepted (0: inference).
_FIELDS = {
    "hidden_size": (1024, "a positive integer"),
    "num_hidden_layers": (24, "a positive integer"),
    "num_attention_heads": (16, "a positive integer"),
    "intermediate_size": (4096, "a positive integer"),
    "feature_projection_input_dim": (160, "an even positive integer"),
    # Hugging Face's Wav2Vec2BertConvolutionModule requires it odd.
    "conv_depthwise_kernel_size": (31, "an odd positive integer"),
    "left_max_position_embeddings": (64, "a non-negative integer"),
    "right_max_position_embeddings": (8, "a non-negative integer"),
    "hidden_dropout": (0.0, "a number in [0, 1)"),
    "attention_dropout": (0.0, "a number in [0, 1)"),
    "activation_dropout": (0.0, "a number in [0, 1)"),
    "layer_norm_eps": (1e-5, "a positive number"),
    "hidden_act": ("swish", "a string"),
    "position_embeddings_type": ("relative_key", "a string or null"),
    "add_adapter": (False, "a boolean"),
    "use_intermediate_ffn_before_adapter": (False, "a boolean"),
}

# Read for the CTC head (`_check_ctc_head`).
_CTC_FIELDS = ("pad_token_id", "vocab_size")

# The other fields of Hugging Face's Wav2Vec2BertConfig and its base class
# (model_type, bookkeeping; training, heads and adapters keras-slam does not
# convert). An unknown field close to a known one is taken as misspelt.
_OTHER_HF_FIELDS = (
    "model_type",
    "_name_or_path",
    "architectures",
    "dtype",
    "torch_dtype",
    "transformers_version",
    "id2label",
    "label2id",
    "problem_type",
    "return_dict",
    "output_attentions",
    "output_hidden_states",
    "is_encoder_decoder",
    "tie_encoder_decoder",
    "chunk_size_feed_forward",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "initializer_range",
    "feat_proj_dropout",
    "final_dropout",
    "layerdrop",
    "conformer_conv_dropout",
    "apply_spec_augment",
    "mask_time_prob",
    "mask_time_length",
    "mask_time_min_masks",
    "mask_feature_prob",
    "mask_feature_length",
    "mask_feature_min_masks",
    "ctc_loss_reduction",
    "ctc_zero_infinity",
    "use_weighted_layer_sum",
    "classifier_proj_size",
    "tdnn_dim",
    "tdnn_kernel",
    "tdnn_dilation",
    "xvector_output_dim",
    "output_hidden_size",
    "adapter_act",
    "adapter_kernel_size",
    "adapter_stride",
    "num_adapter_layers",
    "max_source_positions",
    "rotary_embedding_base",
)


def _misspelt_fields(hf_config):
    """Problems for unknown fields close to a known one (typos)."""
    known = set(_FIELDS) | set(_CTC_FIELDS) | set(_OTHER_HF_FIELDS)
    problems = []
    for name in sorted(set(hf_config) - known):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if close:
            problems.append(f"unknown field '{name}' (did you mean '{close[0]}'?)")
    return problems


def _transpose(weight):
    """torch Linear (out, in) -> Dense kernel (in, out)."""
    return weight.T


def _identity(weight):
    return weight


def _read_json(path):
    """The JSON in `path`; a broken file raises an error naming it."""
    with open(path, encoding="utf-8") as file:
        try:
            return json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error


def convert_config(hf_config, config_path=HF_CONFIG_FILE):
    """Hugging Face `Wav2Vec2BertConfig` dict -> `SpeechEncoder` kwargs.

    Args:
        hf_config: the dict of a config.json.
        config_path: where it was read from (named in errors).
    Raises:
        ValueError: naming `config_path` and every misspelt, mistyped or
            unsupported field.
    """
    if not isinstance(hf_config, dict) or hf_config.get("model_type") != HF_MODEL_TYPE:
        found = (
            hf_config.get("model_type") if isinstance(hf_config, dict) else type(hf_config).__name__
        )
        raise ValueError(
            f"{config_path}: not a Wav2Vec2Bert config: model_type is {found!r}, expected {HF_MODEL_TYPE!r}"
        )
    problems = _misspelt_fields(hf_config)
    values = {}
    for name, (default, kind) in _FIELDS.items():
        values[name] = hf_config.get(name, default)
        if not _KINDS[kind](values[name]):
            problems.append(f"field '{name}' must be {kind}, got {values[name]!r}")
    if problems:
        raise ValueError(f"{config_path}: " + "; ".join(problems))
    if values["add_adapter"]:
        problems.append("add_adapter=True (the convolutional adapter is not implemented)")
    if values["use_intermediate_ffn_before_adapter"]:
        problems.append("use_intermediate_ffn_before_adapter=True")
    if values["position_embeddings_type"] not in _POSITION_ENCODINGS:
        problems.append(
            f"position_embeddings_type={values['position_embeddings_type']!r} (supported: "
            f"{sorted(str(k) for k in _POSITION_ENCODINGS)})"
        )
    if values["hidden_act"] not in ("swish", "silu"):
        problems.append(f"hidden_act={values['hidden_act']!r} (only swish/silu)")
    if values["hidden_size"] % values["num_attention_heads"]:
        problems.append(
            f"hidden_size {values['hidden_size']} not divisible by num_attention_heads "
            f"{values['num_attention_heads']}"
        )
    if problems:
        raise ValueError(f"{config_path}: unsupported Wav2Vec2Bert options: " + "; ".join(problems))
    conformer = ConformerConfig(
        num_heads=values["num_attention_heads"],
        ffn_dim=values["intermediate_size"],
        kernel_size=values["conv_depthwise_kernel_size"],
        conv_padding="causal",
        conv_norm="layer",
        pointwise_bias=False,
        position_encoding=_POSITION_ENCODINGS[values["position_embeddings_type"]],
        left_context=values["left_max_position_embeddings"],
        right_context=values["right_max_position_embeddings"],
        dropout=values["hidden_dropout"],
        attention_dropout=values["attention_dropout"],
        activation_dropout=values["activation_dropout"],
        layer_norm_epsilon=values["layer_norm_eps"],
    )
    return dict(
        hidden_dim=values["hidden_size"],
        num_layers=values["num_hidden_layers"],
        conformer=conformer,
        feature_dim=values["feature_projection_input_dim"],
        front_end="stacked_features",
        projection_dim=None,
    )


def _check_ctc_head(hf_config, head_state, config_path):
    """Raises a ValueError naming `config_path` and the field when
    `pad_token_id` or `vocab_size` do not fit the (V, D) `lm_head` weight."""
    vocabulary_size = head_state["weight"].shape[0]
    blank_index = hf_config.get("pad_token_id", 0)
    problems = []
    if not (_is_int(blank_index) and 0 <= blank_index < vocabulary_size):
        problems.append(
            f"field 'pad_token_id' (the CTC blank) must be an integer in [0, {vocabulary_size}) "
            f"for the lm_head's {vocabulary_size} classes, got {blank_index!r}"
        )
    if hf_config.get("vocab_size", vocabulary_size) != vocabulary_size:
        problems.append(
            f"field 'vocab_size' is {hf_config['vocab_size']!r}, the lm_head has {vocabulary_size} classes"
        )
    if problems:
        raise ValueError(f"{config_path}: " + "; ".join(problems))


def _pointwise_conv(weight):
    """torch Conv1d kernel 1 (out, in, 1) -> Dense kernel (in, out)."""
    return weight[:, :, 0].T


def _depthwise_conv(weight):
    """torch depthwise Conv1d (C, 1, k) -> `depthwise_kernel` (k, C)."""
    return weight[:, 0, :].T


def _layer_norm_rows(ours, theirs):
    return [
        (f"{ours}/gamma", f"{theirs}.weight", _identity),
        (f"{ours}/beta", f"{theirs}.bias", _identity),
    ]


def _dense_rows(ours, theirs, transform=_transpose, use_bias=True):
    rows = [(f"{ours}/kernel", f"{theirs}.weight", transform)]
    if use_bias:
        rows.append((f"{ours}/bias", f"{theirs}.bias", _identity))
    return rows


def wav2vec2_bert_layer_weights(position_encoding="relative_key"):
    """Weight table of a Hugging Face `Wav2Vec2BertEncoderLayer`.

    Matches a `ConformerBlock` whose `ConformerConfig` has
    `conv_padding="causal", conv_norm="layer", pointwise_bias=False` and
    `position_encoding`; "relative_key" is the
    w2v-BERT 2.0 setting, "relative_sinusoidal" is HF's "relative".

    Returns:
        list of (variable path inside the block, HF state-dict key inside
        the layer, transform of the HF numpy array).
    """
    rows = []
    for ffn in ("ffn1", "ffn2"):
        rows += _layer_norm_rows(f"{ffn}/layer_norm", f"{ffn}_layer_norm")
        rows += _dense_rows(f"{ffn}/intermediate_dense", f"{ffn}.intermediate_dense")
        rows += _dense_rows(f"{ffn}/output_dense", f"{ffn}.output_dense")
    rows += _layer_norm_rows("self_attention_layer_norm", "self_attn_layer_norm")
    for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("output", "out")):
        rows += _dense_rows(f"self_attention/{ours}_dense", f"self_attn.linear_{theirs}")
    if position_encoding == "relative_key":
        rows.append(
            ("self_attention/distance_embedding", "self_attn.distance_embedding.weight", _identity)
        )
    elif position_encoding == "relative_sinusoidal":
        rows += _dense_rows("self_attention/position_dense", "self_attn.linear_pos", use_bias=False)
        for bias in ("pos_bias_u", "pos_bias_v"):
            rows.append((f"self_attention/{bias}", f"self_attn.{bias}", _identity))
    rows += _layer_norm_rows("convolution/layer_norm", "conv_module.layer_norm")
    rows += _dense_rows(
        "convolution/pointwise_conv1",
        "conv_module.pointwise_conv1",
        _pointwise_conv,
        use_bias=False,
    )
    rows.append(
        ("convolution/depthwise_kernel", "conv_module.depthwise_conv.weight", _depthwise_conv)
    )
    rows += _layer_norm_rows("convolution/depthwise_norm", "conv_module.depthwise_layer_norm")
    rows += _dense_rows(
        "convolution/pointwise_conv2",
        "conv_module.pointwise_conv2",
        _pointwise_conv,
        use_bias=False,
    )
    rows += _layer_norm_rows("final_layer_norm", "final_layer_norm")
    return rows


def load_wav2vec2_bert_layer(block, hf_layer_weights):
    """Assigns a Hugging Face `Wav2Vec2BertEncoderLayer`'s weights to `block`.

    Args:
        block: a built `ConformerBlock` configured as in
            `wav2vec2_bert_layer_weights`.
        hf_layer_weights: {HF key inside the layer: numpy array}.
    """
    variables = {v.path.split(f"{block.name}/", 1)[1]: v for v in block.weights}
    table = wav2vec2_bert_layer_weights(block.conformer.position_encoding)
    if len(table) != len(variables):
        raise ValueError(
            f"{block.name} has {len(variables)} variables, the Wav2Vec2Bert "
            f"table maps {len(table)}: configure the block as documented"
        )
    for ours, theirs, transform in table:
        variables[ours].assign(transform(hf_layer_weights[theirs]))


def weight_table(num_layers, position_encoding="relative_key"):
    """(our variable path, Hugging Face key, transform) for a whole encoder.

    Our paths are `SpeechEncoder` variable paths; Hugging Face keys are
    those of a bare `Wav2Vec2BertModel` (a headed model prefixes them with
    `wav2vec2_bert.`).
    """
    table = [
        (
            "speech_tower/feature_layer_norm/gamma",
            "feature_projection.layer_norm.weight",
            _identity,
        ),
        ("speech_tower/feature_layer_norm/beta", "feature_projection.layer_norm.bias", _identity),
        (
            "speech_tower/feature_projection/kernel",
            "feature_projection.projection.weight",
            _transpose,
        ),
        ("speech_tower/feature_projection/bias", "feature_projection.projection.bias", _identity),
    ]
    layer_rows = wav2vec2_bert_layer_weights(position_encoding)
    for i in range(num_layers):
        for ours, theirs, transform in layer_rows:
            table.append(
                (
                    f"speech_tower/encoder/conformer_block_{i}/{ours}",
                    f"encoder.layers.{i}.{theirs}",
                    transform,
                )
            )
    return table


def load_hf_config(hf_dir):
    """(the config.json dict, its path) of a Hugging Face checkpoint directory."""
    path = os.path.join(hf_dir, HF_CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{hf_dir}: no {HF_CONFIG_FILE} (not a Hugging Face checkpoint directory)"
        )
    return _read_json(path), path


def load_hf_state(hf_dir):
    """{key: float32 numpy array} from model.safetensors or its shards."""
    from safetensors.numpy import load_file  # optional (the "hf" extra)

    single = os.path.join(hf_dir, HF_WEIGHTS_FILE)
    index = os.path.join(hf_dir, HF_WEIGHTS_INDEX_FILE)
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as file:
            shards = sorted(set(json.load(file)["weight_map"].values()))
        files = [os.path.join(hf_dir, shard) for shard in shards]
    else:
        raise FileNotFoundError(
            f"{hf_dir}: no {HF_WEIGHTS_FILE} or {HF_WEIGHTS_INDEX_FILE} "
            "(save the model with `save_pretrained(..., safe_serialization=True)`)"
        )
    state = {}
    for path in files:
        state.update(load_file(path))
    return {key: np.asarray(value, dtype="float32") for key, value in state.items()}


def _split_state(state):
    """Encoder keys (unprefixed), CTC head arrays or None, and unused keys."""
    headed = any(key.startswith(_HEADED_PREFIX) for key in state)
    encoder, head, unused = {}, None, []
    for key, value in state.items():
        if headed and key.startswith(_HEADED_PREFIX):
            encoder[key[len(_HEADED_PREFIX) :]] = value
        elif not headed:
            encoder[key] = value
        elif key in ("lm_head.weight", "lm_head.bias"):
            head = head or {}
            head[key.split(".")[-1]] = value
        else:
            unused.append(key)
    for key in _TRAINING_ONLY_KEYS:
        encoder.pop(key, None)
    return encoder, head, unused


def assign_weights(encoder, hf_encoder_state):
    """Copies a bare `Wav2Vec2BertModel` state into a built `SpeechEncoder`.

    Raises:
        ValueError: on a missing key, an unmapped key, or a shape mismatch
            (naming the variable, the key and both shapes).
    """
    variables = {variable.path: variable for variable in encoder.weights}
    table = weight_table(encoder.num_layers, encoder.conformer.position_encoding)
    mapped = {ours for ours, _, _ in table}
    unmapped_variables = sorted(set(variables) - mapped)
    if unmapped_variables:
        raise ValueError(
            f"{encoder.name}: {len(unmapped_variables)} variables without a Hugging Face key, first {unmapped_variables[:5]}"
        )
    missing = [theirs for _, theirs, _ in table if theirs not in hf_encoder_state]
    if missing:
        raise ValueError(f"Hugging Face checkpoint lacks {len(missing)} keys, first {missing[:5]}")
    unused = sorted(set(hf_encoder_state) - {theirs for _, theirs, _ in table})
    if unused:
        raise ValueError(f"Hugging Face encoder keys with no keras-slam variable: {unused[:10]}")
    for ours, theirs, transform in table:
        value = transform(hf_encoder_state[theirs])
        variable = variables[ours]
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"{ours}: shape {tuple(variable.shape)}, Hugging Face {theirs} gives {value.shape}"
            )
        variable.assign(value)


def _read_vocabulary(hf_dir, vocabulary_size):
    """Tokens ordered by id from a Wav2Vec2CTCTokenizer vocab.json, or None."""
    path = os.path.join(hf_dir, HF_VOCABULARY_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as file:
        token_to_id = json.load(file)
    if token_to_id and all(isinstance(v, dict) for v in token_to_id.values()):
        # Multilingual vocab.json: {language: {token: id}}; none is chosen.
        return None
    vocabulary = [None] * vocabulary_size
    for token, index in token_to_id.items():
        if 0 <= index < vocabulary_size:
            vocabulary[index] = token
    return vocabulary if all(token is not None for token in vocabulary) else None


def w2v_bert_front_end(feature_dim=160):
    """The w2v-BERT 2.0 front end (`SeamlessM4TFeatureExtractor` features)
    with `feature_dim` (even) outputs: 2 stacked frames of `feature_dim / 2`
    mel bins."""
    num_mel_bins = feature_dim // W2V_BERT_2_0_FRONTEND["stack_frames"]
    return LogMelSpectrogram.w2v_bert_2_0(num_mel_bins=num_mel_bins, name="audio_converter")


@dataclasses.dataclass
class ConvertedCheckpoint:
    """What `convert_checkpoint` builds.

    Attributes:
        encoder: the `SpeechEncoder`.
        front_end: the w2v-BERT 2.0 `LogMelSpectrogram`.
        recognizer: for a `Wav2Vec2BertForCTC`, the `SpeechRecognizer` on
            `encoder` with the converted head, its blank and `front_end` in
            its preprocessor; else None.
        vocabulary: vocab.json's tokens ordered by id, or None.
    """

    encoder: SpeechEncoder
    front_end: LogMelSpectrogram
    recognizer: SpeechRecognizer | None = None
    vocabulary: list | None = None


def convert_checkpoint(hf_dir, dtype=None):
    """Builds keras-slam models from a local Hugging Face checkpoint.

    Args:
        hf_dir: directory with config.json + model.safetensors.
        dtype: dtype policy of the models (default: Keras').
    Returns:
        A `ConvertedCheckpoint`.
    """
    hf_config, config_path = load_hf_config(hf_dir)
    encoder_config = convert_config(hf_config, config_path)
    encoder_state, head_state, unused = _split_state(load_hf_state(hf_dir))
    if head_state is not None:
        _check_ctc_head(hf_config, head_state, config_path)
    if unused:
        warnings.warn(
            f"{hf_dir}: ignoring Hugging Face head weights keras-slam does not "
            f"convert: {sorted(unused)[:10]}",
            stacklevel=2,
        )
    encoder = SpeechEncoder(**encoder_config, dtype=dtype, name="speech_encoder")
    assign_weights(encoder, encoder_state)
    converted = ConvertedCheckpoint(encoder, w2v_bert_front_end(encoder_config["feature_dim"]))
    if head_state is not None:
        vocabulary_size = head_state["weight"].shape[0]
        converted.recognizer = SpeechRecognizer(
            encoder,
            vocabulary_size=vocabulary_size,
            preprocessor=SpeechRecognizerPreprocessor(audio_converter=converted.front_end),
            blank_index=hf_config.get("pad_token_id", 0),
        )
        converted.recognizer.ctc_head.kernel.assign(head_state["weight"].T)
        converted.recognizer.ctc_head.bias.assign(head_state["bias"])
        converted.vocabulary = _read_vocabulary(hf_dir, vocabulary_size)
    return converted


def convert_to_preset(hf_dir, preset_dir):
    """Converts a local Hugging Face checkpoint into a keras-slam preset.

    Writes the files listed in the module docstring, all or nothing;
    `preset_dir` must be new or empty. Returns `preset_dir`.
    """
    preset_dir = os.fspath(preset_dir)
    if os.path.exists(preset_dir) and (not os.path.isdir(preset_dir) or os.listdir(preset_dir)):
        raise FileExistsError(
            f"{preset_dir} exists and is not an empty directory; choose a new preset directory"
        )
    converted = convert_checkpoint(hf_dir)
    parent, name = os.path.split(os.path.abspath(preset_dir))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}.partial-{uuid.uuid4().hex[:8]}")
    os.mkdir(staging)
    try:
        extra = {}
        if converted.recognizer is not None:
            converted.recognizer.save_to_preset(staging)
            extra["vocabulary"] = converted.vocabulary
        else:
            converted.encoder.save_to_preset(staging)
            converted.front_end.save_to_preset(staging)
        preset_utils.update_metadata(
            staging,
            weights="converted",
            source={
                "format": "huggingface",
                "model_type": HF_MODEL_TYPE,
                "path": os.path.abspath(hf_dir),
            },
            **extra,
        )
        os.replace(staging, preset_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return preset_dir


def from_hf_dir(cls, hf_dir, load_weights=True, dtype=None, **kwargs):
    """`cls.from_preset(hf_dir)` for a local Hugging Face checkpoint.

    A Backbone class gets the converted `SpeechEncoder` directly; any other
    class (a task) loads from a converted copy in a temporary directory.
    """
    if issubclass(SpeechEncoder, cls):
        if kwargs:
            raise ValueError(
                f"unexpected arguments for a converted SpeechEncoder: {sorted(kwargs)}"
            )
        if not load_weights:
            config = convert_config(*load_hf_config(hf_dir))
            return SpeechEncoder(**config, dtype=dtype, name="speech_encoder")
        return convert_checkpoint(hf_dir, dtype=dtype).encoder
    with tempfile.TemporaryDirectory() as preset_dir:
        convert_to_preset(hf_dir, preset_dir)
        return preset_utils.from_preset(
            cls, preset_dir, load_weights=load_weights, dtype=dtype, **kwargs
        )


def _from_hub(preset, fetch):
    """`fetch(huggingface_hub, repo_id)` for an "hf://org/name" handle.

    Raises:
        OSError: when the Hub cannot be reached, saying what to do offline.
    """
    try:
        import huggingface_hub  # optional (the "hf" extra)

        return fetch(huggingface_hub, preset[len(HF_PREFIX) :])
    except Exception as error:
        raise OSError(
            f"cannot download {preset} from the Hugging Face Hub "
            f"({type(error).__name__}: {error}). Without access to the Hub, "
            "copy the checkpoint directory (config.json + model.safetensors) "
            "here and pass its path to from_preset, or convert it once with "
            "`keras-slam convert-w2v-bert <hf_dir> <preset_dir>`."
        ) from error


def is_w2v_bert_checkpoint(preset):
    """True for a local Wav2Vec2Bert checkpoint directory, or an "hf://"
    handle of one (its config.json is downloaded to tell; a keras preset on
    the Hub is left to keras-hub)."""
    if preset.startswith(HF_PREFIX):
        config_path = _from_hub(
            preset, lambda hub, repo_id: hub.hf_hub_download(repo_id, HF_CONFIG_FILE)
        )
        return _read_json(config_path).get("model_type") == HF_MODEL_TYPE
    config_path = os.path.join(preset, HF_CONFIG_FILE)
    if not (os.path.isdir(preset) and os.path.isfile(config_path)):
        return False
    config = _read_json(config_path)
    return isinstance(config, dict) and config.get("model_type") == HF_MODEL_TYPE


def from_hf_preset(cls, preset, **kwargs):
    """`cls.from_preset(preset)` for a checkpoint `is_w2v_bert_checkpoint` accepts."""
    if preset.startswith(HF_PREFIX):
        preset = _from_hub(
            preset,
            lambda hub, repo_id: hub.snapshot_download(
                repo_id, allow_patterns=["*.json", "*.safetensors"]
            ),
        )
    return from_hf_dir(cls, preset, **kwargs)


preset_utils.register_preset_source(
    preset_utils.PresetSource("huggingface_w2v_bert", is_w2v_bert_checkpoint, from_hf_preset)
)
