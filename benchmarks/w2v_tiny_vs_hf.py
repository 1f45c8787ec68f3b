"""Training dynamics of tiny wav2vec-style pre-training: keras-slam vs Hugging Face.

Trains, for the same number of steps on `tfrecords/sample` (speech + paired
train audio, utterances cut to 7 s, batch 8), at each diversity-loss weight:

- HF: a tiny `Wav2Vec2ForPreTraining` built locally with random weights
  (dim 32, 2 layers, 64 codes x 1 group, 20 negatives, conv front end with
  strides 5,4,4,4 = 20 ms frames), torch, with the batch, codebook,
  negatives, Transformer learning-rate schedule (peak 2e-3, 30 warmup
  steps) and Gumbel anneal (2 -> 0.1) of the "w2v_bert_tiny" config;
- keras-slam: `recipes/slam.py` "w2v_bert_tiny" with its stage weights
  changed to contrastive 1, diversity w, w2v_mlm 1 (KERAS_BACKEND=jax).

One table row per (implementation, weight): first- and last-window means
(window = 10 steps = one keras epoch) of the contrastive loss per masked
frame (chance: ln(1 + negatives)), the codebook perplexity (exp entropy of
the soft code marginal at masked frames, HF's `codevector_perplexity`), the
frame perplexity (exp of the mean per-frame code entropy, as keras-slam's
`codebook_frame_perplexity`) and the code usage (fraction of the 64 codes
chosen, with Gumbel noise, at masked frames in the window). `contrastive_loss.png` in
the output folder plots the contrastive loss of every run.

    python benchmarks/w2v_tiny_vs_hf.py --steps 300 --diversity 0 0.1 --output runs/w2v_tiny_vs_hf

Expected: at weight 0.1 both stay at chance while the perplexity rises
toward 64; at weight 0 HF's quantizer collapses to one code (its
contrastive loss drops to 0, since negatives equal to the target are
excluded).
"""

import argparse
import copy
import math
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from keras_slam.optimizers import TransformerSchedule
from recipes import slam

WINDOW = 10  # steps per window; the keras-slam history has one row per 10-step epoch
# The HF run copies the keras-slam config's sizes and schedules.
CONFIG = slam.CONFIGS["w2v_bert_tiny"]
NUM_CODES, NUM_NEGATIVES = CONFIG["pretrainer"]["num_codes"], CONFIG["pretrainer"]["num_negatives"]
BATCH, MAX_SECONDS = CONFIG["batch"]["speech"], CONFIG["max_seconds"]
TEMPERATURE_DECAY = CONFIG["pretrainer"]["temperature_decay"]


def load_audio(corpus_dir):
    """Every speech + paired train utterance as float32 in [-1, 1), cut to 7 s."""
    from keras_slam.data import pipeline

    files = pipeline.list_shards(
        [
            os.path.join(corpus_dir, kind, "train", "*", "*.tfrecord.gz")
            for kind in ("speech", "paired")
        ]
    )
    return [
        record["pcm"].numpy()[: int(MAX_SECONDS * 16000)].astype(np.float32) / 32768
        for record in pipeline.read_records(files)
    ]


def tiny_hf_model(diversity_weight):
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32, 32, 32), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 8, 4, 4), num_feat_extract_layers=4,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        num_codevectors_per_group=NUM_CODES, num_codevector_groups=1, codevector_dim=32, proj_codevector_dim=32,
        num_negatives=NUM_NEGATIVES, diversity_loss_weight=diversity_weight, mask_time_prob=0.065, mask_time_length=10,
        feat_extract_norm="layer", do_stable_layer_norm=True, hidden_dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, feat_proj_dropout=0.0, feat_quantizer_dropout=0.0, layerdrop=0.0,
    )  # fmt: skip
    return Wav2Vec2ForPreTraining(config)


def batch_of(audio, rng):
    """(waveforms (B, S) normalized per utterance, attention mask (B, S)) of BATCH random utterances."""
    chosen = [audio[i] for i in rng.choice(len(audio), BATCH, replace=False)]
    length = max(map(len, chosen))
    waveforms = np.zeros((BATCH, length), np.float32)
    attention_mask = np.zeros((BATCH, length), np.int64)
    for row, wave in enumerate(chosen):
        waveforms[row, : len(wave)] = (wave - wave.mean()) / (wave.std() + 1e-7)
        attention_mask[row, : len(wave)] = 1
    return waveforms, attention_mask


