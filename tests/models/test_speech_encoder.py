import dataclasses
import json

import pytest

from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.speech_encoder import SpeechEncoder, count_parameters
from tests import test_case

TINY = {
    "hidden_dim": 16,
    "num_layers": 2,
    "feature_dim": 12,
    "subsampling_filters": 4,
    "conformer": ConformerConfig(num_heads=2, ffn_dim=32, conv_norm_groups=4),
}
TINY_STACKED = dict(
    TINY,
    feature_dim=10,
    front_end="stacked_features",
    projection_dim=8,
    conformer=dataclasses.replace(
        TINY["conformer"],
        kernel_size=4,
        conv_padding="causal",
        conv_norm="layer",
        pointwise_bias=False,
        position_encoding="relative_key",
        left_context=3,
        right_context=1,
    ),
)


def make_inputs(rng, batch_size=3, length=21, feature_dim=12):
    return {
        "speech_features": rng.normal(size=(batch_size, length, feature_dim)).astype("float32"),
        "speech_padding_mask": test_case.random_padding_mask(rng, batch_size, length, min_length=5),
    }


def call_fn_of(encoder):
    def call_fn(batch):
        outputs = encoder(batch)
        return {"sequence_output": (outputs["sequence_output"], outputs["padding_mask"])}

    return call_fn


def build_encoder(inputs):
    config = TINY if inputs["speech_features"].shape[-1] == TINY["feature_dim"] else TINY_STACKED
    encoder = SpeechEncoder(**config)
    return encoder, call_fn_of(encoder)


@pytest.mark.parametrize("config", [TINY, TINY_STACKED], ids=["conv", "stacked"])
def test_output_shapes_and_padding_invariance(seeded, config):
    inputs = make_inputs(seeded, feature_dim=config["feature_dim"])
    encoder = SpeechEncoder(**config)
    outputs = encoder(inputs)
    length = 6 if config is TINY else 21  # ceil(ceil(21 / 2) / 2)
    dim = config.get("projection_dim") or config["hidden_dim"]
    assert tuple(outputs["sequence_output"].shape) == (3, length, dim)
    assert tuple(outputs["padding_mask"].shape) == (3, length)
    test_case.assert_padding_invariant(
        call_fn_of(encoder), inputs, {"speech_features": "speech_padding_mask"}
    )


@pytest.mark.parametrize("feature_dim", [12, 10], ids=["conv", "stacked"])
def test_backend_parity(seeded, parity_worker, feature_dim):
    test_case.assert_backend_parity(
        "tests.models.test_speech_encoder:build_encoder",
        make_inputs(seeded, feature_dim=feature_dim),
        parity_worker=parity_worker,
    )


def test_serialization_roundtrip_and_preset(seeded, tmp_path):
    inputs = make_inputs(seeded)
    encoder, call_fn = build_encoder(inputs)
    test_case.assert_serialization_roundtrip(encoder, call_fn_of, inputs)
    encoder.save_to_preset(str(tmp_path))
    import keras_hub

    restored = keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert isinstance(restored, SpeechEncoder)
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    assert saved["conformer"] == dataclasses.asdict(TINY["conformer"])
    assert restored.conformer == TINY["conformer"]
    test_case.assert_outputs_close(
        test_case.normalize_outputs(call_fn(inputs)),
        test_case.normalize_outputs(call_fn_of(restored)(inputs)),
        atol=1e-6,
    )


def test_mixed_precision_finite(seeded):
    test_case.assert_mixed_precision_finite(
        "tests.models.test_speech_encoder:build_encoder", make_inputs(seeded)
    )


@pytest.mark.parametrize("config", [TINY, TINY_STACKED], ids=["conv", "stacked"])
def test_parameter_count_without_allocation_equals_allocated(config):
    assert count_parameters(SpeechEncoder, **config) == SpeechEncoder(**config).count_params()
