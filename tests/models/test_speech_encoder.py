import dataclasses
import json

import pytest

from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.utils.parameters import count_parameters
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


BUILDER = "tests.models.test_speech_encoder:build_encoder"
PADDED = {"speech_features": "speech_padding_mask"}


def test_backbone(seeded, parity_worker, tmp_path):
    # 21 frames -> ceil(ceil(21 / 2) / 2) = 6 after conv subsampling.
    test_case.run_backbone_test(
        BUILDER,
        call_fn_of,
        make_inputs(seeded),
        PADDED,
        {"sequence_output": (3, 6, 16)},
        parity_worker,
        str(tmp_path),
    )
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    assert saved["conformer"] == TINY["conformer"].to_dict()


def test_stacked_front_end_padding_invariance_and_parity(seeded, parity_worker):
    inputs = make_inputs(seeded, feature_dim=TINY_STACKED["feature_dim"])
    _, call_fn = test_case.build_case(BUILDER, inputs)
    outputs = test_case.normalize_outputs(call_fn(inputs))
    assert outputs["sequence_output"][0].shape == (3, 21, 8)
    test_case.assert_padding_invariant(call_fn, inputs, PADDED)
    test_case.assert_backend_parity(BUILDER, inputs, parity_worker=parity_worker)


@pytest.mark.parametrize("config", [TINY, TINY_STACKED], ids=["conv", "stacked"])
def test_parameter_count_without_allocation_equals_allocated(config):
    assert count_parameters(SpeechEncoder, **config) == SpeechEncoder(**config).count_params()
