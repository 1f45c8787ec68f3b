"""Memory plans: what one SLAM training step holds on each device.

`plan_memory(preset, mesh=(data, model), batch, seconds, ...)` counts, per
device, for a training step over `batch` utterances of `seconds` of speech
through the speech tower and the shared encoder (the w2v-BERT / CTC path,
the largest sequences pre-training sees; objective heads are not counted):

- weights, gradients and optimizer slots: from the preset's variable
  shapes, read without allocating (`parameters.weight_shapes`), each axis
  divided by the mesh axis that `layout_map.layout_rules` shards it over
  (kernels over data x model, ZeRO-3 style; biases over model; norms and
  small tables replicated). Variables and their slots are float32 under
  both precisions (Keras mixed precision keeps float32 variables);
- activations: the per-device batch is `batch / data`; each item brings
  F = 100 * seconds log-mel frames (10 ms hop), T = F / 4 after the
  subsampling, in float32 (4 bytes) or bfloat16 (2 bytes; the float32
  softmax and norm statistics of mixed precision are not counted apart).

Activations kept for backward, per item, in elements (counted from the
code; `FRONT_END_*`, `BLOCK_*` below):

- front end (`ConvSubsampling`, C filters, 80 mel bins): the zero-padded
  input of each convolution, each convolution's output before and after
  the ReLU and its layout copies: 5 tensors of the first convolution's
  output (F/2, 40, C), 3 of the second's (F/4, 20, C), 2 of the padded
  features (F + 2, 82) (80 bins: the config's `feature_dim`).
- each Conformer block of width D, FFN width E, H heads: 16 (T, D) tensors
  (the block input and residual sums, the LayerNorm outputs that feed the
  dense layers, query, key, value and the attended values, the GLU halves
  and output, the depthwise output, its norm and activation), 4 (T, E) tensors (each feed-forward module's pre-activation and
  activation), 2 (H, T, T) tensors (the attention logits with their
  relative-position and padding bias, and the softmax probabilities) and
  1 (H, T, R) tensor (the relative-position logits per distance before the
  gather: R = 2T - 1 distances for "relative_sinusoidal", 73 for clipped
  "relative_key", none for "rotary"/"none").
- while a block runs backward, the gradients of one (H, T, T) and one
  (H, T, R) tensor exist beside them (`BLOCK_TRANSIENT`); with
  `ConformerConfig.attention_query_chunk` = C, of one (H, C, T) and one
  (H, C, R) chunk (the kept tensors are the same, in pieces).

With `remat` (`ConformerConfig.remat`, `keras.remat`), a block keeps only
its input (T, D) and recomputes the rest during its own backward pass, so
the stack holds one (T, D) tensor per block plus one block's full set.
That figure is counted, not checked against XLA. XLA's default CPU
scheduler (concurrency-optimised) does not realise remat's savings: the
compiled step recomputes (55 dots instead of 42 in a 1-block step) but
the opt-barriers JAX puts around remat are gone, and XLA's own count for
forward + backward of 8 Conformer blocks (512 wide, relative_key) at
4 x 750 frames on JAX is 4,281 MiB of temporaries with or without remat.
With `XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`
XLA schedules for memory: 2,685 MiB without remat, 1,225 MiB with it
(`compile().memory_analysis()`, 2026-12-02). The counts below were read
from XLA's buffer assignment of a tiny model's JAX training step on CPU
under the default scheduler (`compile().memory_analysis()`, the
memory-usage report of `--xla_dump_to`), and
`tests/utils/test_memory_plan.py` checks the total within 25% of it at
two lengths (with the flag XLA counts 26-32% less than the plan there: the check
fails). Activations are divided by the data axis only; GSPMD also splits
heads and FFN features over the model axis where the layout map shards
their kernels, so on a model-parallel mesh the activation figures are an
upper bound.
"""

import dataclasses
import functools
import json
import math
import re
import sys

from keras_slam.distribution import parse_mesh
from keras_slam.layers.conformer import ConformerConfig
from keras_slam.layers.conv_subsampling import output_length as subsampled_length
from keras_slam.models.layout_map import layout_rules
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.utils.parameters import weight_shapes
from keras_slam.utils.preset_utils import NAMED_PRESETS

FRAMES_PER_SECOND = 100  # log-mel hop of 10 ms
BYTES = {"fp32": 4, "bf16": 2}
# Float32 slots per weight element.
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2, "lamb": 2}
RELATIVE_KEY_DISTANCES = 73  # left 64 + right 8 + 1 (w2v-BERT 2.0)
GIB = 1024**3

