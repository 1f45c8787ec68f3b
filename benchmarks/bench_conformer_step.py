"""Training-step throughput: keras-slam ConformerEncoder vs HF Wav2Vec2BertModel.

Same shape on both sides: 160-dim features -> LayerNorm + Dense to 512 ->
8 Conformer blocks (dim 512, 8 heads, FFN 2048, depthwise kernel 5, causal,
LayerNorm in the conv module, relative_key 64/8), batch 8 x 250 frames, all
dropouts 0, mean-square loss, AdamW. Ours is a jit-compiled
`train_on_batch`; HF runs in torch train mode. Each side runs in its own
subprocess and prints frames/s (median over the timed steps).

    python benchmarks/bench_conformer_step.py --backends jax tensorflow
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BATCH, FRAMES, FEATURES = 8, 250, 160
LAYERS, HIDDEN, HEADS, FFN, KERNEL = 8, 512, 8, 2048, 5


def _median_step_seconds(step, warmup, steps):
    for _ in range(warmup):
        step()
    durations = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def run_keras(warmup, steps):
    import keras
    import numpy as np

    from keras_slam.layers.conformer import ConformerConfig, ConformerEncoder

    features = keras.Input((FRAMES, FEATURES), batch_size=BATCH, name="features")
    padding_mask = keras.Input((FRAMES,), batch_size=BATCH, name="padding_mask")
    x = keras.layers.LayerNormalization(epsilon=1e-5)(features)
    x = keras.layers.Dense(HIDDEN)(x)
    conformer = ConformerConfig(
        num_heads=HEADS,
        ffn_dim=FFN,
        kernel_size=KERNEL,
        conv_padding="causal",
        conv_norm="layer",
        pointwise_bias=False,
        position_encoding="relative_key",
        left_context=64,
        right_context=8,
        dropout=0.0,
    )
    x = ConformerEncoder(LAYERS, HIDDEN, conformer)(x, padding_mask)
    model = keras.Model([features, padding_mask], x)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="mse", jit_compile=True)
    rng = np.random.default_rng(0)
    inputs = [
        rng.normal(size=(BATCH, FRAMES, FEATURES)).astype("float32"),
        np.ones((BATCH, FRAMES), "float32"),
    ]
    targets = np.zeros((BATCH, FRAMES, HIDDEN), "float32")
    seconds = _median_step_seconds(lambda: model.train_on_batch(inputs, targets), warmup, steps)
    return dict(name=f"keras-slam ({keras.backend.backend()})", seconds=seconds)


def run_hugging_face(warmup, steps):
    import torch
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    config = Wav2Vec2BertConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        conv_depthwise_kernel_size=KERNEL,
        feature_projection_input_dim=FEATURES,
        position_embeddings_type="relative_key",
        left_max_position_embeddings=64,
        right_max_position_embeddings=8,
        hidden_dropout=0.0,
        activation_dropout=0.0,
        attention_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
    )
    model = Wav2Vec2BertModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    features = torch.randn(BATCH, FRAMES, FEATURES)
    attention_mask = torch.ones(BATCH, FRAMES, dtype=torch.long)

    def step():
        optimizer.zero_grad()
        outputs = model(features, attention_mask=attention_mask).last_hidden_state
        outputs.square().mean().backward()
        optimizer.step()

    seconds = _median_step_seconds(step, warmup, steps)
    return dict(name=f"HF Wav2Vec2Bert (torch, {config._attn_implementation})", seconds=seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", choices=["keras", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        run = run_keras if args.child == "keras" else run_hugging_face
        print(json.dumps(run(args.warmup, args.steps)))
        return

    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = [("hf", "torch")] + [("keras", backend) for backend in args.backends]
    results = []
    for child, backend in runs:
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=repo_root, HF_HUB_OFFLINE="1")
        command = [
            sys.executable,
            __file__,
            "--child",
            child,
            "--warmup",
            str(args.warmup),
            "--steps",
            str(args.steps),
        ]
        completed = subprocess.run(command, env=env, capture_output=True, text=True)
        if completed.returncode:
            sys.exit(f"{child} on {backend} failed:\n{completed.stderr[-3000:]}")
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        result["frames_per_second"] = BATCH * FRAMES / result["seconds"]
        results.append(result)
        print(
            f"{result['name']:40s} {result['seconds']:.3f} s/step {result['frames_per_second']:8.0f} frames/s",
            flush=True,
        )
    reference = results[0]["frames_per_second"]
    for result in results[1:]:
        print(f"{result['name']} / HF: {result['frames_per_second'] / reference:.2f}x")


if __name__ == "__main__":
    main()
