"""SLAM and mSLAM pre-training recipes: paper configs and tiny variants.

    python -m recipes.slam --config mslam_tiny --output /tmp/mslam_tiny
    python -m recipes.slam --config slam_tiny --steps 200
    python -m recipes.slam --config w2v_bert_tiny --steps 300 --output /tmp/w2v_tiny
    python -m recipes.slam --config slam_tiny --position-encoding rotary

Named configs (`CONFIGS`); each takes its model from the preset table
(`keras_slam.models.slam_backbone_presets`) and adds the recipe: objectives,
stages, tokenizer, batches, optimizer, steps.

- "slam_600m" (Bapna et al. 2021): dim 1024, 8 speech + 16 shared Conformer
  layers, 8 heads, FFN 4096, kernel 5, GroupNorm conv, 32k SentencePiece;
  641,455,488 parameters counted (paper: ~600M). w2v-BERT + SpanBERT MLM
  (span 5) first, TLM + STM added at step 500k (`SLAM_STAGES`).
- "mslam_600m" / "mslam_2b" (Bapna et al. 2022): the same 600M layout with
  a 4096-character vocabulary, and dim 1408, 8 + 32 layers, FFN 4x
  (1,916,701,568 parameters counted; paper ~1.84B). No stages: every batch
  mixes speech / text / paired sequences (2048 / 8192 / 256), span length
  20, CTC on the paired speech; Adam with the Transformer schedule, 40k
  warmup, peak 6e-4 (3.6e-4 for 2B), 1.3M / 350k steps.
- "slam_tiny" / "mslam_tiny": dim 32, 1 + 1 layers, character vocabulary,
  one bucket per stream; they pre-train on `tfrecords/sample` on a CPU in a
  few minutes and write `history.json`, `loss_curves.png` (losses,
  accuracies, codebook perplexity and usage per epoch) and
  `codebook_usage.png` (code counts at masked frames over the last 100 steps).
- "w2v_bert_tiny": the same tiny backbone with the speech objectives only
  (contrastive + diversity + w2v_mlm, the paper's weights 1 / 0.1 / 1), on
  the speech and paired-train audio as unlabeled speech; a faster Gumbel
  anneal (2 -> 0.1 over 300 steps). The quantizer reads the stacked input
  features (`SLAMPretrainer(quantizer_input="features")`). With
  `TINY_SPEECH_MASKING` masked prediction beats the code marginal (JAX,
  300 steps, load 14, 285 s): `w2v_mlm_gain` -0.09 / 0.01 / 0.18 / 0.33
  nats at steps 50 / 110 / 200 / 300 (10-step means), codebook usage
  0.92, perplexity 19 of 64, contrastive accuracy 0.42 (chance 1/21),
  masked-prediction accuracy 0.28; tests/test_pretraining_learns.py runs
  250 steps of it. Quantizing
  the trained front end instead ("frontend", w2v-BERT's choice) gives
  codes that are mostly Gumbel noise (frame perplexity 6.8) at this size,
  as Hugging Face's `Wav2Vec2ForPreTraining` does
  (`benchmarks/w2v_tiny_vs_hf.py`).
- "best_rq_tiny": the tiny backbone with BEST-RQ masked prediction (frozen
  random-projection targets, 64 codes): fixed, diverse targets (every code
  in use). It does not learn more than the code frequencies at this size:
  measured on the main job's tiny backbone (JAX, BEST-RQ only), the gain
  over the code marginal stays within -0.05 .. +0.005 nats for 16 or 64
  codes, spans 2-10 and 100-300 steps (16 codes, span 2, p 0.05, 300 steps:
  +0.004; see `TINY_SPEECH_MASKING`), while the same model that sees the
  masked frames reaches +0.48 in 100 steps, so the targets are aligned and
  learnable; what the neighbours tell about a frozen code is what is small
  (I(c_t; c_t-k) = 0.48 / 0.15 / 0.03 nats at k = 1 / 2 / 4, 16 codes;
  0.91 / 0.41 / 0.19 with 64; 14k frames). Use "w2v_bert_tiny" to see
  masked prediction learn.

`pretrain` attaches a `CodebookCollapseMonitor` that stops training with a
`CodebookCollapseError` (naming the metric, value, threshold and step)
when a metric of `COLLAPSE_THRESHOLDS` (or the config's
`collapse_thresholds`) falls below its threshold at an epoch's end (codebook
usage over the last 100 steps, once they hold 256 masked frames).

Every run checkpoints (`<output>/checkpoints`, `keras_slam.checkpointing`:
`--checkpoint-every-steps`, `--keep-checkpoints`, and the long-run flags
`--gradient-accumulation-steps`, `--clipnorm`, `--mixed-precision bf16`),
resumes when the same command is rerun, and ends by saving the pre-trained
backbone with its front end and tokenizer as a preset (`<output>/preset`).
`--mesh 8` / `--mesh 2x4` train on several devices (`keras_slam.distribution`).

Paper-scale configs are documented here and parameter-counted by the tests;
they are not run here.
"""

