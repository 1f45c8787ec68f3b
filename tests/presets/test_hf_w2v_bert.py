"""Hugging Face Wav2Vec2Bert -> keras-slam: outputs match HF on real positions.

The Hugging Face models are built locally with random weights (perturbed so
that LayerNorms and biases are not at their trivial init), saved with
`save_pretrained`, converted, and compared with torch on padded batches.
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import transformers

from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.presets import hf_w2v_bert
from keras_slam.presets import registry  # noqa: F401  (registers the named presets)
from tests import test_case

TOLERANCE = 1e-4


def hf_config(**overrides):
    config = dict(
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        feature_projection_input_dim=160,
        conv_depthwise_kernel_size=5,
        left_max_position_embeddings=4,
        right_max_position_embeddings=2,
        vocab_size=13,
        max_source_positions=64,
    )
    config.update(overrides)
    return transformers.Wav2Vec2BertConfig(**config)


# Small configs and unusual ones: odd head counts, tiny clipping windows,
# kernel 3, 1-3 layers, the other position types.
CONFIGS = {
    "default_small": {},
    "three_heads_kernel3_3layers": dict(num_attention_heads=3, conv_depthwise_kernel_size=3, num_hidden_layers=3),
    "one_layer_left1_right0": dict(num_hidden_layers=1, left_max_position_embeddings=1, right_max_position_embeddings=0),
    "relative_sinusoidal": dict(position_embeddings_type="relative", num_attention_heads=6),
    "no_positions_eps": dict(position_embeddings_type=None, layer_norm_eps=1e-3),
}


def save_hf_model(directory, config, with_ctc, seed=0):
    """Random HF model, perturbed off its init, saved as safetensors."""
    torch.manual_seed(seed)
    model_cls = transformers.Wav2Vec2BertForCTC if with_ctc else transformers.Wav2Vec2BertModel
    model = model_cls(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    model.save_pretrained(directory)
    return model


def padded_features(rng, batch_size=3, max_length=23):
    mask = test_case.random_padding_mask(rng, batch_size, max_length, min_length=2)
    features = rng.normal(size=(batch_size, max_length, 160)).astype("float32")
    # Garbage in the padding must not reach real positions.
    features += (1.0 - mask[..., None]) * 50.0
    return features, mask


def hf_outputs(model, features, mask):
    with torch.no_grad():
        outputs = model(
            torch.tensor(features),
            attention_mask=torch.tensor(mask).long(),
            output_hidden_states=True,
        )
    hidden = outputs.hidden_states[-1] if hasattr(outputs, "logits") else outputs.last_hidden_state
    logits = outputs.logits.numpy() if hasattr(outputs, "logits") else None
    return hidden.numpy(), logits


def max_diff_at_real(a, b, mask):
    real = mask.astype(bool)
    return float(np.max(np.abs(a[real] - b[real])))


@pytest.mark.parametrize(
    "name, with_ctc",
    [("default_small", False)] + [(name, True) for name in CONFIGS],
)
def test_converted_matches_hugging_face(name, with_ctc, tmp_path, seeded):
    model = save_hf_model(tmp_path, hf_config(**CONFIGS[name]), with_ctc)
    encoder, ctc, _ = hf_w2v_bert.convert_checkpoint(tmp_path)
    features, mask = padded_features(seeded)
    expected_hidden, expected_logits = hf_outputs(model, features, mask)

    outputs = encoder({"speech_features": features, "speech_padding_mask": mask})
    hidden = test_case.to_numpy(outputs["sequence_output"])
    np.testing.assert_array_equal(test_case.to_numpy(outputs["padding_mask"]), mask)
    hidden_diff = max_diff_at_real(hidden, expected_hidden, mask)
    assert hidden_diff < TOLERANCE, hidden_diff
    assert (ctc is not None) == with_ctc
    if with_ctc:
        head, blank_index, _ = ctc
        assert blank_index == model.config.pad_token_id
        logits = test_case.to_numpy(head(hidden))
        logits_diff = max_diff_at_real(logits, expected_logits, mask)
        assert logits_diff < TOLERANCE, logits_diff


def test_weight_table_covers_every_key(tmp_path):
    save_hf_model(tmp_path, hf_config(num_hidden_layers=2), with_ctc=False)
    state = hf_w2v_bert.load_hf_state(tmp_path)
    table = hf_w2v_bert.weight_table(2, "relative_key")
    theirs = {key for _, key, _ in table}
    assert theirs == set(state) - {"masked_spec_embed"}
    encoder = SpeechEncoder(**hf_w2v_bert.convert_config(hf_config(num_hidden_layers=2).to_dict()))
    assert {ours for ours, _, _ in table} == {v.path for v in encoder.weights}


def test_preset_round_trip_with_ctc_head_and_front_end(tmp_path, seeded):
    hf_dir, preset_dir = tmp_path / "hf", tmp_path / "preset"
    vocabulary = {token: i for i, token in enumerate("<pad> <s> </s> <unk> | a b c d e f g h".split())}
    model = save_hf_model(hf_dir, hf_config(), with_ctc=True)
    (hf_dir / "vocab.json").write_text(json.dumps(vocabulary))
    hf_w2v_bert.convert_to_preset(hf_dir, preset_dir)

    files = set(os.listdir(preset_dir))
    assert {"config.json", "model.weights.h5", "metadata.json", "audio_converter.json",
            "ctc_head.json", "ctc_head.weights.h5"} <= files
    metadata = json.loads((preset_dir / "metadata.json").read_text())
    assert metadata["weights"] == "converted" and metadata["keras_slam_version"]

    encoder = SpeechEncoder.from_preset(str(preset_dir))
    head, head_config = hf_w2v_bert.load_ctc_head(str(preset_dir))
    assert head_config["vocabulary"] == list(vocabulary)
    assert head_config["blank_index"] == 0
    features, mask = padded_features(seeded)
    expected_hidden, expected_logits = hf_outputs(model, features, mask)
    hidden = encoder({"speech_features": features, "speech_padding_mask": mask})["sequence_output"]
    logits = test_case.to_numpy(head(hidden))
    assert max_diff_at_real(logits, expected_logits, mask) < TOLERANCE
    front_end = hf_w2v_bert.load_front_end(str(preset_dir))
    assert front_end.get_config()["stack_frames"] == 2


def test_from_preset_on_hugging_face_directory(tmp_path, seeded):
    model = save_hf_model(tmp_path, hf_config(), with_ctc=False)
    encoder = SpeechEncoder.from_preset(str(tmp_path))
    features, mask = padded_features(seeded)
    expected, _ = hf_outputs(model, features, mask)
    hidden = encoder({"speech_features": features, "speech_padding_mask": mask})["sequence_output"]
    assert max_diff_at_real(test_case.to_numpy(hidden), expected, mask) < TOLERANCE


def speech_like(rng, num_samples, sample_rate=16000):
    t = np.arange(num_samples) / sample_rate
    phase = 2 * np.pi * np.cumsum(130.0 + 30.0 * np.sin(2 * np.pi * 0.9 * t)) / sample_rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 20))
    return (0.1 * harmonics + 1e-3 * rng.normal(size=num_samples)).astype("float32")


def test_raw_audio_end_to_end(tmp_path, seeded):
    """Our front end + converted model vs SeamlessM4TFeatureExtractor + HF.

    Tolerance 1e-3: the two front ends agree to ~1e-4 on the normalised
    features (float32 FFTs on int16-scaled audio; log of small mel energies
    amplifies their rounding), and the Conformer stack, with
    LayerNorms after each block, does not grow such differences.
    """
    model = save_hf_model(tmp_path, hf_config(), with_ctc=True)
    encoder, (head, _, _), front_end = hf_w2v_bert.convert_checkpoint(tmp_path)
    lengths = [9600, 7040, 5000]
    signals = [speech_like(seeded, n) for n in lengths]
    extractor = transformers.SeamlessM4TFeatureExtractor()
    hf_inputs = extractor(signals, sampling_rate=16000, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**hf_inputs).logits.numpy()

    waveform = np.zeros((len(signals), max(lengths)), "float32")
    sample_mask = np.zeros_like(waveform)
    for i, signal in enumerate(signals):
        waveform[i, : len(signal)] = signal
        sample_mask[i, : len(signal)] = 1.0
    features, frame_mask = front_end(waveform, sample_mask)
    hidden = encoder({"speech_features": features, "speech_padding_mask": frame_mask})["sequence_output"]
    logits = test_case.to_numpy(head(hidden))
    frame_mask = test_case.to_numpy(frame_mask)

    hf_mask = hf_inputs["attention_mask"].numpy()
    length = min(logits.shape[1], expected.shape[1])
    np.testing.assert_array_equal(frame_mask[:, :length], hf_mask[:, :length])
    diff = max_diff_at_real(logits[:, :length], expected[:, :length], frame_mask[:, :length])
    assert diff < 1e-3, diff


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(add_adapter=True), "add_adapter"),
        (dict(position_embeddings_type="rotary"), "rotary"),
        (dict(hidden_act="gelu"), "hidden_act"),
    ],
)
def test_unsupported_options_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        hf_w2v_bert.convert_config(hf_config(**overrides).to_dict())


def test_hub_handle_fails_clearly_offline(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.OfflineModeIsEnabled("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(OSError, match="cannot download hf://facebook/w2v-bert-2.0.*convert-w2v-bert"):
        SpeechEncoder.from_preset("hf://facebook/w2v-bert-2.0")


def test_missing_safetensors_is_named(tmp_path):
    hf_config().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        hf_w2v_bert.convert_checkpoint(tmp_path)


def test_convert_command(tmp_path, seeded):
    from keras_slam.cli import main

    model = save_hf_model(tmp_path / "hf", hf_config(num_hidden_layers=1), with_ctc=False)
    assert main(["convert-w2v-bert", str(tmp_path / "hf"), str(tmp_path / "preset")]) == 0
    encoder = SpeechEncoder.from_preset(str(tmp_path / "preset"))
    features, mask = padded_features(seeded)
    expected, _ = hf_outputs(model, features, mask)
    hidden = encoder({"speech_features": features, "speech_padding_mask": mask})["sequence_output"]
    assert max_diff_at_real(test_case.to_numpy(hidden), expected, mask) < TOLERANCE


def test_speech_recognizer_from_converted_ctc_checkpoint(tmp_path, seeded):
    """The imported CTC head and blank index serve SpeechRecognizer as is."""
    from keras_slam.models import SpeechRecognizer

    model = save_hf_model(tmp_path / "hf", hf_config(pad_token_id=3), with_ctc=True)
    hf_w2v_bert.convert_to_preset(tmp_path / "hf", tmp_path / "preset")
    recognizer = SpeechRecognizer.from_preset(str(tmp_path / "preset"))
    assert recognizer.blank_index == 3
    features, mask = padded_features(seeded)
    _, expected_logits = hf_outputs(model, features, mask)
    outputs = recognizer({"speech_features": features, "speech_padding_mask": mask})
    logits = test_case.to_numpy(outputs["logits"])
    assert max_diff_at_real(logits, expected_logits, mask) < TOLERANCE
