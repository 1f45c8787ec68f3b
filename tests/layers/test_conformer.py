import dataclasses
import json

import keras
import numpy as np
import pytest

from keras_slam.layers.conformer import (
    ConformerBlock,
    ConformerConfig,
    ConformerEncoder,
    MaskedGroupNormalization,
)
from keras_slam.presets.hf_w2v_bert import load_wav2vec2_bert_layer
from tests import test_case
from tests.layers.test_attention import (
    FFN,
    HEADS,
    HIDDEN,
    LENGTH,
    make_inputs,
    randomize_,
    tiny_hf_config,
)

# SLAM: kernel 5, centred conv, GroupNorm, sinusoidal relative positions.
SLAM_BLOCK = ConformerConfig(
    num_heads=HEADS,
    ffn_dim=FFN,
    kernel_size=5,
    conv_norm="group",
    conv_norm_groups=4,
    position_encoding="relative_sinusoidal",
)
# w2v-BERT 2.0 / Hugging Face Wav2Vec2Bert, with a shorter kernel and context.
W2V_BERT_BLOCK = ConformerConfig(
    num_heads=HEADS,
    ffn_dim=FFN,
    kernel_size=7,
    conv_padding="causal",
    conv_norm="layer",
    pointwise_bias=False,
    position_encoding="relative_key",
    left_context=4,
    right_context=2,
)
BATCH_NORM_BLOCK = dataclasses.replace(
    SLAM_BLOCK, conv_norm="batch", position_encoding="relative_key"
)


def _call_fn(layer):
    def call_fn(batch):
        return (layer(batch["x"], batch["padding_mask"]), batch["padding_mask"])

    return call_fn


def build_slam_block(inputs):
    layer = ConformerBlock(HIDDEN, SLAM_BLOCK)
    layer(inputs["x"], inputs["padding_mask"])
    return layer, _call_fn(layer)


def build_w2v_bert_encoder(inputs):
    layer = ConformerEncoder(2, HIDDEN, W2V_BERT_BLOCK)
    layer(inputs["x"], inputs["padding_mask"])
    return layer, _call_fn(layer)


def build_batch_norm_block(inputs):
    layer = ConformerBlock(HIDDEN, BATCH_NORM_BLOCK)
    layer(inputs["x"], inputs["padding_mask"])
    return layer, _call_fn(layer)


BUILDERS = {
    "slam": "tests.layers.test_conformer:build_slam_block",
    "w2v_bert_encoder": "tests.layers.test_conformer:build_w2v_bert_encoder",
    "batch_norm": "tests.layers.test_conformer:build_batch_norm_block",
}


@pytest.mark.parametrize(
    "config, num_weights",
    # 2 FFNs x 6 + 2 LayerNorms x 2 + attention (8 + 3 or 1) + conv (9 or 7).
    [(SLAM_BLOCK, 36), (W2V_BERT_BLOCK, 32), (BATCH_NORM_BLOCK, 34)],
)
def test_block_layer(seeded, config, num_weights):
    inputs = make_inputs(seeded)
    outputs = test_case.run_layer_test(
        ConformerBlock(HIDDEN, config),
        inputs,
        (3, LENGTH, HIDDEN),
        num_weights,
        training=True,
    )
    assert np.all(test_case.to_numpy(outputs)[inputs["padding_mask"] == 0] == 0)


def test_encoder_layer(seeded):
    inputs = make_inputs(seeded)
    encoder = ConformerEncoder(2, HIDDEN, W2V_BERT_BLOCK)
    test_case.run_layer_test(encoder, inputs, (3, LENGTH, HIDDEN), 64)
    assert [block.name for block in encoder.blocks] == ["conformer_block_0", "conformer_block_1"]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_padding_invariance(seeded, name):
    inputs = make_inputs(seeded, batch_size=4)
    layer, call_fn = test_case.resolve_builder(BUILDERS[name])(inputs)
    if name == "batch_norm":  # make the moving statistics non-trivial
        layer(inputs["x"], inputs["padding_mask"], training=True)
    test_case.assert_padding_invariant(call_fn, inputs, {"x": "padding_mask"})


