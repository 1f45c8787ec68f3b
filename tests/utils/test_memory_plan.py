"""`keras-slam plan`: counts from the config, sharding, and XLA's own accounting.

The measured check is JAX-only: `jit(...).lower(...).compile().memory_analysis()`
reports XLA's buffer assignment of the whole step without running it;
TensorFlow and torch have no such figure on CPU (RSS measures the
allocator, not the step). It checks the plan without remat: XLA's CPU
scheduler does not realise rematerialisation's savings (a pure-JAX stack
of `jax.checkpoint` blocks reports the same temp bytes as without), so the
remat figures are the plan's count of what a block keeps (module docstring).
"""

import dataclasses
import json
import re

import keras
import pytest

from keras_slam import cli
from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.utils import memory_plan
from keras_slam.utils.memory_plan import parse_mesh, plan_memory, sharded_elements
from keras_slam.utils.preset_utils import NAMED_PRESETS


@pytest.mark.parametrize("preset", ["slam_tiny", "mslam_tiny"])
def test_parameters_are_those_of_the_built_model(preset):
    plan = plan_memory(preset, batch=1, seconds=1.0)
    assert plan.parameters == SLAMBackbone.from_preset(preset).count_params()


def test_layout_map_divides_weights_and_the_data_axis_divides_the_batch():
    kernel = "shared_encoder/conformer_block_3/ffn1/intermediate_dense/kernel"
    assert sharded_elements(kernel, (1024, 4096), (8, 4)) == 128 * 1024
    assert sharded_elements("token_embedding/embeddings", (4096, 1024), (8, 4)) == 4096 * 256
    norm = "shared_encoder/conformer_block_3/final_layer_norm/gamma"
    assert sharded_elements(norm, (1024,), (8, 4)) == 1024
    one = plan_memory("slam_tiny", mesh=(1, 1), batch=8, seconds=2.0)
    sharded = plan_memory("slam_tiny", mesh=(2, 4), batch=8, seconds=2.0)
    assert one.weights == 4 * one.parameters
    assert one.weights / 8 < sharded.weights < one.weights
    assert sharded.activations * 2 == one.activations
    assert sharded.optimizer_state == 2 * sharded.weights  # Adam: two float32 slots


def test_remat_keeps_one_block_and_the_blocks_inputs():
    full = plan_memory("mslam_2b", mesh=(8, 4), batch=256, seconds=30.0)
    remat = plan_memory("mslam_2b", mesh=(8, 4), batch=256, seconds=30.0, remat=True)
    assert remat.activations == full.activations_other_remat
    assert remat.activations < full.activations / 10
    half = plan_memory("mslam_2b", mesh=(8, 4), batch=256, seconds=30.0, precision="bf16")
    assert half.activations * 2 == full.activations
    assert half.weights == full.weights  # variables stay float32


def test_query_chunks_shrink_only_the_backward_transient():
    """Chunks of C query rows: the (H, T, T) and (H, T, R) gradients of a
    block's backward exist as (H, C, T) and (H, C, R) pieces."""
    config = dict(NAMED_PRESETS["slam_tiny"].config)
    conformer = ConformerConfig.coerce(config["conformer"])
    frames, chunk = 400, 25
    counts = {}
    for query_chunk in (None, chunk):
        config["conformer"] = dataclasses.replace(conformer, attention_query_chunk=query_chunk)
        counts[query_chunk] = memory_plan.activation_elements(config, frames, remat=True)
    length = memory_plan.subsampled_length(frames)
    assert chunk < length
    distances = {"relative_key": memory_plan.RELATIVE_KEY_DISTANCES}.get(
        conformer.position_encoding, 2 * length - 1
    )
    transient = conformer.num_heads * length * (length + distances)
    assert counts[None]["front_end"] == counts[chunk]["front_end"]
    assert (
        counts[None]["blocks"] - counts[chunk]["blocks"] == transient * (length - chunk) // length
    )


def test_plan_command_prints_a_table_or_json_and_says_whether_it_fits(capsys):
    flags = ["plan", "--preset", "mslam_2b", "--mesh", "8x4", "--batch", "256"]
    assert cli.main(flags) == 2  # does not fit in 32 GiB without remat
    table = capsys.readouterr().out
    assert "activations with remat" in table and "does NOT fit" in table
    assert cli.main(flags + ["--remat", "--precision", "bf16", "--device-memory-gb", "95"]) == 0
    capsys.readouterr()
    cli.main(flags + ["--json"])
    plan = json.loads(capsys.readouterr().out)
    assert plan["parameters"] > 1.8e9 and plan["mesh"] == [8, 4] and plan["fits"] is False
    assert plan["total"] > plan["device_memory"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--preset", "mslam_2b", "--mesh", "8x", "--batch", "8"], "mesh '8x'"),
        (["--preset", "no_such", "--batch", "8"], "unknown preset 'no_such'"),
        (["--preset", "w2v_bert_2_0", "--batch", "8"], "plans cover SLAMBackbone"),
        (["--preset", "slam_tiny", "--batch", "0"], "batch \\(0\\)"),
    ],
)
def test_bad_flags_name_what_is_wrong(capsys, flags, message):
    assert cli.main(["plan"] + flags) == 1
    assert re.search(message, capsys.readouterr().err)


def test_parse_mesh():
    assert parse_mesh("8x4") == (8, 4) and parse_mesh("32") == (32, 1)
    with pytest.raises(ValueError, match="DATAxMODEL"):
        parse_mesh("0x4")


def measured_step_bytes(config, batch, frames):
    """XLA's argument + output + temp bytes of a JAX step's gradients."""
    import jax

    backbone = SLAMBackbone(**config)
    trainable = [variable.value for variable in backbone.trainable_variables]
    others = [variable.value for variable in backbone.non_trainable_variables]

    def loss(trainable_values, other_values, features, padding_mask):
        mapping = list(zip(backbone.trainable_variables, trainable_values))
        mapping += list(zip(backbone.non_trainable_variables, other_values))
        with keras.StatelessScope(state_mapping=mapping):
            outputs = backbone.encode_speech(features, padding_mask, training=True)
        return keras.ops.mean(keras.ops.square(outputs["sequence_output"]))

    features = jax.ShapeDtypeStruct((batch, frames, config["feature_dim"]), "float32")
    padding_mask = jax.ShapeDtypeStruct((batch, frames), "float32")
    compiled = jax.jit(jax.grad(loss)).lower(trainable, others, features, padding_mask).compile()
    memory = compiled.memory_analysis()
    return memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes


@pytest.mark.slow(backend="jax")
@pytest.mark.parametrize("batch, frames", [(4, 400), (4, 800)])
def test_plan_is_within_25_percent_of_xla(batch, frames):
    config = dict(
        vocabulary_size=64,
        hidden_dim=32,
        num_speech_layers=1,
        num_shared_layers=1,
        feature_dim=80,
        subsampling_filters=8,
        conformer=ConformerConfig(num_heads=2, ffn_dim=64, conv_norm_groups=4),
    )
    plan = plan_memory("tiny", batch=batch, seconds=frames / 100, config=config)
    estimate = plan.weights + plan.gradients + plan.inputs + plan.activations
    measured = measured_step_bytes(config, batch, frames)
    print(f"batch {batch} x {frames} frames: plan {estimate:,} B, XLA {measured:,} B")
    assert abs(estimate / measured - 1) <= 0.25, (estimate, measured)