# Per item, in elements: see the module docstring.
FRONT_END_FIRST_CONV_COPIES = 5
FRONT_END_SECOND_CONV_COPIES = 3
FRONT_END_INPUT_COPIES = 2
BLOCK_HIDDEN_COPIES = 16
BLOCK_FFN_COPIES = 4
BLOCK_ATTENTION_COPIES = 2
BLOCK_DISTANCE_COPIES = 1
BLOCK_TRANSIENT_ATTENTION_COPIES = 1
BLOCK_TRANSIENT_DISTANCE_COPIES = 1


@functools.cache
def preset_weight_shapes(preset):
    """`weight_shapes` of a named `SLAMBackbone` preset (built once per process)."""
    if preset not in NAMED_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(NAMED_PRESETS)}")
    spec = NAMED_PRESETS[preset]
    if spec.backbone_cls is not SLAMBackbone:
        raise ValueError(
            f"preset {preset!r} is a {spec.backbone_cls.__name__}; plans cover SLAMBackbone presets"
        )
    return tuple(weight_shapes(SLAMBackbone, **spec.config))


def sharded_elements(path, shape, mesh):
    """Elements of weight `path` on one device under the layout map."""
    data, model = mesh
    sizes = {"batch": data, "model": model, None: 1}
    axes = (None,) * len(shape)
    for pattern, rule in layout_rules().items():
        if re.fullmatch(pattern, path):
            axes = rule
            break
    return math.prod(math.ceil(dim / sizes[axis]) for dim, axis in zip(shape, axes))