def test_batch_norm_statistics_ignore_padded_frames(seeded):
    inputs = make_inputs(seeded)
    # dropout 0: a deterministic training call
    layer = ConformerBlock(HIDDEN, dataclasses.replace(BATCH_NORM_BLOCK, dropout=0.0))
    garbage = dict(inputs, x=np.where(inputs["padding_mask"][..., None] > 0, inputs["x"], 1e3))
    outputs = []
    for batch in (inputs, garbage):
        for variable in layer.non_trainable_weights:  # reset the moving statistics
            variable.assign(
                np.zeros(variable.shape) if "mean" in variable.path else np.ones(variable.shape)
            )
        outputs.append(test_case.to_numpy(layer(batch["x"], batch["padding_mask"], training=True)))
        outputs.append(test_case.to_numpy(layer.non_trainable_weights[0]))
    np.testing.assert_allclose(outputs[0], outputs[2], atol=1e-5)
    np.testing.assert_allclose(outputs[1], outputs[3], atol=1e-6)


def test_batch_norm_moving_statistics_skip_a_non_finite_batch(seeded):
    """A NaN in one real frame: the step is skipped, and the moving statistics stay."""
    inputs = make_inputs(seeded)
    layer = ConformerBlock(HIDDEN, dataclasses.replace(BATCH_NORM_BLOCK, dropout=0.0))
    layer(inputs["x"], inputs["padding_mask"], training=True)
    before = [test_case.to_numpy(variable) for variable in layer.non_trainable_weights]
    poisoned = inputs["x"].copy()
    poisoned[0, 0, 0] = np.nan
    layer(poisoned, inputs["padding_mask"], training=True)
    for variable, expected in zip(layer.non_trainable_weights, before):
        np.testing.assert_array_equal(test_case.to_numpy(variable), expected)
    layer(inputs["x"], inputs["padding_mask"], training=True)  # a finite batch still updates them
    assert not np.array_equal(test_case.to_numpy(layer.non_trainable_weights[0]), before[0])


def test_masked_group_norm_matches_keras_group_norm_per_item(seeded):
    x = seeded.normal(2.0, 3.0, size=(3, LENGTH, HIDDEN)).astype("float32")
    mask = test_case.random_padding_mask(seeded, 3, LENGTH, min_length=2)
    ours = MaskedGroupNormalization(4)
    batched = test_case.to_numpy(ours(x, mask))
    reference = keras.layers.GroupNormalization(4, epsilon=1e-5)
    for i, length in enumerate(mask.sum(axis=1).astype(int)):
        expected = test_case.to_numpy(reference(x[i : i + 1, :length]))[0]
        np.testing.assert_allclose(batched[i, :length], expected, atol=1e-5)
    test_case.assert_padding_invariant(
        lambda b: (ours(b["x"], b["padding_mask"]), b["padding_mask"]),
        {"x": x, "padding_mask": mask},
        {"x": "padding_mask"},
    )


@pytest.mark.parametrize("name", ["slam", "w2v_bert_encoder"])
def test_backend_parity(seeded, parity_worker, name):
    test_case.assert_backend_parity(
        BUILDERS[name], make_inputs(seeded), parity_worker=parity_worker
    )


def test_serialization_roundtrip(seeded):
    inputs = make_inputs(seeded)
    layer, _ = build_w2v_bert_encoder(inputs)
    test_case.assert_serialization_roundtrip(layer, _call_fn, inputs)


@pytest.mark.parametrize("layer_cls", [ConformerBlock, ConformerEncoder])
def test_config_is_stored_as_json_and_restored(layer_cls):
    """get_config holds the ConformerConfig as a plain (JSON) dict;
    from_config, given that dict, rebuilds the same config."""
    args = (2,) if layer_cls is ConformerEncoder else ()
    layer = layer_cls(*args, HIDDEN, W2V_BERT_BLOCK)
    config = json.loads(json.dumps(layer.get_config()))
    assert config["conformer"] == dataclasses.asdict(W2V_BERT_BLOCK)
    restored = layer_cls.from_config(config)
    assert restored.conformer == W2V_BERT_BLOCK
    assert restored.get_config() == layer.get_config()