import argparse
import dataclasses
import json
import math
import os

import keras
import numpy as np

from keras_slam import checkpointing, distribution
from keras_slam.callbacks import (
    MSLAM_STAGES,
    SLAM_STAGES,
    CodebookCollapseMonitor,
    ObjectiveSchedule,
    TerminateOnSkippedSteps,
)
from keras_slam.layers.attention import POSITION_ENCODINGS
from keras_slam.metrics.codebook import save_codebook_usage_plot
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.slam_backbone_presets import backbone_presets as PRESETS
from keras_slam.models.slam_pretrainer import CROSS_MODAL_CONTEXTS, METRICS, SLAMPretrainer
from keras_slam.optimizers import TransformerSchedule

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_CORPUS = os.path.join(REPO_ROOT, "tfrecords", "sample")

_PAPER_STEPS = 1_300_000
# SLAM has no CTC; mSLAM has no STM (its TLM variant adds "tlm").
_SLAM_OBJECTIVES = ("contrastive", "diversity", "w2v_mlm", "text_mlm", "tlm", "stm")
_MSLAM_OBJECTIVES = ("contrastive", "diversity", "w2v_mlm", "text_mlm", "ctc")

CONFIGS = {
    "slam_600m": {
        "backbone": PRESETS["slam_600m"].config,
        "pretrainer": {"text_span_length": 5, "objectives": _SLAM_OBJECTIVES},
        "stages": SLAM_STAGES,
        "tokenizer": "sentencepiece",
        "batch": {"speech": 2048, "text": 8192, "paired": 256},
        "optimizer": {"peak_learning_rate": 6e-4, "warmup_steps": 40_000},
        "steps": 1_000_000,
    },
    "mslam_600m": {
        "backbone": PRESETS["mslam_600m"].config,
        "pretrainer": {"text_span_length": 20, "objectives": _MSLAM_OBJECTIVES},
        "stages": MSLAM_STAGES,
        "tokenizer": "characters",
        "batch": {"speech": 2048, "text": 8192, "paired": 256},
        "optimizer": {"peak_learning_rate": 6e-4, "warmup_steps": 40_000},
        "steps": _PAPER_STEPS,
    },
    "mslam_2b": {
        "backbone": PRESETS["mslam_2b"].config,
        "pretrainer": {"text_span_length": 20, "objectives": _MSLAM_OBJECTIVES},
        "stages": MSLAM_STAGES,
        "tokenizer": "characters",
        "batch": {"speech": 2048, "text": 8192, "paired": 256},
        "optimizer": {"peak_learning_rate": 3.6e-4, "warmup_steps": 40_000},
        "steps": 350_000,
    },
}

