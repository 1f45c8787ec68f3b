"""Hugging Face `Wav2Vec2Bert` (w2v-BERT 2.0) -> keras-slam `SpeechEncoder` preset.

Input: a local directory in the format of `facebook/w2v-bert-2.0`:
`config.json` + `model.safetensors` (or a sharded
`model.safetensors.index.json`), of a `Wav2Vec2BertModel` or a
`Wav2Vec2BertForCTC` (keys under `wav2vec2_bert.` plus `lm_head`).

Output: a keras-hub preset directory:

- `config.json`, `model.weights.h5`, `metadata.json`: the `SpeechEncoder`
  (`metadata.json` also records `keras_slam_version`, `"weights":
  "converted"` and the source checkpoint);
- `audio_converter.json`: the front end, a serialized `LogMelSpectrogram`
  in the w2v-BERT 2.0 configuration (Hugging Face's
  `SeamlessM4TFeatureExtractor`); `load_front_end(preset)` rebuilds it;
- for `Wav2Vec2BertForCTC` only, the CTC head (format below).

CTC head format (read with `load_ctc_head`, written with `save_ctc_head`):
`ctc_head.json` = {"format": "keras_slam.ctc_head", "version": 1,
"hidden_dim": D, "vocabulary_size": V, "blank_index": int (Hugging Face's
`pad_token_id`, the CTC blank), "vocabulary": list of V strings ordered by
id or null, "layer": the `get_config()` of a `keras.layers.Dense(V)`}; and
`ctc_head.weights.h5` with two datasets, "kernel" (D, V) and "bias" (V,).
Logits = `Dense(sequence_output)`, Hugging Face `lm_head` exactly (its
`final_dropout` is inactive at inference).

Unsupported Hugging Face options are rejected with a message naming them
(adapters, the intermediate FFN before the adapter, rotary positions,
activations other than swish). Options that only matter in training are
mapped or dropped: `hidden_dropout` -> `dropout`, `attention_dropout`,
`activation_dropout`; SpecAugment (`masked_spec_embed`), `layerdrop`,
`feat_proj_dropout` and `conformer_conv_dropout` are not carried over.
"""

import json
import os
import warnings

import keras
import numpy as np

from keras_slam.layers.conformer import wav2vec2_bert_layer_weights
from keras_slam.layers.log_mel import LogMelSpectrogram

HF_MODEL_TYPE = "wav2vec2-bert"
HF_CONFIG_FILE = "config.json"
HF_WEIGHTS_FILE = "model.safetensors"
HF_WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
HF_VOCABULARY_FILE = "vocab.json"
AUDIO_CONVERTER_FILE = "audio_converter.json"
CTC_HEAD_CONFIG_FILE = "ctc_head.json"
CTC_HEAD_WEIGHTS_FILE = "ctc_head.weights.h5"
CTC_HEAD_FORMAT = "keras_slam.ctc_head"

# Prefix of the encoder keys in `Wav2Vec2BertForCTC` (and the other heads).
_HEADED_PREFIX = "wav2vec2_bert."
# Keys that only matter in training (SpecAugment's mask vector).
_TRAINING_ONLY_KEYS = ("masked_spec_embed",)

_POSITION_ENCODINGS = {
    "relative_key": "relative_key",
    "relative": "relative_sinusoidal",
    None: "none",
}


def _transpose(weight):
    """torch Linear (out, in) -> Dense kernel (in, out)."""
    return weight.T


def _identity(weight):
    return weight


def is_hf_w2v_bert_dir(path):
    """True for a local directory holding a Hugging Face Wav2Vec2Bert config."""
    config_path = os.path.join(path, HF_CONFIG_FILE)
    if not os.path.isfile(config_path):
        return False
    with open(config_path, encoding="utf-8") as file:
        return json.load(file).get("model_type") == HF_MODEL_TYPE