def test_default_block_is_slams_with_sinusoidal_positions():
    """One set of defaults: a block, an encoder and a backbone built from
    the same `ConformerConfig` use the same (SLAM) position encoding."""
    from keras_slam.models.slam_backbone import SLAMBackbone

    config = ConformerConfig(num_heads=HEADS, ffn_dim=FFN, conv_norm_groups=4)
    backbone = SLAMBackbone(
        vocabulary_size=8,
        hidden_dim=HIDDEN,
        num_speech_layers=1,
        num_shared_layers=1,
        conformer=config,
        subsampling_filters=4,
    )
    blocks = [
        ConformerBlock(HIDDEN, config),
        ConformerEncoder(1, HIDDEN, config).blocks[0],
        backbone.speech_tower.encoder.blocks[0],
        backbone.shared_encoder.blocks[0],
    ]
    encodings = {block.self_attention.position_encoding for block in blocks}
    assert encodings == {"relative_sinusoidal"}


def test_config_errors_name_the_fields():
    with pytest.raises(ValueError, match=r"unknown fields \['num_head'\], missing"):
        ConformerConfig.coerce({"num_head": 2, "ffn_dim": 8})
    with pytest.raises(TypeError, match="ConformerConfig or a dict, got list"):
        ConformerBlock(HIDDEN, [2, 8])
    assert ConformerConfig.coerce(dataclasses.asdict(SLAM_BLOCK)) == SLAM_BLOCK


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_mixed_bfloat16_finite(seeded, name):
    test_case.assert_mixed_precision_finite(BUILDERS[name], make_inputs(seeded))


def _hugging_face_outputs(module, inputs, **kwargs):
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(inputs["x"]), **kwargs)