# The "slam_tiny" preset's model without dropout; `pretrain` sets the
# vocabulary size from the corpus' characters.
_TINY_PRESET = PRESETS["slam_tiny"].config
_TINY_BACKBONE = dict(
    _TINY_PRESET,
    conformer=dataclasses.replace(_TINY_PRESET["conformer"], dropout=0.0),
)
# Speech span masking of every tiny config and of the main job's pre-trainer
# (`recipes.main.build_pretrainer`): 2-frame spans started at 5% of the
# frames (~10% masked), not w2v-BERT's 10-frame spans at 6.5% (~50%). The
# context tells little about a code more than 2 frames away at these sizes
# (BEST-RQ, 16 codes: I(c_t; c_t+d) = 0.48 / 0.15 / 0.03 nats at d = 1 / 2 /
# 4), so long spans leave nothing to learn beyond the code frequencies.
# Measured (JAX, speech only, the main job's data and 2 + 2 layers at dim 32,
# 16 negatives, Adam + cosine, masked-prediction gain over the running code
# marginal, window means of the last 50 steps; 2 cores at load 10-12):
#   target, codes        span, p      lr    steps  gain   usage  contr. acc  mlm acc
#   BEST-RQ 16, frames   2, 0.065   1e-3    100   0.38   1.0     -          0.38
#     seen (sanity)                 3e-3    100   0.48   1.0     -          0.39
#   BEST-RQ 16           2, 0.05    3e-3    300   0.004  1.0     -          0.22
#   Gumbel 64            2, 0.05    3e-3    300   0.22   0.84    0.40       0.29
# The main job (`recipes.main.DEFAULT`: dim 96, 2 + 2 layers, every
# objective, Adam 1e-3 + cosine, 300 steps; load 15) with this masking ends
# (mean of its last 5 windows of 15 steps) at gain 0.33 nats (0.24-0.36),
# codebook usage 0.69 (0.63-0.73), contrastive accuracy 0.43 (chance 1/17),
# masked-prediction accuracy 0.34; it was -0.16 nats at step 75 and crossed
# 0 at step 135.
# The sanity rows (mask embedding replaced by the identity, so every
# "masked" frame is seen) show aligned targets and a working head: the gain
# rises towards log(perplexity) as in any supervised fit. BEST-RQ's frozen
# codes are not predictable from 1-2 neighbours at these sizes; w2v-BERT's
# learned codes are (the contrastive loss trains the quantizer towards
# codes that the context predicts).
TINY_SPEECH_MASKING = {"speech_mask_probability": 0.05, "speech_span_length": 2}
_TINY_PRETRAINER = {
    "num_codes": 64,
    "code_dim": 32,
    "num_negatives": 20,
    "seed": 0,
    **TINY_SPEECH_MASKING,
}
_TINY_DATA = {
    "max_seconds": 7.0,
    "max_tokens": 120,
    "batch": {"speech": 8, "text": 16, "paired": 8},
}
CONFIGS["slam_tiny"] = dict(
    backbone=_TINY_BACKBONE,
    pretrainer=dict(_TINY_PRETRAINER, text_span_length=5, objectives=_SLAM_OBJECTIVES),
    # SLAM_STAGES at the same proportions: TLM + STM join halfway.
    stages=((0, SLAM_STAGES[0][1]), (150, SLAM_STAGES[1][1])),
    tokenizer="characters",
    optimizer={"peak_learning_rate": 2e-3, "warmup_steps": 30},
    steps=300,
    **_TINY_DATA,
)
CONFIGS["mslam_tiny"] = dict(
    backbone=_TINY_BACKBONE,
    pretrainer=dict(_TINY_PRETRAINER, text_span_length=20, objectives=_MSLAM_OBJECTIVES + ("tlm",)),
    stages=((0, dict(MSLAM_STAGES[0][1], tlm=1.0)),),
    tokenizer="characters",
    optimizer={"peak_learning_rate": 2e-3, "warmup_steps": 30},
    steps=300,
    **_TINY_DATA,
)
_W2V_BERT_OBJECTIVES = ("contrastive", "diversity", "w2v_mlm")
_TINY_SPEECH_ONLY = dict(
    # No text objective: a token embedding of 8 ids is built but unused.
    backbone=dict(_TINY_BACKBONE, vocabulary_size=8),
    optimizer={"peak_learning_rate": 2e-3, "warmup_steps": 30},
    steps=300,
    # Transcribed audio doubles as unlabeled speech.
    speech_sources=("speech", "paired"),
    max_seconds=_TINY_DATA["max_seconds"],
    batch={"speech": 8},
)
CONFIGS["w2v_bert_tiny"] = dict(
    _TINY_SPEECH_ONLY,
    pretrainer=dict(_TINY_PRETRAINER, objectives=_W2V_BERT_OBJECTIVES, temperature_decay=0.99),
    stages=((0, {"contrastive": 1.0, "diversity": 0.1, "w2v_mlm": 1.0}),),
)
CONFIGS["best_rq_tiny"] = dict(
    _TINY_SPEECH_ONLY,
    pretrainer=dict(
        _TINY_PRETRAINER, objectives=("w2v_mlm",), speech_target="random_projection", code_dim=None
    ),
    stages=((0, {"w2v_mlm": 1.0}),),
)
# Below these the recipes stop: fewer than 10% of the codes used as targets
# over the last 100 steps (judged once they hold 256 masked frames).
# `w2v_mlm_gain` is logged but not a criterion (BEST-RQ keeps it near 0 with
# healthy codes; see "best_rq_tiny" above).
COLLAPSE_THRESHOLDS = {"codebook_usage": 0.1}