def convert_config(hf_config):
    """Hugging Face `Wav2Vec2BertConfig` dict -> `SpeechEncoder` kwargs.

    Raises:
        ValueError: naming every unsupported option found.
    """
    if hf_config.get("model_type") != HF_MODEL_TYPE:
        raise ValueError(
            f"not a Wav2Vec2Bert config: model_type is "
            f"{hf_config.get('model_type')!r}, expected {HF_MODEL_TYPE!r}"
        )
    problems = []
    if hf_config.get("add_adapter", False):
        problems.append("add_adapter=True (the convolutional adapter is not implemented)")
    if hf_config.get("use_intermediate_ffn_before_adapter", False):
        problems.append("use_intermediate_ffn_before_adapter=True")
    position_type = hf_config.get("position_embeddings_type", "relative_key")
    if position_type not in _POSITION_ENCODINGS:
        problems.append(
            f"position_embeddings_type={position_type!r} (supported: "
            f"{sorted(str(k) for k in _POSITION_ENCODINGS)})"
        )
    activation = hf_config.get("hidden_act", "swish")
    if activation not in ("swish", "silu"):
        problems.append(f"hidden_act={activation!r} (only swish/silu)")
    hidden_size = hf_config.get("hidden_size", 1024)
    num_heads = hf_config.get("num_attention_heads", 16)
    if hidden_size % num_heads:
        problems.append(f"hidden_size {hidden_size} not divisible by num_attention_heads {num_heads}")
    if problems:
        raise ValueError(
            "unsupported Wav2Vec2Bert options: " + "; ".join(problems)
        )
    return dict(
        hidden_dim=hidden_size,
        num_layers=hf_config.get("num_hidden_layers", 24),
        num_heads=num_heads,
        ffn_dim=hf_config.get("intermediate_size", 4096),
        feature_dim=hf_config.get("feature_projection_input_dim", 160),
        front_end="stacked_features",
        projection_dim=None,
        kernel_size=hf_config.get("conv_depthwise_kernel_size", 31),
        conv_padding="causal",
        conv_norm="layer",
        pointwise_bias=False,
        position_encoding=_POSITION_ENCODINGS[position_type],
        left_context=hf_config.get("left_max_position_embeddings", 64),
        right_context=hf_config.get("right_max_position_embeddings", 8),
        dropout=hf_config.get("hidden_dropout", 0.0),
        attention_dropout=hf_config.get("attention_dropout", 0.0),
        activation_dropout=hf_config.get("activation_dropout", 0.0),
        layer_norm_epsilon=hf_config.get("layer_norm_eps", 1e-5),
    )


def weight_table(num_layers, position_encoding="relative_key"):
    """(our variable path, Hugging Face key, transform) for a whole encoder.

    Our paths are `SpeechEncoder` variable paths; Hugging Face keys are
    those of a bare `Wav2Vec2BertModel` (a headed model prefixes them with
    `wav2vec2_bert.`).
    """
    table = [
        ("speech_tower/feature_layer_norm/gamma", "feature_projection.layer_norm.weight", _identity),
        ("speech_tower/feature_layer_norm/beta", "feature_projection.layer_norm.bias", _identity),
        ("speech_tower/feature_projection/kernel", "feature_projection.projection.weight", _transpose),
        ("speech_tower/feature_projection/bias", "feature_projection.projection.bias", _identity),
    ]
    layer_rows = wav2vec2_bert_layer_weights(position_encoding)
    for i in range(num_layers):
        for ours, theirs, transform in layer_rows:
            table.append(
                (f"speech_tower/encoder/conformer_block_{i}/{ours}", f"encoder.layers.{i}.{theirs}", transform)
            )
    return table


