"""Layout maps: every weight has a rule; sharded steps equal one device.

The rule coverage runs on every backend. The sharded training step is
JAX-only by design (`keras.distribution` shards through JAX; TensorFlow's
multi-device path is `tf.distribute`, see test_mirrored_strategy.py): it
runs tests/models/distribution_worker.py in a subprocess with 8 simulated
CPU devices, from the JAX pass of the suite.
"""

import re

import keras
import pytest

from keras_slam.models.layout_map import get_layout_map, layout_rules
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.models.speech_recognizer import SpeechRecognizer
from tests.conftest import xla_flags_with_devices
from tests.models.distribution_worker import BACKBONE, VOCABULARY, run_worker
from tests.models.test_slam_pretrainer import build_pretrainer


def matching_rules(path):
    return [pattern for pattern in layout_rules() if re.fullmatch(pattern, path)]


def test_every_kernel_and_table_has_one_rule(seeded):
    encoder = SpeechEncoder(
        num_layers=1,
        hidden_dim=BACKBONE["hidden_dim"],
        feature_dim=BACKBONE["feature_dim"],
        subsampling_filters=4,
        conformer=BACKBONE["conformer"],
    )
    models = [build_pretrainer(), SpeechRecognizer(encoder, vocabulary_size=VOCABULARY)]
    for model in models:
        for weight in model.weights:
            rules = matching_rules(weight.path)
            assert len(rules) <= 1, (weight.path, rules)
            # Vectors and scalars (norms, biases of row-parallel layers,
            # objective weights) are replicated by default; every matrix or
            # table is named by a rule.
            if len(weight.shape) >= 2:
                assert rules, f"{weight.path} {weight.shape} has no layout rule"
                assert len(layout_rules()[rules[0]]) == len(weight.shape), weight.path


def test_layout_map_names_the_missing_mesh_axis():
    devices = [f"cpu:{i}" for i in range(8)]
    mesh = keras.distribution.DeviceMesh((2, 4), ("data", "model"), devices)
    with pytest.raises(ValueError, match="no axis 'batch'"):
        get_layout_map(mesh)
    layout_map = SpeechEncoder.get_layout_map(mesh, data_parallel_dim_name="data")
    path = "speech_tower/encoder/conformer_block_3/ffn2/output_dense/kernel"
    assert layout_map[path].axes == ("model", "data")


@pytest.mark.slow(backend="jax")
def test_sharded_step_equals_single_device_step():
    report = run_worker(
        "tests.models.distribution_worker",
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=xla_flags_with_devices(),
    )
    for path, (declared, actual) in report["sharding"].items():
        assert declared == actual, (path, declared, actual)
    assert any("model" in declared for declared, _ in report["sharding"].values())
    for name, differences in report["steps"].items():
        assert differences["loss"] <= 1e-5, (name, differences)
        assert differences["weights"] <= 1e-5, (name, differences)