@pytest.mark.parametrize("left_context, right_context", [(4, 2), (64, 8)])
def test_block_matches_hugging_face_layer(seeded, left_context, right_context):
    """A w2v-BERT 2.0 block with HF `Wav2Vec2BertEncoderLayer` weights."""
    import torch
    from transformers.models.wav2vec2_bert import modeling_wav2vec2_bert as hf

    torch.manual_seed(0)
    config = tiny_hf_config(
        "relative_key", left_context, right_context, conv_depthwise_kernel_size=31
    )
    reference = randomize_(hf.Wav2Vec2BertEncoderLayer(config)).eval()
    inputs = make_inputs(seeded)
    block = ConformerBlock(
        HIDDEN,
        dataclasses.replace(
            W2V_BERT_BLOCK,
            kernel_size=31,
            left_context=left_context,
            right_context=right_context,
        ),
    )
    block(inputs["x"], inputs["padding_mask"])
    load_wav2vec2_bert_layer(block, {k: v.numpy() for k, v in reference.state_dict().items()})

    mask = torch.from_numpy(inputs["padding_mask"])
    expected = _hugging_face_outputs(
        reference,
        inputs,
        attention_mask=(1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min,
        conv_attention_mask=mask,
    )
    actual = test_case.to_numpy(block(inputs["x"], inputs["padding_mask"]))
    real = inputs["padding_mask"].astype(bool)
    np.testing.assert_allclose(actual[real], expected.numpy()[real], atol=1e-4)


@pytest.mark.parametrize("position_encoding", ["relative_key", "relative_sinusoidal"])
def test_encoder_matches_hugging_face_encoder(seeded, position_encoding):
    """Two blocks with HF `Wav2Vec2BertEncoder` weights (HF "relative" = ours sinusoidal)."""
    import torch
    from transformers.models.wav2vec2_bert import modeling_wav2vec2_bert as hf

    torch.manual_seed(0)
    config = tiny_hf_config(position_encoding, conv_depthwise_kernel_size=7, num_hidden_layers=2)
    reference = randomize_(hf.Wav2Vec2BertEncoder(config), stddev=0.2).eval()
    inputs = make_inputs(seeded)
    encoder, call_fn = build_w2v_bert_encoder(inputs)
    if position_encoding != "relative_key":
        conformer = dataclasses.replace(W2V_BERT_BLOCK, position_encoding=position_encoding)
        encoder = ConformerEncoder(2, HIDDEN, conformer)
        encoder(inputs["x"], inputs["padding_mask"])
    hf_weights = {k: v.numpy() for k, v in reference.state_dict().items()}
    for i, block in enumerate(encoder.blocks):
        prefix = f"layers.{i}."
        load_wav2vec2_bert_layer(
            block, {k[len(prefix) :]: v for k, v in hf_weights.items() if k.startswith(prefix)}
        )
    expected = _hugging_face_outputs(
        reference, inputs, attention_mask=torch.from_numpy(inputs["padding_mask"]).long()
    ).last_hidden_state
    actual = test_case.to_numpy(encoder(inputs["x"], inputs["padding_mask"]))
    real = inputs["padding_mask"].astype(bool)
    np.testing.assert_allclose(actual[real], expected.numpy()[real], atol=1e-4)


def test_same_shaped_kernels_start_different(seeded):
    # One unseeded initializer instance shared by every sub-layer gave
    # ffn1/ffn2, q/k/v/out and the pointwise convolutions equal kernels.
    block = ConformerBlock(HIDDEN, SLAM_BLOCK)
    block.build((None, None, HIDDEN))
    attention = block.self_attention
    groups = {
        "ffn intermediate": [block.ffn1.intermediate_dense, block.ffn2.intermediate_dense],
        "ffn output": [block.ffn1.output_dense, block.ffn2.output_dense],
        "attention": [
            attention.query_dense,
            attention.key_dense,
            attention.value_dense,
            attention.output_dense,
            attention.position_dense,
        ],
    }
    for group, layers in groups.items():
        kernels = [test_case.to_numpy(layer.kernel) for layer in layers]
        for i in range(len(kernels)):
            for j in range(i + 1, len(kernels)):
                assert not np.allclose(kernels[i], kernels[j]), (
                    group,
                    layers[i].name,
                    layers[j].name,
                )
    # Reproducible: the same global seed gives the same fresh seeds.
    keras.utils.set_random_seed(7)
    first = ConformerBlock(HIDDEN, SLAM_BLOCK)
    first.build((None, None, HIDDEN))
    keras.utils.set_random_seed(7)
    second = ConformerBlock(HIDDEN, SLAM_BLOCK)
    second.build((None, None, HIDDEN))
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(test_case.to_numpy(a), test_case.to_numpy(b))


def test_remat_and_query_chunks_keep_outputs_and_gradients(seeded):
    inputs = make_inputs(seeded)
    x = keras.ops.convert_to_tensor(inputs["x"])
    padding_mask = keras.ops.convert_to_tensor(inputs["padding_mask"])
    # Plain, rematerialised, and rematerialised with attention in query chunks.
    variants = [dict(remat=False), dict(remat=True), dict(remat=True, attention_query_chunk=7)]
    encoders = [
        ConformerEncoder(2, HIDDEN, dataclasses.replace(SLAM_BLOCK, dropout=0.0, **variant))
        for variant in variants
    ]
    for encoder in encoders:
        encoder.build(inputs["x"].shape)
    for encoder in encoders[1:]:
        encoder.set_weights(encoders[0].get_weights())
    outputs, gradients = [], []
    for encoder in encoders:

        def loss_fn(encoder=encoder):
            y = encoder(x, padding_mask, training=True)
            return keras.ops.sum(keras.ops.square(y) * keras.ops.arange(HIDDEN, dtype="float32"))

        outputs.append(test_case.to_numpy(loss_fn()))
        # Op by op: compiled, XLA fuses the two programs differently (6e-5 of 60).
        gradients.append(test_case.gradients(encoder.trainable_weights, loss_fn, compiled=False))
    assert len(gradients[0]) == 72 and max(np.abs(g).max() for g in gradients[0]) > 0
    # Gradients reach ~100: fp32 sums in another order differ by ~1e-7 of the largest.
    scale = max(np.abs(g).max() for g in gradients[0])
    for output, variant_gradients in zip(outputs[1:], gradients[1:]):
        np.testing.assert_allclose(output, outputs[0], rtol=1e-6)  # a loss of ~2e4
        for plain, variant in zip(gradients[0], variant_gradients):
            np.testing.assert_allclose(variant, plain, rtol=1e-5, atol=1e-6 * scale)
    restored = ConformerEncoder.from_config(encoders[2].get_config())
    assert restored.conformer.remat and restored.conformer.attention_query_chunk == 7