def load_hf_config(hf_dir):
    path = os.path.join(hf_dir, HF_CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{hf_dir}: no {HF_CONFIG_FILE} (not a Hugging Face checkpoint directory)")
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def load_hf_state(hf_dir):
    """{key: float32 numpy array} from model.safetensors or its shards."""
    from safetensors.numpy import load_file

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
            encoder[key[len(_HEADED_PREFIX):]] = value
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
    table = weight_table(encoder.num_layers, encoder.position_encoding)
    mapped = {ours for ours, _, _ in table}
    unmapped_variables = sorted(set(variables) - mapped)
    if unmapped_variables:
        raise ValueError(f"{encoder.name}: {len(unmapped_variables)} variables without a Hugging Face key, first {unmapped_variables[:5]}")
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
                f"{ours}: shape {tuple(variable.shape)}, Hugging Face {theirs} "
                f"gives {value.shape}"
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


def make_ctc_head(hidden_dim, vocabulary_size, dtype=None):
    """A built `Dense(vocabulary_size)` named "ctc_head"."""
    head = keras.layers.Dense(vocabulary_size, dtype=dtype, name="ctc_head")
    head.build((None, None, hidden_dim))
    return head


def save_ctc_head(head, preset_dir, blank_index, vocabulary=None):
    """Writes `ctc_head.json` + `ctc_head.weights.h5` (format in module doc)."""
    import h5py

    hidden_dim, vocabulary_size = head.kernel.shape
    config = {
        "format": CTC_HEAD_FORMAT,
        "version": 1,
        "hidden_dim": int(hidden_dim),
        "vocabulary_size": int(vocabulary_size),
        "blank_index": int(blank_index),
        "vocabulary": vocabulary,
        "layer": head.get_config(),
    }
    os.makedirs(preset_dir, exist_ok=True)
    with open(os.path.join(preset_dir, CTC_HEAD_CONFIG_FILE), "w", encoding="utf-8") as file:
        json.dump(config, file, indent=2, ensure_ascii=False)
    with h5py.File(os.path.join(preset_dir, CTC_HEAD_WEIGHTS_FILE), "w") as file:
        file["kernel"] = keras.ops.convert_to_numpy(head.kernel)
        file["bias"] = keras.ops.convert_to_numpy(head.bias)


def load_ctc_head(preset_dir, dtype=None):
    """Reads a CTC head: returns (built Dense layer, ctc_head.json dict).

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: on a shape mismatch between the config and the weights.
    """
    import h5py

    for name in (CTC_HEAD_CONFIG_FILE, CTC_HEAD_WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(preset_dir, name)):
            raise FileNotFoundError(f"{preset_dir}: no {name} (this preset has no CTC head)")
    with open(os.path.join(preset_dir, CTC_HEAD_CONFIG_FILE), encoding="utf-8") as file:
        config = json.load(file)
    if config.get("format") != CTC_HEAD_FORMAT:
        raise ValueError(f"{preset_dir}/{CTC_HEAD_CONFIG_FILE}: not a {CTC_HEAD_FORMAT} file")
    layer_config = dict(config["layer"])
    if dtype is not None:
        layer_config["dtype"] = dtype
    head = keras.layers.Dense.from_config(layer_config)
    head.build((None, None, config["hidden_dim"]))
    with h5py.File(os.path.join(preset_dir, CTC_HEAD_WEIGHTS_FILE), "r") as file:
        for variable, name in ((head.kernel, "kernel"), (head.bias, "bias")):
            value = file[name][()]
            if tuple(variable.shape) != value.shape:
                raise ValueError(
                    f"{preset_dir}/{CTC_HEAD_WEIGHTS_FILE}: ctc_head/{name} has "
                    f"shape {value.shape}, the config needs {tuple(variable.shape)}"
                )
            variable.assign(value)
    return head, config


def w2v_bert_front_end():
    """The w2v-BERT 2.0 front end (`SeamlessM4TFeatureExtractor` features)."""
    return LogMelSpectrogram.w2v_bert_2_0(name="audio_converter")


def save_front_end(front_end, preset_dir):
    with open(os.path.join(preset_dir, AUDIO_CONVERTER_FILE), "w", encoding="utf-8") as file:
        json.dump(keras.saving.serialize_keras_object(front_end), file, indent=2)


def load_front_end(preset_dir):
    """The preset's `LogMelSpectrogram` front end (from audio_converter.json)."""
    path = os.path.join(preset_dir, AUDIO_CONVERTER_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{preset_dir}: no {AUDIO_CONVERTER_FILE} (this preset has no front end)")
    with open(path, encoding="utf-8") as file:
        return keras.saving.deserialize_keras_object(json.load(file))


def convert_checkpoint(hf_dir, dtype=None):
    """Builds keras-slam objects from a local Hugging Face checkpoint.

    Args:
        hf_dir: directory with config.json + model.safetensors.
        dtype: dtype policy of the encoder and head (default: Keras').
    Returns:
        (encoder `SpeechEncoder`, ctc `(Dense, blank_index, vocabulary)` or
        None, front_end `LogMelSpectrogram`).
    """
    from keras_slam.models.speech_encoder import SpeechEncoder

    hf_config = load_hf_config(hf_dir)
    encoder_config = convert_config(hf_config)
    encoder_state, head_state, unused = _split_state(load_hf_state(hf_dir))
    if unused:
        warnings.warn(
            f"{hf_dir}: ignoring Hugging Face head weights keras-slam does not "
            f"convert: {sorted(unused)[:10]}"
        )
    encoder = SpeechEncoder(**encoder_config, dtype=dtype, name="speech_encoder")
    assign_weights(encoder, encoder_state)
    ctc = None
    if head_state is not None:
        vocabulary_size, hidden_dim = head_state["weight"].shape
        head = make_ctc_head(hidden_dim, vocabulary_size, dtype=dtype)
        head.kernel.assign(head_state["weight"].T)
        head.bias.assign(head_state["bias"])
        blank_index = hf_config.get("pad_token_id", 0)
        ctc = (head, blank_index, _read_vocabulary(hf_dir, vocabulary_size))
    return encoder, ctc, w2v_bert_front_end()


def convert_to_preset(hf_dir, preset_dir):
    """Converts a local Hugging Face checkpoint into a keras-slam preset.

    Writes the files listed in the module docstring; returns `preset_dir`.
    """
    from keras_slam.presets import loading

    encoder, ctc, front_end = convert_checkpoint(hf_dir)
    encoder.save_to_preset(preset_dir)
    save_front_end(front_end, preset_dir)
    if ctc is not None:
        head, blank_index, vocabulary = ctc
        save_ctc_head(head, preset_dir, blank_index, vocabulary)
    loading.update_metadata(
        preset_dir,
        weights="converted",
        source={"format": "huggingface", "model_type": HF_MODEL_TYPE, "path": os.path.abspath(hf_dir)},
    )
    return preset_dir


def from_hf_dir(cls, hf_dir, load_weights=True, dtype=None, **kwargs):
    """`cls.from_preset(hf_dir)` for a local Hugging Face checkpoint.

    A Backbone class gets the converted `SpeechEncoder` directly; any other
    class (a task) loads from a converted copy in a temporary directory.
    """
    import tempfile

    from keras_slam.models.speech_encoder import SpeechEncoder
    from keras_slam.presets import loading

    if issubclass(SpeechEncoder, cls):
        if kwargs:
            raise ValueError(f"unexpected arguments for a converted SpeechEncoder: {sorted(kwargs)}")
        if not load_weights:
            config = convert_config(load_hf_config(hf_dir))
            return SpeechEncoder(**config, dtype=dtype, name="speech_encoder")
        return convert_checkpoint(hf_dir, dtype=dtype)[0]
    with tempfile.TemporaryDirectory() as preset_dir:
        convert_to_preset(hf_dir, preset_dir)
        return loading.from_preset(cls, preset_dir, load_weights=load_weights, dtype=dtype, **kwargs)


def download(preset):
    """Downloads "hf://org/name" and returns the local directory.

    A Wav2Vec2Bert checkpoint is fetched whole (config, safetensors,
    vocab.json); a keras preset hosted on the Hub is left to keras-hub
    (the handle is returned unchanged).

    Raises:
        OSError: when the Hub cannot be reached, saying what to do offline.
    """
    repo_id = preset[len("hf://"):]
    try:
        import huggingface_hub

        config_path = huggingface_hub.hf_hub_download(repo_id, HF_CONFIG_FILE)
        with open(config_path, encoding="utf-8") as file:
            if json.load(file).get("model_type") != HF_MODEL_TYPE:
                return preset
        return huggingface_hub.snapshot_download(
            repo_id, allow_patterns=["*.json", "*.safetensors"]
        )
    except Exception as error:
        raise OSError(
            f"cannot download {preset} from the Hugging Face Hub "
            f"({type(error).__name__}: {error}). Without access to the Hub, "
            "copy the checkpoint directory (config.json + model.safetensors) "
            "here and pass its path to from_preset, or convert it once with "
            "`keras-slam convert-w2v-bert <hf_dir> <preset_dir>`."
        ) from error