def activation_elements(config, frames, remat):
    """Activation elements kept for backward per item (module docstring).

    Args:
        config: a `SLAMBackbone` config dict (with a `ConformerConfig`).
        frames: log-mel frames per item.
        remat: blocks rematerialised.
    Returns:
        {"front_end": int, "blocks": int}.
    """
    filters = config.get("subsampling_filters", 128)
    bins = config.get("feature_dim", 80)
    first = (frames + 1) // 2 * ((bins + 1) // 2) * filters
    second = subsampled_length(frames) * subsampled_length(bins) * filters
    padded = (frames + 2) * (bins + 2)
    front_end = (
        FRONT_END_FIRST_CONV_COPIES * first
        + FRONT_END_SECOND_CONV_COPIES * second
        + FRONT_END_INPUT_COPIES * padded
    )
    conformer = ConformerConfig.coerce(config["conformer"])
    length = subsampled_length(frames)
    hidden = length * config["hidden_dim"]
    attention = conformer.num_heads * length * length
    distances = {
        "relative_sinusoidal": 2 * length - 1,
        "relative_key": RELATIVE_KEY_DISTANCES,
    }.get(conformer.position_encoding, 0)
    per_distance = conformer.num_heads * length * distances
    block = (
        BLOCK_HIDDEN_COPIES * hidden
        + BLOCK_FFN_COPIES * length * conformer.ffn_dim
        + BLOCK_ATTENTION_COPIES * attention
        + BLOCK_DISTANCE_COPIES * per_distance
    )
    query_rows = min(length, conformer.attention_query_chunk or length)
    transient = (
        (
            BLOCK_TRANSIENT_ATTENTION_COPIES * attention
            + BLOCK_TRANSIENT_DISTANCE_COPIES * per_distance
        )
        * query_rows
        // length
    )
    num_blocks = config["num_speech_layers"] + config["num_shared_layers"]
    kept = num_blocks * hidden + block if remat else num_blocks * block
    return {"front_end": front_end, "blocks": kept + transient}


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Per-device bytes of one training step (see the module docstring)."""

    preset: str
    mesh: tuple
    batch: int
    seconds: float
    remat: bool
    precision: str
    optimizer: str
    parameters: int
    weights: int
    gradients: int
    optimizer_state: int
    inputs: int
    activations: int
    activations_other_remat: int
    device_memory: int
    headroom: float

    @property
    def total(self):
        return self.weights + self.gradients + self.optimizer_state + self.inputs + self.activations

    @property
    def fits(self):
        return self.total <= self.device_memory * (1 - self.headroom)

    def to_dict(self):
        result = dataclasses.asdict(self)
        result.update(total=self.total, fits=self.fits)
        return result

    def table(self):
        """The plan as a fixed-width text table, in GiB per device."""
        data, model = self.mesh
        other = "without" if self.remat else "with"
        rows = [
            ("parameters (all devices)", f"{self.parameters:,}"),
            ("weights", self.weights),
            ("gradients", self.gradients),
            (f"optimizer state ({self.optimizer})", self.optimizer_state),
            ("input features", self.inputs),
            (f"activations ({'remat' if self.remat else 'no remat'})", self.activations),
            ("total", self.total),
            (f"  activations {other} remat", self.activations_other_remat),
            ("device memory", self.device_memory),
        ]
        lines = [
            f"{self.preset} on a {data}x{model} (data x model) mesh: batch {self.batch} x "
            f"{self.seconds:g} s, {self.precision}, per-device batch "
            f"{math.ceil(self.batch / data)}",
        ]
        for name, value in rows:
            shown = value if isinstance(value, str) else f"{value / GIB:10.2f} GiB"
            lines.append(f"  {name:<32} {shown:>14}")
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(
            f"  {verdict} in {self.device_memory / GIB:.0f} GiB with "
            f"{self.headroom:.0%} headroom ({self.total / self.device_memory:.0%} used)"
        )
        return "\n".join(lines)


def plan_memory(
    preset,
    mesh=(1, 1),
    batch=1,
    seconds=30.0,
    remat=False,
    precision="fp32",
    optimizer="adam",
    device_memory_gb=32.0,
    headroom=0.1,
    config=None,
):
    """`MemoryPlan` of a training step of a named SLAM backbone preset.

    Args:
        preset: a name in `preset_utils.NAMED_PRESETS` (or any label when
            `config` is given).
        mesh: (data, model) device counts.
        batch: global batch, in utterances.
        seconds: length of each utterance.
        remat: rematerialise the Conformer blocks.
        precision: "fp32" or "bf16" (mixed_bfloat16 activations).
        optimizer: a name in `OPTIMIZER_SLOTS`.
        device_memory_gb: accelerator memory, GiB.
        headroom: fraction of the memory left free for XLA's workspace,
            fragmentation and the objective heads.
        config: `SLAMBackbone` config dict instead of the preset's.
    """
    if config is None:
        shapes = preset_weight_shapes(preset)
        config = NAMED_PRESETS[preset].config
    else:
        shapes = weight_shapes(SLAMBackbone, **config)
    if precision not in BYTES:
        raise ValueError(f"precision must be one of {sorted(BYTES)}, got {precision!r}")
    if optimizer not in OPTIMIZER_SLOTS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_SLOTS)}, got {optimizer!r}")
    if batch < 1 or seconds <= 0:
        raise ValueError(f"batch ({batch}) and seconds ({seconds}) must be positive")
    mesh = tuple(mesh)
    weight_elements = sum(sharded_elements(path, shape, mesh) for path, shape in shapes)
    items = math.ceil(batch / mesh[0])
    frames = round(seconds * FRAMES_PER_SECOND)

    def activation_bytes(with_remat):
        elements = activation_elements(config, frames, with_remat)
        return items * sum(elements.values()) * BYTES[precision]

    return MemoryPlan(
        preset=preset,
        mesh=mesh,
        batch=batch,
        seconds=seconds,
        remat=remat,
        precision=precision,
        optimizer=optimizer,
        parameters=sum(math.prod(shape) for _, shape in shapes),
        weights=4 * weight_elements,
        gradients=4 * weight_elements,
        optimizer_state=4 * OPTIMIZER_SLOTS[optimizer] * weight_elements,
        # float32 features (B, F, bins) and their padding mask (B, F).
        inputs=items * frames * (config.get("feature_dim", 80) + 1) * 4,
        activations=activation_bytes(remat),
        activations_other_remat=activation_bytes(not remat),
        device_memory=round(device_memory_gb * GIB),
        headroom=headroom,
    )


def add_plan_arguments(parser):
    """`keras-slam plan` flags."""
    parser.add_argument("--preset", required=True, help="SLAMBackbone preset name, e.g. mslam_2b")
    parser.add_argument("--mesh", default="1", help="DATAxMODEL devices, e.g. 8x4 (default 1)")
    parser.add_argument("--batch", type=int, required=True, help="global batch, in utterances")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per utterance")
    parser.add_argument("--remat", action="store_true", help="rematerialise Conformer blocks")
    parser.add_argument("--precision", choices=sorted(BYTES), default="fp32")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZER_SLOTS), default="adam")
    parser.add_argument("--device-memory-gb", type=float, default=32.0, help="GiB per device")
    parser.add_argument(
        "--headroom", type=float, default=0.1, help="fraction of device memory kept free"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run_plan(args):
    """Prints the plan; exit code 0 when it fits, 2 when it does not, 1 on bad flags."""
    try:
        plan = plan_memory(
            args.preset,
            parse_mesh(args.mesh),
            args.batch,
            args.seconds,
            args.remat,
            args.precision,
            args.optimizer,
            args.device_memory_gb,
            args.headroom,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.table())
    return 0 if plan.fits else 2
