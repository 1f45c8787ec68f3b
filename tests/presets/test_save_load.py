"""save_to_preset / from_preset: round trips, other backends, clear errors."""

import json
import os
import subprocess
import sys
import warnings

import keras
import keras_hub
import numpy as np
import pytest

from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.utils import preset_utils
from tests import test_case
from tests.conftest import REPO_ROOT

TINY_ENCODER = dict(
    hidden_dim=16,
    num_layers=1,
    feature_dim=20,
    front_end="stacked_features",
    conformer=ConformerConfig(
        num_heads=2,
        ffn_dim=32,
        kernel_size=3,
        conv_padding="causal",
        conv_norm="layer",
        pointwise_bias=False,
        position_encoding="relative_key",
        left_context=4,
        right_context=2,
    ),
)


@keras.saving.register_keras_serializable(package="keras_slam_tests")
class TinyFrameClassifier(preset_utils.PresetMixin, keras_hub.models.Task):
    """A task with weights of its own (a frame classifier on SpeechEncoder)."""

    backbone_cls = SpeechEncoder

    def __init__(self, backbone, num_classes=5, preprocessor=None, **kwargs):
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.head = keras.layers.Dense(num_classes, name="head")
        outputs = backbone.output
        logits = self.head(outputs["sequence_output"])
        super().__init__(inputs=backbone.input, outputs=logits, **kwargs)
        self.num_classes = num_classes

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def slam_inputs(rng, batch_size=2, frames=24, tokens=7):
    speech_mask = test_case.random_padding_mask(rng, batch_size, frames, min_length=8)
    token_mask = test_case.random_padding_mask(rng, batch_size, tokens, min_length=2)
    return {
        "speech_features": rng.normal(size=(batch_size, frames, 80)).astype("float32"),
        "speech_padding_mask": speech_mask,
        "token_ids": rng.integers(3, 128, size=(batch_size, tokens)).astype("int32"),
        "token_padding_mask": token_mask,
    }


def encoder_inputs(rng, batch_size=2, frames=9):
    return {
        "speech_features": rng.normal(size=(batch_size, frames, 20)).astype("float32"),
        "speech_padding_mask": test_case.random_padding_mask(rng, batch_size, frames, 3),
    }


def outputs_of(model, inputs):
    outputs = model(inputs)
    if not isinstance(outputs, dict):
        outputs = {"logits": outputs}
    return {name: test_case.to_numpy(value) for name, value in outputs.items()}


MODEL_CLASSES = {"slam": SLAMBackbone, "task": TinyFrameClassifier}


def load_and_run(directory):
    """Loads each preset saved under `directory` and writes its outputs.

    Run in a subprocess on another backend by `run_on_backend`.
    """
    for kind, model_cls in MODEL_CLASSES.items():
        with np.load(os.path.join(directory, f"{kind}_inputs.npz")) as data:
            inputs = {key: data[key] for key in data.files}
        model = model_cls.from_preset(os.path.join(directory, kind))
        np.savez(os.path.join(directory, f"{kind}_outputs.npz"), **outputs_of(model, inputs))


def run_on_backend(backend, directory, inputs):
    """{kind: outputs} of the presets `directory/<kind>` loaded on `backend`."""
    for kind, kind_inputs in inputs.items():
        np.savez(os.path.join(directory, f"{kind}_inputs.npz"), **kind_inputs)
    code = (
        f"from tests.presets.test_save_load import load_and_run; load_and_run({str(directory)!r})"
    )
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO_ROOT)
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, cwd=REPO_ROOT, env=env)
    outputs = {}
    for kind in inputs:
        with np.load(os.path.join(directory, f"{kind}_outputs.npz")) as data:
            outputs[kind] = {key: data[key] for key in data.files}
    return outputs


def assert_same_outputs(expected, actual, atol):
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=atol, err_msg=name)


def test_backbone_and_task_round_trip_here_and_on_another_backend(tmp_path, seeded):
    with pytest.warns(UserWarning, match="'slam_tiny' has no published weights"):
        backbone = SLAMBackbone.from_preset("slam_tiny")
    inputs = slam_inputs(seeded)
    expected = outputs_of(backbone, inputs)
    backbone.save_to_preset(tmp_path / "slam")
    assert {"config.json", "metadata.json", "model.weights.h5"} <= set(
        os.listdir(tmp_path / "slam")
    )
    metadata = json.loads((tmp_path / "slam" / "metadata.json").read_text())
    assert metadata["keras_slam_version"] == preset_utils.KERAS_SLAM_VERSION
    restored = SLAMBackbone.from_preset(str(tmp_path / "slam"))
    assert_same_outputs(expected, outputs_of(restored, inputs), atol=1e-6)
    # keras-hub's own entry point reads our preset too.
    generic = keras_hub.models.Backbone.from_preset(str(tmp_path / "slam"))
    assert_same_outputs(expected, outputs_of(generic, inputs), atol=1e-6)

    task = TinyFrameClassifier(SpeechEncoder(**TINY_ENCODER))
    task_inputs = encoder_inputs(seeded)
    task_expected = outputs_of(task, task_inputs)
    task.save_to_preset(tmp_path / "task")
    assert {
        "task.json",
        "task.weights.h5",
        "config.json",
        "model.weights.h5",
        "metadata.json",
    } <= set(os.listdir(tmp_path / "task"))
    restored_task = TinyFrameClassifier.from_preset(str(tmp_path / "task"))
    assert_same_outputs(task_expected, outputs_of(restored_task, task_inputs), atol=1e-6)

    other = run_on_backend(
        test_case.next_backend(), tmp_path, {"slam": inputs, "task": task_inputs}
    )
    assert_same_outputs(expected, other["slam"], 1e-4)
    assert_same_outputs(task_expected, other["task"], 1e-4)


