"""One training step of `slam_600m` in bf16 on one accelerator: frames/s, MFU, memory.

    python benchmarks/gpu_step.py                       # slam_600m, GPU, KERAS_BACKEND
    python benchmarks/gpu_step.py --config tiny --device cpu --steps 2

Builds the preset's `SLAMBackbone` under keras' "mixed_bfloat16" policy
(bf16 compute, float32 weights), feeds a batch of B utterances of T
log-mel frames (text fully masked: the speech path), and times a
jit-compiled `train_on_batch` (mean-square loss on `sequence_output`,
AdamW). Reports encoder frames/s (T' = frames after the 4x conv
subsampling), the FLOPs per step, MFU (`--peak-tflops`, or the device's
dense bf16 peak where known) and peak memory (JAX `memory_stats`,
`torch.cuda.max_memory_allocated`, TF `get_memory_info`; the process'
peak RSS on CPU). With transformers installed, HF `Wav2Vec2BertModel` of
the same width, depth, heads and FFN (its "relative" positions, kernel 5)
runs the same step in torch bf16 autocast on the T' frames (HF has no conv
front end: its input is already T' frames of 160 stacked features).

FLOP count (a multiply-add = 2 FLOPs; training = 3 x forward: the backward
pass costs twice the forward). Per Conformer block over a sequence of T
frames of width D, FFN width F, depthwise kernel K, per frame:

    feed-forward (two half-step modules)  2 x (2DF + 2FD)      = 8DF
    attention q, k, v, output projections 4 x 2D^2             = 8D^2
    attention scores q.k and weights . v  2 x 2TD              = 4TD
    relative_sinusoidal positions: position_dense on the 2T - 1
      distances 2(2T - 1)D^2 / T ~ 4D^2, (q + v).P: 2(2T - 1)D ~ 4TD
    relative_key: q.E over L + R + 1 distances                 = 2(L + R + 1)D
    convolution: pointwise D -> 2D (GLU), depthwise, pointwise D -> D
                                                  4D^2 + 2KD + 2D^2

The speech layers run at T', the shared layers at T' + L (here L = 1 masked
token). The front end and embeddings add 2 x their parameters per output
frame (an undercount for the stride-2 convs, < 2% of slam_600m). Cross-check,
printed beside it: the "6 x parameters x tokens" rule, which leaves out the
T-dependent attention terms (4TD or 8TD per frame per block).
"""

import argparse
import json
import os
import resource
import statistics
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from benchmarks import train_step

# Dense bf16 peak TFLOP/s by device name (vendor data sheets, no sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def conformer_block_flops(length, hidden_dim, conformer):
    """Forward FLOPs of one Conformer block over one sequence of `length` frames."""
    t, d, f, k = length, hidden_dim, conformer.ffn_dim, conformer.kernel_size
    per_frame = 8 * d * f + 8 * d * d + 4 * t * d + 4 * d * d + 2 * k * d + 2 * d * d
    if conformer.position_encoding == "relative_sinusoidal":
        per_frame += 2 * (2 * t - 1) * d * d / t + 2 * (2 * t - 1) * d
    elif conformer.position_encoding == "relative_key":
        per_frame += 2 * (conformer.left_context + conformer.right_context + 1) * d
    return per_frame * t


def train_step_flops(backbone, batch, subsampled_frames, text_length):
    """(formula FLOPs, 6 x parameters x tokens FLOPs) of one training step."""
    from keras_slam.layers.conformer import ConformerConfig

    conformer = ConformerConfig.coerce(backbone.conformer)
    d = backbone.hidden_dim
    shared_length = subsampled_frames + text_length
    blocks = backbone.num_speech_layers * conformer_block_flops(
        subsampled_frames, d, conformer
    ) + backbone.num_shared_layers * conformer_block_flops(shared_length, d, conformer)
    block_params = (
        backbone.speech_tower.encoder.count_params() + backbone.shared_encoder.count_params()
    )
    other_params = backbone.count_params() - block_params
    forward = batch * (blocks + 2 * other_params * subsampled_frames)
    rule = 6 * backbone.count_params() * batch * shared_length
    return 3 * forward, rule