def character_tokenizer(corpus_dir, max_tokens):
    """A frequency-ranked character vocabulary over the corpus' texts."""
    from keras_slam.data import pipeline, tokenizers

    texts = []
    for kind, field in (("text", "text"), ("paired", "transcript")):
        files = pipeline.list_shards(os.path.join(corpus_dir, kind, "train", "*", "*.tfrecord.gz"))
        records = pipeline.read_records(files, kind="text" if kind == "text" else "speech")
        texts += [record[field].numpy().decode() for record in records]
    vocabulary = tokenizers.build_character_vocabulary(texts, max_size=4096)
    return tokenizers.CharacterTokenizer(vocabulary, sequence_length=None), len(vocabulary)


def make_front_end():
    """The log-mel front end of the tiny pre-training recipes."""
    from keras_slam.layers.log_mel import LogMelSpectrogram

    return LogMelSpectrogram(waveform_scale=1.0, normalize_per_bin=True, name="audio_converter")


def make_dataset(config, corpus_dir, tokenizer, frontend=None, seed=0):
    """The mixed stream of the tiny recipes: one sub-batch per key of
    `config["batch"]` ("speech", "text", "paired"); the speech stream reads
    the shards of `config["speech_sources"]` (default: speech only)."""
    from keras_slam.data import pipeline

    frontend = frontend or make_front_end()
    batch = config["batch"]

    def shards(*kinds):
        return pipeline.host_shards(
            [os.path.join(corpus_dir, kind, "train", "*", "*.tfrecord.gz") for kind in kinds]
        )

    def speech_stream(kinds, batch_size, **kwargs):
        return pipeline.speech_dataset(
            shards(*kinds),
            frontend,
            pipeline.Buckets((config["max_seconds"],), (batch_size,)),
            too_long="skip",
            remainder="drop",
            shuffle_buffer=256,
            seed=seed,
            **kwargs,
        )

    streams = {}
    if "speech" in batch:
        streams["speech"] = speech_stream(
            config.get("speech_sources", ("speech",)), batch["speech"]
        )
    if "paired" in batch:
        streams["paired"] = speech_stream(
            ("paired",),
            batch["paired"],
            paired=True,
            tokenizer=tokenizer,
            max_token_length=config["max_tokens"],
        )
    if "text" in batch:
        streams["text"] = pipeline.text_dataset(
            shards("text"),
            tokenizer,
            pipeline.Buckets((config["max_tokens"],), (batch["text"],)),
            max_length=config["max_tokens"],
            remainder="drop",
            shuffle_buffer=2048,
            seed=seed,
        )
    return pipeline.mix_streams(streams)


def build_pretrainer(config, vocabulary_size=None, **optimizer_arguments):
    """The config's `SLAMPretrainer`, compiled with Adam on its schedule
    (`optimizer_arguments`: e.g. `global_clipnorm`, `gradient_accumulation_steps`)."""
    backbone_config = dict(config["backbone"])
    if vocabulary_size is not None:
        backbone_config["vocabulary_size"] = vocabulary_size
    pretrainer = SLAMPretrainer(SLAMBackbone(**backbone_config), **config["pretrainer"])
    pretrainer.compile(
        optimizer=keras.optimizers.Adam(
            TransformerSchedule(**config["optimizer"]), **optimizer_arguments
        )
    )
    return pretrainer


PAIRED_KEYS = ("speech_features", "speech_padding_mask", "token_ids", "token_padding_mask")


