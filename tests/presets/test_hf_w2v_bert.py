"""Hugging Face Wav2Vec2Bert -> keras-slam: outputs match HF on real positions.

The Hugging Face models are built locally with random weights (perturbed so
that LayerNorms and biases are not at their trivial init), saved with
`save_pretrained`, converted, and compared with torch on padded batches.
"""

import json
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import transformers

from keras_slam.models.speech_classifier import SpeechClassifier
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.presets import hf_w2v_bert
from keras_slam.utils import preset_utils
from keras_slam.utils.keras_private import get_preset_loader
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
    "three_heads_kernel3_3layers": dict(
        num_attention_heads=3, conv_depthwise_kernel_size=3, num_hidden_layers=3
    ),
    "one_layer_left1_right0": dict(
        num_hidden_layers=1, left_max_position_embeddings=1, right_max_position_embeddings=0
    ),
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
    converted = hf_w2v_bert.convert_checkpoint(tmp_path)
    features, mask = padded_features(seeded)
    expected_hidden, expected_logits = hf_outputs(model, features, mask)

    inputs = {"speech_features": features, "speech_padding_mask": mask}
    outputs = converted.encoder(inputs)
    hidden = test_case.to_numpy(outputs["sequence_output"])
    np.testing.assert_array_equal(test_case.to_numpy(outputs["padding_mask"]), mask)
    hidden_diff = max_diff_at_real(hidden, expected_hidden, mask)
    assert hidden_diff < TOLERANCE, hidden_diff
    assert (converted.recognizer is not None) == with_ctc
    if with_ctc:
        assert converted.recognizer.blank_index == model.config.pad_token_id
        logits = test_case.to_numpy(converted.recognizer(inputs)["logits"])
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


def test_ctc_checkpoint_becomes_an_ordinary_task_preset(tmp_path, seeded):
    """A converted Wav2Vec2BertForCTC is a SpeechRecognizer task preset that
    keras-hub's task loader reads: head, blank, front end and all."""
    from keras_slam.models import SpeechRecognizer

    hf_dir, preset_dir = tmp_path / "hf", tmp_path / "preset"
    vocabulary = {
        token: i
        for i, token in enumerate(
            ["<pad>", "<s>", "</s>", "<unk>", "|", "a", "b", "c", "d", "e", "f", "g", "h"]
        )
    }
    model = save_hf_model(hf_dir, hf_config(pad_token_id=3), with_ctc=True)
    (hf_dir / "vocab.json").write_text(json.dumps(vocabulary))
    hf_w2v_bert.convert_to_preset(hf_dir, preset_dir)

    files = set(os.listdir(preset_dir))
    assert {
        "config.json",
        "model.weights.h5",
        "metadata.json",
        "task.json",
        "task.weights.h5",
        "preprocessor.json",
    } <= files
    assert not any(name.startswith("ctc_head") for name in files)
    assert json.loads((preset_dir / "task.json").read_text())["class_name"] == "SpeechRecognizer"
    metadata = json.loads((preset_dir / "metadata.json").read_text())
    assert metadata["weights"] == "converted" and metadata["keras_slam_version"]
    assert metadata["vocabulary"] == list(vocabulary)

    recognizer = get_preset_loader(str(preset_dir)).load_task(SpeechRecognizer, True, True)
    assert recognizer.blank_index == 3
    assert recognizer.preprocessor.audio_converter.get_config()["stack_frames"] == 2
    features, mask = padded_features(seeded)
    _, expected_logits = hf_outputs(model, features, mask)
    logits = recognizer({"speech_features": features, "speech_padding_mask": mask})["logits"]
    assert max_diff_at_real(test_case.to_numpy(logits), expected_logits, mask) < TOLERANCE


def test_bare_checkpoint_becomes_a_backbone_preset_with_its_front_end(tmp_path):
    from keras_slam.models import SpeechRecognizer

    save_hf_model(tmp_path / "hf", hf_config(feature_projection_input_dim=40), with_ctc=False)
    hf_w2v_bert.convert_to_preset(tmp_path / "hf", tmp_path / "preset")
    assert "task.json" not in os.listdir(tmp_path / "preset")
    recognizer = SpeechRecognizer.from_preset(str(tmp_path / "preset"), vocabulary_size=7)
    assert isinstance(recognizer.backbone, SpeechEncoder) and recognizer.vocabulary_size == 7
    assert recognizer.preprocessor.audio_converter.num_mel_bins == 20


def test_from_preset_on_hugging_face_directory(tmp_path, seeded):
    model = save_hf_model(tmp_path, hf_config(), with_ctc=False)
    encoder = SpeechEncoder.from_preset(str(tmp_path))
    features, mask = padded_features(seeded)
    expected, _ = hf_outputs(model, features, mask)
    hidden = encoder({"speech_features": features, "speech_padding_mask": mask})["sequence_output"]
    assert max_diff_at_real(test_case.to_numpy(hidden), expected, mask) < TOLERANCE