def peak_memory_bytes(backend, device):
    """Peak accelerator memory of this process, or its peak RSS on CPU."""
    if device == "gpu":
        if backend == "jax":
            import jax

            return jax.devices()[0].memory_stats()["peak_bytes_in_use"]
        if backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated()
        import tensorflow as tf

        return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def run_keras(preset, batch, frames, warmup, steps, position_encoding=None):
    import dataclasses

    import keras
    import numpy as np

    from keras_slam.layers.conformer import ConformerConfig
    from keras_slam.models.slam_backbone import SLAMBackbone
    from keras_slam.models.slam_backbone_presets import backbone_presets

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    config = dict(backbone_presets[preset].config)
    if position_encoding:
        config["conformer"] = dataclasses.replace(
            config["conformer"], position_encoding=position_encoding
        )
    backbone = SLAMBackbone(**config)
    encoding = ConformerConfig.coerce(backbone.conformer).position_encoding
    model = keras.Model(backbone.input, backbone.output["sequence_output"])
    # XLA on JAX and TensorFlow; torch eager (torch.compile is not fit's default).
    jit_compile = keras.backend.backend() != "torch"
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="mse", jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    inputs = {
        "speech_features": rng.normal(size=(batch, frames, backbone.feature_dim)).astype("float32"),
        "speech_padding_mask": np.ones((batch, frames), "float32"),
        "token_ids": np.zeros((batch, 1), "int32"),
        "token_padding_mask": np.zeros((batch, 1), "float32"),
    }
    sequence_length = model.predict_on_batch(inputs).shape[1]
    targets = np.zeros((batch, sequence_length, backbone.hidden_dim), "float32")
    step_seconds = train_step.time_steps(
        lambda: model.train_on_batch(inputs, targets), warmup, steps
    )
    seconds = statistics.median(step_seconds)
    flops, rule = train_step_flops(backbone, batch, sequence_length - 1, text_length=1)
    return dict(
        name=f"keras-slam {preset} ({keras.backend.backend()}, mixed_bfloat16, {encoding})",
        seconds=seconds,
        frames_per_step=batch * (sequence_length - 1),
        flops=flops,
        flops_6nd=rule,
        parameters=backbone.count_params(),
    )


def run_hugging_face(preset, batch, subsampled_frames, warmup, steps, device):
    """HF `Wav2Vec2BertModel` of the preset's size on the T' frames, bf16 autocast."""
    from keras_slam.layers.conformer import ConformerConfig
    from keras_slam.models.slam_backbone_presets import backbone_presets

    config = backbone_presets[preset].config
    conformer = ConformerConfig.coerce(config["conformer"])
    shape = train_step.TrainShape(
        batch=batch,
        frames=subsampled_frames,
        layers=config["num_speech_layers"] + config["num_shared_layers"],
        hidden=config["hidden_dim"],
        heads=conformer.num_heads,
        ffn=conformer.ffn_dim,
        kernel=conformer.kernel_size,
    )
    torch_device = "cuda" if device == "gpu" else "cpu"
    if device == "gpu":
        import torch

        torch.cuda.reset_peak_memory_stats()
    name, step = train_step.make_hugging_face_step(shape, "relative", torch_device, bfloat16=True)
    seconds = statistics.median(train_step.time_steps(step, warmup, steps))
    return dict(name=name, seconds=seconds, frames_per_step=batch * subsampled_frames)


def device_peak_tflops():
    """The local accelerator's dense bf16 peak, when its name is known."""
    try:
        import torch

        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    except ImportError:
        name = ""
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", choices=("slam_600m", "tiny"), default="slam_600m")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--batch", type=int, default=None, help="default 8 (tiny: 2)")
    parser.add_argument("--frames", type=int, default=None, help="log-mel frames (10 ms)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None, help="for MFU")
    parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face")
    parser.add_argument(
        "--position-encoding",
        choices=("relative_sinusoidal", "relative_key", "rotary", "none"),
        help="override the preset's (rotary and none reach fused attention kernels)",
    )
    parser.add_argument("--output", help="JSON report path")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import keras

    preset = "slam_600m" if args.config == "slam_600m" else "slam_tiny"
    batch = args.batch or (8 if preset == "slam_600m" else 2)
    frames = args.frames or (1600 if preset == "slam_600m" else 64)
    backend = keras.backend.backend()

    ours = run_keras(preset, batch, frames, args.warmup, args.steps, args.position_encoding)
    ours["peak_memory_gb"] = peak_memory_bytes(backend, args.device) / 2**30
    peak_tflops = args.peak_tflops or (device_peak_tflops() if args.device == "gpu" else None)
    results = [ours]
    try:
        import transformers  # noqa: F401
    except ImportError:
        args.no_hf = True
    if not args.no_hf:
        theirs = run_hugging_face(
            preset, batch, ours["frames_per_step"] // batch, args.warmup, args.steps, args.device
        )
        if args.device == "gpu":
            import torch

            theirs["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        theirs["flops"] = ours["flops"]
        results.append(theirs)
    memory_kind = "peak accelerator memory" if args.device == "gpu" else "process peak RSS"
    print(f"batch {batch} x {frames} frames -> {ours['frames_per_step'] // batch} encoder frames")
    print(
        f"FLOPs per training step: {ours['flops']:.3e} (formula), "
        f"{ours['flops_6nd']:.3e} (6 x {ours['parameters']:,} parameters x tokens)"
    )
    for result in results:
        result["frames_per_second"] = result["frames_per_step"] / result["seconds"]
        result["tflops_per_second"] = result["flops"] / result["seconds"] / 1e12
        result["mfu"] = result["tflops_per_second"] / peak_tflops if peak_tflops else None
        mfu = f"MFU {result['mfu']:.1%}" if peak_tflops else "MFU n/a (pass --peak-tflops)"
        memory = result.get("peak_memory_gb")
        memory = f"{memory_kind} {memory:.2f} GB" if memory is not None else ""
        print(
            f"{result['name']}: {result['seconds']:.3f} s/step, "
            f"{result['frames_per_second']:.0f} frames/s, "
            f"{result['tflops_per_second']:.2f} TFLOP/s, {mfu}, {memory}"
        )
    if args.output:
        with open(args.output, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