def evaluate_paired(pretrainer, paired_batches, seed=0):
    """Means of the paired objectives' losses and accuracies (TLM, STM, CTC)
    over held-out pairs: {metric name: value}, e.g. "stm_accuracy".

    `paired_batches`: a finite dataset of paired batches read once, in the
    same order on every call (other keys, such as "language", are dropped),
    e.g. the bundled test split (`recipes.asr.paired_dataset(..., "test")`).
    STM scores each utterance with its own transcript and with those of
    `stm_negatives` other pairs in the batch (`SLAMPretrainer.stm_partners`;
    fewer in a smaller batch, none in a batch of one pair); its accuracy
    weighs matched and mismatched pairs equally. TLM's masks and token
    corruption are drawn as in training, but from the task's mask seed set
    to SeedGenerator(`seed`)'s state for the call (and restored after it,
    so training's draws go on as before): two calls on the same weights
    give the same numbers. Dropout and Gumbel noise are off. Each value is
    the mean over the batches that hold a pair (`keras.Model.evaluate`).
    """
    batches = paired_batches.map(lambda batch: {"paired": {k: batch[k] for k in PAIRED_KEYS}})
    state = pretrainer.mask_seed.state
    training_state = keras.ops.convert_to_numpy(state.value)
    state.assign(keras.random.SeedGenerator(seed).state.value)
    try:
        results = pretrainer.evaluate(batches, verbose=0, return_dict=True)
    finally:
        state.assign(training_state)
    return {
        name: float(results[name])
        for name in pretrainer.objective_metrics
        if METRICS[name][0] == "paired"
    }


def stm_length_baseline(pretrainer, paired_batches):
    """How far the length cue alone gets on STM's held-out pairs.

    The pairs STM scores on `paired_batches` (a finite dataset read once):
    each pair (weight 1) and its mismatched ones
    (`SLAMPretrainer.stm_partners`, weights summing to 1 per pair, as
    `stm_accuracy` weighs them), told apart by one rule on r = log(speech
    frames / text tokens): matched iff |r - c| <= t, c the median r of the
    matched pairs, t the threshold of best weighted accuracy on these same
    pairs. Fitted on what it scores, so an upper bound for such a rule
    (chance 0.5); `stm_accuracy` above it is more than length.

    Returns: {"stm_length_baseline_accuracy", "stm_length_baseline_pairs"
    (matched pairs counted)}.
    """
    ratios, labels, weights = [], [], []
    for batch in paired_batches.as_numpy_iterator():
        frames = batch["speech_padding_mask"].sum(axis=1).astype("float64")
        tokens = batch["token_padding_mask"].sum(axis=1).astype("float64")
        present = (frames > 0) & (tokens > 0)
        partners, negative_weights = (
            keras.ops.convert_to_numpy(x)
            for x in pretrainer.stm_partners(present, batch["token_padding_mask"])
        )
        log_frames = np.log(np.maximum(frames, 1.0))
        log_tokens = np.log(np.maximum(tokens, 1.0))
        ratios += [
            (log_frames - log_tokens)[present],
            (log_frames[:, None] - log_tokens[partners]).ravel(),
        ]
        labels += [np.ones(present.sum()), np.zeros(partners.size)]
        weights += [np.ones(present.sum()), negative_weights.ravel()]
    ratios, labels, weights = (np.concatenate(x) for x in (ratios, labels, weights))
    distance = np.abs(ratios - np.median(ratios[labels == 1]))
    accuracies = [
        np.sum(weights * ((distance <= t) == (labels == 1))) / np.sum(weights)
        for t in np.concatenate([[-1.0], np.unique(distance)])
    ]
    return {
        "stm_length_baseline_accuracy": float(max(accuracies)),
        "stm_length_baseline_pairs": int(labels.sum()),
    }