def train_hf(audio, diversity_weight, steps, seed=0):
    """Trains the tiny HF model; returns per-window means of the logged quantities."""
    import torch
    from transformers.models.wav2vec2.modeling_wav2vec2 import (
        _compute_mask_indices,
        _sample_negative_indices,
    )

    torch.manual_seed(seed)
    # HF's mask and negative samplers draw from numpy's global generator.
    np.random.seed(seed)
    usage_noise = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = tiny_hf_model(diversity_weight)
    learning_rate = TransformerSchedule(**CONFIG["optimizer"])
    optimizer = torch.optim.Adam(model.parameters())
    # The quantizer's code logits (B, T, V), from the features it quantizes.
    code_logits = {}
    model.quantizer.weight_proj.register_forward_hook(
        lambda module, inputs, output: code_logits.update(value=output.detach())
    )
    rows, window = [], []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = float(learning_rate(step))
        model.set_gumbel_temperature(max(2 * TEMPERATURE_DECAY**step, 0.1))
        waveforms, attention_mask = batch_of(audio, rng)
        attention_mask = torch.tensor(attention_mask)
        frames = int(model._get_feat_extract_output_lengths(torch.tensor(waveforms.shape[1])))
        frame_mask = model._get_feature_vector_attention_mask(frames, attention_mask)
        masked = _compute_mask_indices(
            (BATCH, frames), 0.065, 10, attention_mask=frame_mask, min_masks=2
        )
        negatives = _sample_negative_indices(
            (BATCH, frames), NUM_NEGATIVES, mask_time_indices=masked
        )
        output = model(
            torch.tensor(waveforms),
            attention_mask=attention_mask,
            mask_time_indices=torch.tensor(masked),
            sampled_negative_indices=torch.tensor(negatives),
        )
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        # Code logits at the masked frames: (masked frames, V).
        logits = code_logits["value"][torch.tensor(masked)].float()
        probs = torch.softmax(logits, dim=-1)
        frame_entropy = -torch.special.xlogy(probs, probs).sum(-1).mean()
        # The targets are Gumbel-noised argmaxes (as keras-slam's usage counts); a
        # fresh draw of the same distribution, from its own generator.
        gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=usage_noise)))
        window.append(
            {
                "contrastive_loss": output.contrastive_loss.item() / masked.sum(),
                "codebook_perplexity": output.codevector_perplexity.item(),
                "codebook_frame_perplexity": frame_entropy.exp().item(),
                "codes": (logits + gumbel).argmax(-1).numpy(),
            }
        )
        if len(window) == WINDOW or step == steps - 1:
            row = {
                name: float(np.mean([w[name] for w in window]))
                for name in window[0]
                if name != "codes"
            }
            row["codebook_usage"] = (
                len(np.unique(np.concatenate([w["codes"] for w in window]))) / NUM_CODES
            )
            rows.append(row)
            window = []
    return {name: [row[name] for row in rows] for name in rows[0]}


def train_keras_slam(diversity_weight, steps, output_dir):
    """Runs `slam.pretrain` on a copy of "w2v_bert_tiny" with the diversity weight changed."""
    name = f"w2v_bert_tiny_div{diversity_weight:g}"
    config = copy.deepcopy(CONFIG)
    config["stages"] = ((0, {"contrastive": 1.0, "diversity": diversity_weight, "w2v_mlm": 1.0}),)
    slam.CONFIGS[name] = config
    return slam.pretrain(name, os.path.join(output_dir, name), steps=steps, steps_per_epoch=WINDOW)


COLUMNS = (
    "contrastive_loss",
    "codebook_perplexity",
    "codebook_frame_perplexity",
    "codebook_usage",
)


def print_table(results):
    """One row per run: first -> last window of each column (n/a where not logged)."""
    chance = math.log(1 + NUM_NEGATIVES)
    print(f"contrastive chance = ln(1 + {NUM_NEGATIVES}) = {chance:.3f}; {NUM_CODES} codes")
    print(
        f"{'run (first -> last window)':<26}"
        + "".join(f"{column.replace('codebook_', ''):>22}" for column in COLUMNS)
    )
    for (implementation, weight), history in results.items():
        cells = [
            f"{history[c][0]:.3f} -> {history[c][-1]:.3f}" if c in history else "n/a"
            for c in COLUMNS
        ]
        print(
            f"{implementation + ' diversity ' + format(weight, 'g'):<26}"
            + "".join(f"{cell:>22}" for cell in cells)
        )


def plot_contrastive(results, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(7, 4))
    for (implementation, weight), history in results.items():
        losses = history["contrastive_loss"]
        axis.plot(
            WINDOW * np.arange(1, len(losses) + 1),
            losses,
            label=f"{implementation}, diversity {weight:g}",
        )
    axis.axhline(math.log(1 + NUM_NEGATIVES), color="gray", linestyle="--", label="chance")
    axis.set_xlabel("step")
    axis.set_ylabel(f"contrastive loss per masked frame ({WINDOW}-step mean)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--diversity",
        type=float,
        nargs="+",
        default=[0.0, 0.1],
        help="diversity-loss weights",
    )
    parser.add_argument("--output", default="runs/w2v_tiny_vs_hf")
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)
    audio = load_audio(slam.SAMPLE_CORPUS)
    results = {}
    for weight in args.diversity:
        results["hf", weight] = train_hf(audio, weight, args.steps)
        history = train_keras_slam(weight, args.steps, args.output)
        results["keras-slam", weight] = {name: history[name] for name in COLUMNS if name in history}
    print_table(results)
    plot_contrastive(results, os.path.join(args.output, "contrastive_loss.png"))


if __name__ == "__main__":
    main()
