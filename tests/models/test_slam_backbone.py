import json

import numpy as np

from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.slam_backbone import (
    SLAMBackbone,
    pack_sequences,
    unpack_sequences,
    with_text_vocabulary,
)
from keras_slam.utils.parameters import count_parameters
from tests import test_case

TINY = {
    "vocabulary_size": 40,
    "hidden_dim": 16,
    "num_speech_layers": 1,
    "num_shared_layers": 2,
    "feature_dim": 12,
    "subsampling_filters": 4,
    "conformer": ConformerConfig(num_heads=2, ffn_dim=32, conv_norm_groups=4),
}


def make_inputs(rng, batch_size=3, frames=21, tokens=7):
    token_mask = test_case.random_padding_mask(rng, batch_size, tokens, min_length=1)
    return {
        "speech_features": rng.normal(size=(batch_size, frames, 12)).astype("float32"),
        "speech_padding_mask": test_case.random_padding_mask(rng, batch_size, frames, min_length=5),
        "token_ids": (rng.integers(1, 40, size=(batch_size, tokens)) * token_mask).astype("int32"),
        "token_padding_mask": token_mask,
    }


def call_fn_of(backbone):
    def call_fn(batch):
        outputs = backbone(batch)
        return {
            "speech_tower_output": (outputs["speech_tower_output"], outputs["speech_padding_mask"]),
            "sequence_output": (outputs["sequence_output"], outputs["padding_mask"]),
        }

    return call_fn


def build_backbone(inputs):
    backbone = SLAMBackbone(**TINY)
    return backbone, call_fn_of(backbone)


PADDED = {"speech_features": "speech_padding_mask", "token_ids": "token_padding_mask"}


def test_backbone(seeded, parity_worker, tmp_path):
    # 21 frames -> 6 after conv subsampling, then 7 tokens packed behind them.
    expected_shapes = {"speech_tower_output": (3, 6, 16), "sequence_output": (3, 13, 16)}
    test_case.run_backbone_test(
        "tests.models.test_slam_backbone:build_backbone",
        call_fn_of,
        make_inputs(seeded),
        PADDED,
        expected_shapes,
        parity_worker,
        str(tmp_path),
    )
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    assert saved["conformer"] == TINY["conformer"].to_dict()


def test_speech_only_and_text_only_padding_invariance(seeded):
    inputs = make_inputs(seeded)
    backbone = SLAMBackbone(**TINY)

    def speech_only(batch):
        outputs = backbone.encode_speech(batch["speech_features"], batch["speech_padding_mask"])
        return {"sequence_output": (outputs["sequence_output"], outputs["padding_mask"])}

    def text_only(batch):
        embedded = backbone.embed_text(batch["token_ids"], batch["token_padding_mask"])
        encoded = backbone.encode_shared(embedded, batch["token_padding_mask"])
        return {"sequence_output": (encoded, batch["token_padding_mask"])}

    test_case.assert_padding_invariant(speech_only, inputs, PADDED)
    test_case.assert_padding_invariant(text_only, inputs, PADDED)


def test_absent_modality_equals_single_modality(seeded):
    """Fully masked text leaves the joint output equal to speech alone."""
    inputs = make_inputs(seeded)
    inputs["token_padding_mask"][:] = 0
    backbone = SLAMBackbone(**TINY)
    joint = backbone(inputs)
    alone = backbone.encode_speech(inputs["speech_features"], inputs["speech_padding_mask"])
    speech, text = backbone.unpack(
        joint["sequence_output"], joint["speech_padding_mask"], inputs["token_padding_mask"]
    )
    mask = test_case.to_numpy(alone["padding_mask"]).astype(bool)
    np.testing.assert_allclose(
        test_case.to_numpy(speech)[mask],
        test_case.to_numpy(alone["sequence_output"])[mask],
        atol=1e-5,
    )
    assert np.all(test_case.to_numpy(text) == 0)


def test_pack_puts_real_positions_first_and_unpack_inverts(seeded):
    speech = seeded.normal(size=(2, 4, 3)).astype("float32")
    text = seeded.normal(size=(2, 3, 3)).astype("float32")
    speech_mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], "float32")
    text_mask = np.array([[1, 1, 1], [1, 0, 0]], "float32")
    packed, packed_mask = (
        test_case.to_numpy(t) for t in pack_sequences(speech, speech_mask, text, text_mask)
    )
    np.testing.assert_array_equal(packed_mask, [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(packed[0, :5], np.concatenate([speech[0, :2], text[0, :3]]))
    np.testing.assert_array_equal(packed[1, :5], np.concatenate([speech[1], text[1, :1]]))
    back_speech, back_text = unpack_sequences(packed, speech_mask, text_mask)
    np.testing.assert_array_equal(test_case.to_numpy(back_speech), speech)
    np.testing.assert_array_equal(test_case.to_numpy(back_text), text)


def test_parameter_count_without_allocation_equals_allocated():
    assert count_parameters(SLAMBackbone, **TINY) == SLAMBackbone(**TINY).count_params()


def test_with_text_vocabulary_keeps_every_other_weight(seeded):
    backbone = SLAMBackbone(**TINY)
    copy = with_text_vocabulary(backbone, 57)
    assert copy.vocabulary_size == 57
    assert tuple(copy.token_embedding.embeddings.shape) == (57, TINY["hidden_dim"])
    kept = [w for w in copy.weights if "token_embedding" not in w.path]
    assert len(kept) == len(backbone.weights) - 1
    originals = {w.path: w for w in backbone.weights}
    for weight in kept:
        np.testing.assert_array_equal(
            test_case.to_numpy(weight), test_case.to_numpy(originals[weight.path])
        )
    inputs = make_inputs(seeded)
    inputs["token_padding_mask"][:] = 0.0  # speech alone: the same encoder
    np.testing.assert_allclose(
        test_case.to_numpy(copy(inputs)["sequence_output"]),
        test_case.to_numpy(backbone(inputs)["sequence_output"]),
        atol=1e-5,
    )