def evaluate_cross_modal(pretrainer, paired_batches, seed=0, mask_context=False, **mask_rates):
    """Does the shared encoder read the other modality? Held-out pairs.

    `SLAMPretrainer.cross_modal_scores` on every batch of `paired_batches`
    (a finite dataset read once, e.g. the bundled test split), with span
    masks drawn once per batch from a SeedGenerator(`seed`) (the same masks
    on every call), at TLM's rates unless `mask_rates` (`speech_mask_rate`,
    `text_mask_rate`) says otherwise. The context modality is unmasked
    unless `mask_context`.

    Returns: {f"{side}_{context}_loss" / "_accuracy"}: means over every
    counted position of the set (side "text" / "speech", context "alone" /
    "own" / "other"), f"{side}_count" (counted positions), and the gains in
    nats, f"{side}_gain_own" = alone loss - own loss (> 0: the row's own
    other modality helps) and f"{side}_gain_other" = other loss - own loss
    (> 0: it helps because it is the row's own, not any speech or text).
    """
    seed_generator = keras.random.SeedGenerator(seed)
    totals = {}
    for batch in paired_batches.as_numpy_iterator():
        batch = {key: batch[key] for key in PAIRED_KEYS}
        draws = pretrainer.draw_paired_masks(batch, seed=seed_generator, **mask_rates)
        scores = pretrainer.cross_modal_scores(batch, draws, mask_context)
        scores = {name: float(keras.ops.convert_to_numpy(value)) for name, value in scores.items()}
        for name, value in scores.items():
            # Per-batch means weighted by the batch's counted positions.
            side = name.split("_")[0]
            weight = 1.0 if name.endswith("_count") else scores[f"{side}_count"]
            totals[name] = totals.get(name, 0.0) + weight * value
    results = {}
    for name, total in totals.items():
        count = totals[f"{name.split('_')[0]}_count"]
        results[name] = total if name.endswith("_count") else total / max(count, 1.0)
    for side in ("text", "speech"):
        own = results[f"{side}_own_loss"]
        results[f"{side}_gain_own"] = results[f"{side}_alone_loss"] - own
        results[f"{side}_gain_other"] = results[f"{side}_other_loss"] - own
    return results


def format_cross_modal(results):
    """`evaluate_cross_modal`'s results as a table: a row per masked side."""
    lines = [
        "  masked   count   loss alone / own / other   accuracy alone / own / other"
        "   gain own  gain other"
    ]
    for side in ("text", "speech"):
        losses = " / ".join(f"{results[f'{side}_{c}_loss']:.3f}" for c in CROSS_MODAL_CONTEXTS)
        accuracies = " / ".join(
            f"{results[f'{side}_{c}_accuracy']:.3f}" for c in CROSS_MODAL_CONTEXTS
        )
        lines.append(
            f"  {side:<7}{results[f'{side}_count']:7.0f}   {losses:>24}   {accuracies:>28}"
            f"   {results[f'{side}_gain_own']:8.3f}  {results[f'{side}_gain_other']:10.3f}"
        )
    return "\n".join(lines)


def save_pretrained_preset(backbone, preset_dir, front_end, tokenizer=None):
    """Saves the backbone with its front end (and tokenizer) as one preset
    that `SpeechRecognizer.from_preset` (or any task) reads whole."""
    backbone.save_to_preset(preset_dir)
    if tokenizer is None:
        front_end.save_to_preset(preset_dir)
    else:
        preprocessor = SpeechRecognizerPreprocessor(audio_converter=front_end, tokenizer=tokenizer)
        preprocessor.save_to_preset(preset_dir)