def test_speech_classifier_from_w2v_bert_checkpoints(tmp_path, seeded):
    """A classifier on an imported w2v-BERT 2.0-style encoder: from the
    Hugging Face directory, from its converted preset (front end included)
    and from a converted CTC task preset; its class names survive a save."""
    model = save_hf_model(tmp_path / "hf", hf_config(), with_ctc=False)
    save_hf_model(tmp_path / "hf_ctc", hf_config(pad_token_id=3), with_ctc=True)
    hf_w2v_bert.convert_to_preset(tmp_path / "hf", tmp_path / "preset")
    hf_w2v_bert.convert_to_preset(tmp_path / "hf_ctc", tmp_path / "ctc_preset")
    features, mask = padded_features(seeded)
    expected, _ = hf_outputs(model, features, mask)
    names = ["de", "en", "fr"]
    for source in ("hf", "preset"):
        classifier = SpeechClassifier.from_preset(str(tmp_path / source), class_names=names)
        assert isinstance(classifier.backbone, SpeechEncoder) and not classifier.use_shared_encoder
        batch = {"speech_features": features, "speech_padding_mask": mask}
        hidden = test_case.to_numpy(classifier.backbone(batch)["sequence_output"])
        assert max_diff_at_real(hidden, expected, mask) < TOLERANCE, source
    # The converted preset's front end (2 stacked frames of 80 bins) came along.
    assert classifier.preprocessor.audio_converter.get_config()["stack_frames"] == 2
    waveform = speech_like(seeded, 9600)
    labels, probabilities = classifier.predict_labels([waveform])
    classifier.save_to_preset(str(tmp_path / "task"))
    restored = SpeechClassifier.from_preset(str(tmp_path / "task"))
    assert restored.class_names == names
    restored_labels, restored_probabilities = restored.predict_labels([waveform])
    assert restored_labels == labels and set(labels) <= set(names)
    np.testing.assert_allclose(restored_probabilities, probabilities, atol=1e-6)
    ctc = SpeechClassifier.from_preset(str(tmp_path / "ctc_preset"), num_classes=2)
    recognizer_encoder = SpeechEncoder.from_preset(str(tmp_path / "ctc_preset"))
    for ours, theirs in zip(ctc.backbone.weights, recognizer_encoder.weights):
        np.testing.assert_array_equal(test_case.to_numpy(ours), test_case.to_numpy(theirs))


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
    converted = hf_w2v_bert.convert_checkpoint(tmp_path)
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
    features, frame_mask = converted.front_end(waveform, sample_mask)
    outputs = converted.recognizer({"speech_features": features, "speech_padding_mask": frame_mask})
    logits = test_case.to_numpy(outputs["logits"])
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
    with pytest.raises(
        OSError, match="cannot download hf://facebook/w2v-bert-2.0.*convert-w2v-bert"
    ):
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
    """The imported CTC head and blank index serve SpeechRecognizer as is,
    from the converted preset and from the Hugging Face directory itself."""
    from keras_slam.models import SpeechRecognizer

    model = save_hf_model(tmp_path / "hf", hf_config(pad_token_id=3), with_ctc=True)
    hf_w2v_bert.convert_to_preset(tmp_path / "hf", tmp_path / "preset")
    features, mask = padded_features(seeded)
    _, expected_logits = hf_outputs(model, features, mask)
    for preset in (tmp_path / "preset", tmp_path / "hf"):
        recognizer = SpeechRecognizer.from_preset(str(preset))
        assert recognizer.blank_index == 3
        outputs = recognizer({"speech_features": features, "speech_padding_mask": mask})
        logits = test_case.to_numpy(outputs["logits"])
        assert max_diff_at_real(logits, expected_logits, mask) < TOLERANCE, preset


def edit_hf_config(hf_dir, **fields):
    """Overwrites fields of a saved config.json (None writes null)."""
    path = hf_dir / "config.json"
    config = json.loads(path.read_text())
    config.update(fields)
    path.write_text(json.dumps(config))
    return str(path)


def assert_nothing_written(parent):
    assert sorted(os.listdir(parent)) == ["hf"]


@pytest.mark.parametrize("pad_token_id", [None, 13, "0"])
def test_bad_ctc_blank_fails_before_anything_is_written(tmp_path, pad_token_id):
    save_hf_model(tmp_path / "hf", hf_config(), with_ctc=True)
    config_path = edit_hf_config(tmp_path / "hf", pad_token_id=pad_token_id)
    message = f"{re.escape(config_path)}: field 'pad_token_id' \\(the CTC blank\\) must be an integer in \\[0, 13\\)"
    with pytest.raises(ValueError, match=message):
        hf_w2v_bert.convert_to_preset(tmp_path / "hf", tmp_path / "preset")
    assert_nothing_written(tmp_path)


def test_failed_write_leaves_no_preset(tmp_path, monkeypatch):
    save_hf_model(tmp_path / "hf", hf_config(), with_ctc=True)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(preset_utils, "update_metadata", disk_full)
    with pytest.raises(OSError, match="No space left"):
        hf_w2v_bert.convert_to_preset(tmp_path / "hf", tmp_path / "preset")
    assert_nothing_written(tmp_path)


