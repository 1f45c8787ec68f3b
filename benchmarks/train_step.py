"""Training-step contenders: keras-slam ConformerEncoder vs HF Wav2Vec2BertModel.

Same shape on both sides: 160-dim features -> LayerNorm + Dense to D ->
L Conformer blocks (D wide, H heads, FFN F, depthwise kernel 5, causal,
LayerNorm in the conv module, relative_key 64/8), all dropouts 0,
mean-square loss, AdamW. Ours is a jit-compiled `train_on_batch` on the
process's KERAS_BACKEND (eager on torch); HF runs in torch train mode. Each `make_*` returns a
function that runs one step. `remat=True` recomputes each block's activations in the
backward pass on both sides: `ConformerConfig(remat=True)` for ours (on torch with
attention in chunks of `REMAT_QUERY_CHUNK` query rows, `attention_query_chunk`), HF's
`gradient_checkpointing_enable()`.
"""

import dataclasses
import time

FEATURES = 160
# Query rows per attention chunk under remat on torch: (B, H, 125, T) pieces, 6 at 750
# frames. Peak RSS at 4 x 750 (2026-12-02): torch 3,436 MiB against 3,646 unchunked;
# TensorFlow's XLA step rose to 4,242 from 3,895, so XLA backends attend all rows at once.
REMAT_QUERY_CHUNK = 125


@dataclasses.dataclass(frozen=True)
class TrainShape:
    """Batch B x T frames through L layers of width D (H heads, FFN F)."""

    batch: int
    frames: int
    layers: int = 8
    hidden: int = 512
    heads: int = 8
    ffn: int = 2048
    kernel: int = 5


def build_keras_model(shape, remat=False):
    """Our compiled model of `shape`: (features (B, T, 160), padding_mask (B, T)) -> (B, T, D)."""
    import keras

    from keras_slam.layers.conformer import ConformerConfig, ConformerEncoder

    features = keras.Input((shape.frames, FEATURES), batch_size=shape.batch, name="features")
    padding_mask = keras.Input((shape.frames,), batch_size=shape.batch, name="padding_mask")
    x = keras.layers.LayerNormalization(epsilon=1e-5)(features)
    x = keras.layers.Dense(shape.hidden)(x)
    conformer = ConformerConfig(
        num_heads=shape.heads,
        ffn_dim=shape.ffn,
        kernel_size=shape.kernel,
        conv_padding="causal",
        conv_norm="layer",
        pointwise_bias=False,
        position_encoding="relative_key",
        left_context=64,
        right_context=8,
        dropout=0.0,
        remat=remat,
        attention_query_chunk=(
            REMAT_QUERY_CHUNK if remat and keras.backend.backend() == "torch" else None
        ),
    )
    x = ConformerEncoder(shape.layers, shape.hidden, conformer)(x, padding_mask)
    model = keras.Model([features, padding_mask], x)
    # XLA on JAX and TensorFlow; torch runs eagerly as its `fit` does by
    # default (jit_compile=True would mean minutes of torch.compile).
    jit_compile = keras.backend.backend() != "torch"
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="mse", jit_compile=jit_compile)
    return model


def make_keras_step(shape, remat=False):
    import keras
    import numpy as np

    model = build_keras_model(shape, remat)
    rng = np.random.default_rng(0)
    inputs = [
        rng.normal(size=(shape.batch, shape.frames, FEATURES)).astype("float32"),
        np.ones((shape.batch, shape.frames), "float32"),
    ]
    targets = np.zeros((shape.batch, shape.frames, shape.hidden), "float32")
    name = f"keras-slam ({keras.backend.backend()}{', remat' if remat else ''})"
    return name, lambda: model.train_on_batch(inputs, targets)


def time_steps(step, warmup, steps, clock=time.perf_counter):
    """Per-step seconds of `steps` calls of `step` after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(steps):
        start = clock()
        step()
        seconds.append(clock() - start)
    return seconds


def make_hugging_face_step(
    shape, position_embeddings_type="relative_key", device="cpu", bfloat16=False, remat=False
):
    """HF's step on `device` ("cpu" or "cuda"), in bf16 autocast if `bfloat16`,
    with gradient checkpointing if `remat`."""
    import torch
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    config = Wav2Vec2BertConfig(
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn,
        conv_depthwise_kernel_size=shape.kernel,
        feature_projection_input_dim=FEATURES,
        position_embeddings_type=position_embeddings_type,
        left_max_position_embeddings=64,
        right_max_position_embeddings=8,
        hidden_dropout=0.0,
        activation_dropout=0.0,
        attention_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
    )
    model = Wav2Vec2BertModel(config).to(device).train()
    if remat:
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    features = torch.randn(shape.batch, shape.frames, FEATURES, device=device)
    attention_mask = torch.ones(shape.batch, shape.frames, dtype=torch.long, device=device)

    def step():
        optimizer.zero_grad()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bfloat16):
            outputs = model(features, attention_mask=attention_mask).last_hidden_state
        outputs.float().square().mean().backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    precision = "bf16 autocast, " if bfloat16 else ""
    checkpointing = ", gradient checkpointing" if remat else ""
    return (
        f"HF Wav2Vec2Bert (torch, {precision}{config._attn_implementation}{checkpointing})",
        step,
    )