def plot_history(history, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = sorted(
        name
        for name in history
        if name == "loss" or name.endswith(("_loss", "_accuracy")) or name.startswith("codebook_")
    )
    columns = 4
    rows = math.ceil(len(names) / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        axis.plot(range(1, len(history[name]) + 1), history[name])
        axis.set_title(name)
        axis.set_xlabel("epoch")
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def with_position_encoding(config, position_encoding):
    """`config` with every Conformer block's attention set to
    `position_encoding` (e.g. "rotary" against the default
    "relative_sinusoidal"; see `RelativePositionAttention`)."""
    conformer = dataclasses.replace(
        config["backbone"]["conformer"], position_encoding=position_encoding
    )
    return dict(config, backbone=dict(config["backbone"], conformer=conformer))


def pretrain(
    config_name,
    output_dir,
    steps=None,
    steps_per_epoch=10,
    corpus_dir=SAMPLE_CORPUS,
    position_encoding=None,
    args=None,
):
    """Pre-trains a tiny config on the sample corpus; returns the history dict.

    `position_encoding` replaces the config's (None: keep it). Writes
    `history.json` (per-epoch means of every loss and metric),
    `loss_curves.png`, with speech objectives `codebook_usage.png`, and the
    pre-trained backbone with its front end and tokenizer as a preset
    (`<output_dir>/preset`) into `output_dir`. Checkpoints go to
    `<output_dir>/checkpoints` (`args`: the `checkpointing` flags; default
    flags when None); a rerun resumes from the newest.
    """
    config = CONFIGS[config_name]
    if "max_seconds" not in config:
        raise ValueError(f"{config_name} is a paper-scale config; only *_tiny configs run here")
    if position_encoding is not None:
        config = with_position_encoding(config, position_encoding)
    args = args or checkpointing.default_training_arguments()
    steps = steps or config["steps"]
    os.makedirs(output_dir, exist_ok=True)
    checkpointing.apply_mixed_precision(args)
    keras.utils.set_random_seed(0)
    tokenizer, vocabulary_size = None, None
    if "max_tokens" in config:
        tokenizer, vocabulary_size = character_tokenizer(corpus_dir, config["max_tokens"])
    pretrainer = build_pretrainer(
        config, vocabulary_size, **checkpointing.optimizer_arguments(args)
    )
    checkpoint = checkpointing.checkpoint_from_args(args, output_dir)
    stages = tuple(
        (int(start * steps / config["steps"]), weights) for start, weights in config["stages"]
    )
    start = checkpoint.restore(pretrainer)
    callbacks = [
        ObjectiveSchedule(stages, initial_step=start),
        TerminateOnSkippedSteps(args.max_consecutive_skips),
    ]
    if pretrainer.codebook_usage is not None:
        callbacks.append(
            CodebookCollapseMonitor(
                config.get("collapse_thresholds", COLLAPSE_THRESHOLDS),
                check_every_n_batches=steps_per_epoch,
            )
        )
    front_end = make_front_end()
    history = checkpointing.fit(
        pretrainer,
        make_dataset(config, corpus_dir, tokenizer, front_end),
        steps,
        steps_per_epoch,
        checkpoint,
        callbacks,
    )
    with open(os.path.join(output_dir, "history.json"), "w") as file:
        json.dump(history, file, indent=1)
    plot_history(history, os.path.join(output_dir, "loss_curves.png"))
    if pretrainer.codebook_usage is not None and steps > start:
        window = min(steps, pretrainer.codebook_usage_window_steps)
        save_codebook_usage_plot(
            pretrainer.codebook_usage.total_counts(),
            os.path.join(output_dir, "codebook_usage.png"),
            title=f"{config_name}: target codes at masked frames, last {window} steps",
        )
    save_pretrained_preset(
        pretrainer.backbone, os.path.join(output_dir, "preset"), front_end, tokenizer
    )
    return history


def training_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default="mslam_tiny", choices=sorted(n for n in CONFIGS if n.endswith("_tiny"))
    )
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--steps-per-epoch", type=int, default=10)
    parser.add_argument("--output", default="runs/pretrain")
    parser.add_argument("--corpus", default=SAMPLE_CORPUS)
    parser.add_argument(
        "--position-encoding",
        choices=POSITION_ENCODINGS,
        default=None,
        help="the attention's positions (default: the config's, relative_sinusoidal)",
    )
    checkpointing.add_training_arguments(parser)
    distribution.add_mesh_argument(parser)
    return parser


def main(argv=None):
    args = training_parser().parse_args(argv)
    distribution.apply_mesh(args.mesh, SLAMPretrainer.get_layout_map)
    history = pretrain(
        args.config,
        args.output,
        args.steps,
        args.steps_per_epoch,
        args.corpus,
        position_encoding=args.position_encoding,
        args=args,
    )
    for name in sorted(history):
        if name.endswith(("loss", "accuracy")) or name.startswith("codebook_"):
            print(f"{name}: {history[name][0]:.4f} -> {history[name][-1]:.4f}")
    print(f"pre-trained preset: {os.path.join(args.output, 'preset')}")


if __name__ == "__main__":
    main()