def test_named_task_preset_builds_backbone(seeded):
    # A SpeechEncoder preset cannot make a SLAMBackbone.
    with (
        pytest.warns(UserWarning, match="w2v_bert_2_0"),
        pytest.raises(ValueError, match="w2v_bert_2_0.*SLAMBackbone cannot"),
    ):
        SLAMBackbone.from_preset("w2v_bert_2_0")


def test_tokenizer_round_trip(saved_encoder):
    """A tokenizer saved beside a backbone, read back as keras-hub's loaders do.

    (`CharacterTokenizer.from_preset` itself needs a `backbone_cls` on the
    tokenizer class to match the preset's backbone.)
    """
    from keras_hub.src.utils.preset_utils import get_preset_loader

    from keras_slam.data.tokenizers import CharacterTokenizer, build_character_vocabulary

    tmp_path = saved_encoder
    tokenizer = CharacterTokenizer(
        build_character_vocabulary(["hello world", "keras slam"]), sequence_length=16
    )
    tokenizer.save_to_preset(tmp_path)
    restored = get_preset_loader(str(tmp_path)).load_tokenizer(CharacterTokenizer)
    texts = ["hello slam", "world"]
    np.testing.assert_array_equal(
        test_case.to_numpy(restored(texts)), test_case.to_numpy(tokenizer(texts))
    )
    (tmp_path / "assets" / "tokenizer" / "vocabulary.json").unlink()
    with pytest.raises(FileNotFoundError, match="vocabulary.json"):
        get_preset_loader(str(tmp_path)).load_tokenizer(CharacterTokenizer)


@pytest.fixture
def saved_encoder(tmp_path):
    encoder = SpeechEncoder(**TINY_ENCODER)
    encoder.save_to_preset(tmp_path)
    return tmp_path


@pytest.mark.parametrize("missing", ["config.json", "metadata.json", "model.weights.h5"])
def test_missing_file_is_named(saved_encoder, missing):
    (saved_encoder / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        SpeechEncoder.from_preset(str(saved_encoder))


def test_missing_weights_allowed_without_load_weights(saved_encoder):
    (saved_encoder / "model.weights.h5").unlink()
    assert SpeechEncoder.from_preset(str(saved_encoder), load_weights=False).num_layers == 1


def set_version(preset, version):
    path = preset / "metadata.json"
    metadata = json.loads(path.read_text())
    if version is None:
        metadata.pop("keras_slam_version")
    else:
        metadata["keras_slam_version"] = version
    path.write_text(json.dumps(metadata))


def test_version_policy(saved_encoder):
    major, minor = (int(x) for x in preset_utils.KERAS_SLAM_VERSION.split(".")[:2])
    set_version(saved_encoder, f"{major}.{minor + 1}.0")
    with pytest.raises(ValueError, match=f"saved by keras-slam {major}.{minor + 1}.0, newer"):
        SpeechEncoder.from_preset(str(saved_encoder))
    set_version(saved_encoder, f"{major}.{minor}.99")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SpeechEncoder.from_preset(str(saved_encoder))
    set_version(saved_encoder, None)
    with pytest.warns(UserWarning, match="no keras_slam_version"):
        SpeechEncoder.from_preset(str(saved_encoder))
    if minor > 0 or major > 0:
        older = f"{major}.{minor - 1}.0" if minor > 0 else f"{major - 1}.0.0"
        set_version(saved_encoder, older)
        with pytest.warns(UserWarning, match=f"saved by keras-slam {older}"):
            SpeechEncoder.from_preset(str(saved_encoder))


def test_weights_not_matching_config_name_variable_and_shapes(saved_encoder):
    path = saved_encoder / "config.json"
    config = json.loads(path.read_text())
    config["config"]["conformer"]["ffn_dim"] = 48
    path.write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match=r"speech_tower/encoder/conformer_block_0/ffn1/intermediate_dense/kernel: "
        r"the config gives shape \(16, 48\), model.weights.h5 holds shape \(16, 32\)",
    ):
        SpeechEncoder.from_preset(str(saved_encoder))