def test_existing_preset_is_not_overwritten(tmp_path):
    save_hf_model(tmp_path / "hf", hf_config(num_hidden_layers=1), with_ctc=False)
    (tmp_path / "preset").mkdir()
    hf_w2v_bert.convert_to_preset(tmp_path / "hf", tmp_path / "preset")  # empty: fine
    with pytest.raises(FileExistsError, match="preset exists and is not an empty directory"):
        hf_w2v_bert.convert_to_preset(tmp_path / "hf", tmp_path / "preset")


@pytest.mark.parametrize(
    "fields, problem",
    [
        (dict(hiden_size=24), "unknown field 'hiden_size' (did you mean 'hidden_size'?)"),
        (
            dict(num_hidden_layer=2),
            "unknown field 'num_hidden_layer' (did you mean 'num_hidden_layers'?)",
        ),
        (
            dict(num_hidden_layers="2"),
            "field 'num_hidden_layers' must be a positive integer, got '2'",
        ),
        (dict(hidden_dropout=None), "field 'hidden_dropout' must be a number in [0, 1), got None"),
        (dict(add_adapter="false"), "field 'add_adapter' must be a boolean, got 'false'"),
        (
            dict(conv_depthwise_kernel_size=4),
            "field 'conv_depthwise_kernel_size' must be an odd positive integer, got 4",
        ),
        (
            dict(feature_projection_input_dim=41),
            "field 'feature_projection_input_dim' must be an even positive integer, got 41",
        ),
    ],
)
def test_config_errors_name_the_file_and_field(tmp_path, fields, problem):
    save_hf_model(tmp_path / "hf", hf_config(), with_ctc=True)
    config_path = edit_hf_config(tmp_path / "hf", **fields)
    with pytest.raises(ValueError, match=re.escape(f"{config_path}: {problem}")):
        hf_w2v_bert.convert_to_preset(tmp_path / "hf", tmp_path / "preset")
    assert_nothing_written(tmp_path)


def test_config_errors_name_the_file_without_weights(tmp_path):
    hf_config().save_pretrained(tmp_path)
    config_path = edit_hf_config(tmp_path, hiden_size=24)
    with pytest.raises(ValueError, match=re.escape(f"{config_path}: unknown field 'hiden_size'")):
        SpeechEncoder.from_preset(str(tmp_path), load_weights=False)


def test_broken_config_json_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "wav2vec2-bert",')
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'}: not valid JSON")):
        SpeechEncoder.from_preset(str(tmp_path))


def test_depthwise_kernel_rule_is_hugging_face_s():
    """An even kernel: Hugging Face refuses to build the model, and so do we."""
    with pytest.raises(ValueError, match="conv_depthwise_kernel_size"):
        transformers.Wav2Vec2BertModel(hf_config(conv_depthwise_kernel_size=4))
    with pytest.raises(ValueError, match="conv_depthwise_kernel_size"):
        hf_w2v_bert.convert_config(hf_config(conv_depthwise_kernel_size=4).to_dict())
    odd_kernel = hf_config(conv_depthwise_kernel_size=3).to_dict()
    converted = hf_w2v_bert.convert_config(odd_kernel)
    assert converted["conformer"].kernel_size == 3


def test_front_end_follows_feature_projection_input_dim(tmp_path, seeded):
    """feature_projection_input_dim 40: 2 stacked frames of 20 mel bins, as
    SeamlessM4TFeatureExtractor(num_mel_bins=20) computes them."""
    save_hf_model(tmp_path, hf_config(feature_projection_input_dim=40), with_ctc=False)
    converted = hf_w2v_bert.convert_checkpoint(tmp_path)
    encoder, front_end = converted.encoder, converted.front_end
    signals = [speech_like(seeded, n) for n in (9600, 7040)]
    extractor = transformers.SeamlessM4TFeatureExtractor(feature_size=20, num_mel_bins=20)
    expected = extractor(signals, sampling_rate=16000, return_tensors="np", padding=True)
    waveform = np.zeros((2, 9600), "float32")
    sample_mask = np.zeros_like(waveform)
    for i, signal in enumerate(signals):
        waveform[i, : len(signal)], sample_mask[i, : len(signal)] = signal, 1.0
    features, frame_mask = front_end(waveform, sample_mask)
    features, frame_mask = test_case.to_numpy(features), test_case.to_numpy(frame_mask)
    assert features.shape[-1] == encoder.feature_dim == expected["input_features"].shape[-1] == 40
    length = min(features.shape[1], expected["input_features"].shape[1])
    np.testing.assert_array_equal(frame_mask[:, :length], expected["attention_mask"][:, :length])
    diff = max_diff_at_real(
        features[:, :length], expected["input_features"][:, :length], frame_mask[:, :length]
    )
    assert diff < 1e-3, diff
