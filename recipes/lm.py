"""A tiny keras-hub causal LM (Gemma architecture) pre-trained on the bundled text.

    python -m recipes.lm --output runs/lm        # trains once, then reuses runs/lm/preset

Training checkpoints under `<output>/checkpoints` (`keras_slam.checkpointing`
flags): rerun the same command after a kill and it resumes where it stopped.

No model hub is reachable offline, so the SLM recipe (`recipes/slm.py`) joins
this LM instead of a published one. It is a real keras-hub `GemmaCausalLM`
with a `GemmaTokenizer` (a SentencePiece model trained here with Gemma's
special pieces), saved with `save_to_preset` and loaded with
`keras_hub.models.CausalLM.from_preset(directory)`: the code path a Gemma
preset a user has on disk takes too.

Corpus: the sample's text shards (tfrecords/sample/text, 4 languages), its
paired training transcripts, and both sides of the training pairs of the
parallel text (tfrecords/parallel). Held out: the sample's test transcripts
and the parallel test pairs. Reported: held-out perplexity per token against
a unigram model of the training tokens (add-one smoothed).
"""

import argparse
import json
import os
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from keras_slam import checkpointing, distribution
from keras_slam.data import gettext_pairs, pipeline, schema
from keras_slam.data.tokenizers import train_sentencepiece

SAMPLE_CORPUS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tfrecords", "sample"
)
PARALLEL_LANGUAGES = ("de", "es", "fr", "it")
# Gemma's special pieces and ids (GemmaTokenizer looks them up by piece).
GEMMA_PIECES = dict(
    pad_id=0,
    eos_id=1,
    bos_id=2,
    unk_id=3,
    pad_piece="<pad>",
    eos_piece="<eos>",
    bos_piece="<bos>",
    unk_piece="<unk>",
)
TINY = dict(
    vocabulary_size=1024,
    num_layers=2,
    num_query_heads=2,
    num_key_value_heads=1,
    hidden_dim=128,
    intermediate_dim=512,
    head_dim=64,
    sequence_length=64,
    batch_size=32,
    steps=1500,
    learning_rate=3e-3,
    # Training items holding their sentence twice ("s s"): the LM learns to
    # copy from its context (see `with_repeats`; 0.9 copies, 0.5 only
    # partly: README, SLM section).
    repeat_fraction=0.9,
    held_out_sentences=None,  # the first N held-out sentences scored (None: all)
)
SMOKE = dict(TINY, vocabulary_size=256, num_layers=1, hidden_dim=32, intermediate_dim=64,
             head_dim=16, steps=4, sequence_length=32, held_out_sentences=64)  # fmt: skip


def _text_shard_sentences(corpus):
    text = os.path.join(corpus, "text", "train")
    files = pipeline.list_shards([os.path.join(text, language) for language in os.listdir(text)])
    records = pipeline.read_records(files, kind=schema.TEXT)
    return [text.decode("utf-8") for text in records.map(lambda r: r["text"]).as_numpy_iterator()]


def _transcripts(corpus, split):
    with open(os.path.join(corpus, "metadata.jsonl"), encoding="utf-8") as file:
        rows = [json.loads(line) for line in file]
    return [r["text"] for r in rows if r["kind"] == "paired" and r["split"] == split]


def _pair_sentences(split):
    sentences = []
    for language in PARALLEL_LANGUAGES:
        for pair in gettext_pairs.read_pairs(language, split):
            sentences += [pair["en"], pair[language]]
    return sentences


def corpus_sentences(corpus=SAMPLE_CORPUS, extra=()):
    """(training sentences, held-out sentences) of the bundled text.

    `extra`: more training sentences (e.g. the SLM's response templates).
    """
    train = _text_shard_sentences(corpus) + _transcripts(corpus, "train")
    train += _pair_sentences("train") + list(extra)
    held_out = _transcripts(corpus, "test") + _pair_sentences("test")
    return train, held_out


def with_repeats(sentences, fraction, rng):
    """`sentences`, a random `fraction` of them written twice ("s s").

    An LM trained on single sentences never sees a span repeated, so it does
    not learn to copy from its context (its `copy_losses` repeat no lower than
    first: README, SLM section); the SLM needs that to read a transcript out
    of the adapted speech positions.
    """
    repeat = rng.random(len(sentences)) < fraction
    return [f"{s} {s}" if twice else s for s, twice in zip(sentences, repeat)]


def copy_losses(causal_lm, sentences):
    """Mean nats per token of each sentence's first and second occurrence in
    "s s" (the sentences whose two copies fit the sequence length): an LM
    that copies from its context scores the second far lower."""
    preprocessor = causal_lm.preprocessor
    lengths = [len(ids) for ids in preprocessor.tokenizer(sentences)]
    chosen = [
        (s, n) for s, n in zip(sentences, lengths) if 2 * n + 1 < preprocessor.sequence_length
    ]
    if not chosen:
        raise ValueError(
            f"copy_losses: none of the {len(sentences)} sentences fits twice in the "
            f"preprocessor's sequence_length ({preprocessor.sequence_length})"
        )
    log_likelihoods = token_log_likelihoods(causal_lm, [f"{s} {s}" for s, _ in chosen])
    first, second, start = [], [], 0
    for sentence, n in chosen:
        total = len(preprocessor.tokenizer(f"{sentence} {sentence}")) + 1  # + eos
        first.append(log_likelihoods[start : start + n].mean())
        second.append(log_likelihoods[start + n : start + total - 1].mean())
        start += total
    return -float(np.mean(first)), -float(np.mean(second))


def build_causal_lm(proto, config):
    """A randomly initialised `GemmaCausalLM` of `config` with its preprocessor."""
    tokenizer = keras_hub.models.GemmaTokenizer(proto=proto)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=config["num_layers"],
        num_query_heads=config["num_query_heads"],
        num_key_value_heads=config["num_key_value_heads"],
        hidden_dim=config["hidden_dim"],
        intermediate_dim=config["intermediate_dim"],
        head_dim=config["head_dim"],
        dropout=0.0,
    )
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(
        tokenizer, sequence_length=config["sequence_length"]
    )
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=preprocessor)


def token_log_likelihoods(causal_lm, sentences, batch_size=64):
    """Per-token natural-log likelihoods of `sentences` (eos included, bos not)."""
    preprocessor = causal_lm.preprocessor
    log_likelihoods = []
    for start in range(0, len(sentences), batch_size):
        x, y, weights = preprocessor(sentences[start : start + batch_size])
        logits = keras.ops.convert_to_numpy(causal_lm(x, training=False)).astype("float64")
        log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        picked = np.take_along_axis(log_probs, np.asarray(y)[..., None], axis=-1)[..., 0]
        log_likelihoods.append(picked[np.asarray(weights) > 0])
    return np.concatenate(log_likelihoods)


def unigram_perplexity(causal_lm, train, held_out):
    """Perplexity on the held-out targets of an add-one unigram model of the
    training tokens (each sentence's tokens and its eos).

    The training sentences are tokenized in tf.data batches, not packed by the
    preprocessor (which took ~42 CPU s on the bundled corpus, this <1 s)."""
    preprocessor = causal_lm.preprocessor
    tokenizer = preprocessor.tokenizer
    vocabulary_size = causal_lm.backbone.vocabulary_size
    counts = np.ones(vocabulary_size)
    counts[tokenizer.end_token_id] += len(train)
    batches = tf.data.Dataset.from_tensor_slices(train).batch(4096)
    for ids in batches.map(lambda text: tokenizer(text).flat_values).as_numpy_iterator():
        counts += np.bincount(ids, minlength=vocabulary_size)
    _, y, weights = preprocessor(held_out)
    targets = np.asarray(y)[np.asarray(weights) > 0]
    log_probs = np.log(counts / counts.sum())
    return float(np.exp(-log_probs[targets].mean()))


def perplexity(causal_lm, sentences):
    log_likelihoods = token_log_likelihoods(causal_lm, sentences)
    return float(np.exp(-log_likelihoods.mean()))


def train_lm(output, config=TINY, extra_sentences=(), seed=0, verbose=2, args=None):
    """Trains the LM and saves it as a keras-hub preset at `output`/preset,
    unless that preset exists; checkpoints under `output`/checkpoints and
    resumes from them (`args`: the `checkpointing` flags, default their
    defaults). Returns (preset directory, report dict)."""
    preset_dir = os.path.join(output, "preset")
    report_path = os.path.join(output, "lm_report.json")
    if os.path.exists(os.path.join(preset_dir, "config.json")):
        print(f"reusing the LM preset {preset_dir}")
        with open(report_path, encoding="utf-8") as file:
            return preset_dir, json.load(file)
    keras.utils.set_random_seed(seed)
    train, held_out = corpus_sentences(extra=extra_sentences)
    held_out = held_out[: config["held_out_sentences"]]
    proto = train_sentencepiece(
        train,
        vocab_size=config["vocabulary_size"],
        control_symbols=[],
        **GEMMA_PIECES,
    )
    causal_lm = build_causal_lm(proto, config)
    args = args or checkpointing.default_training_arguments()
    causal_lm.compile(
        optimizer=keras.optimizers.AdamW(
            keras.optimizers.schedules.CosineDecay(
                0.0, config["steps"], warmup_target=config["learning_rate"], warmup_steps=100
            ),
            weight_decay=0.01,
            **checkpointing.optimizer_arguments(args, global_clipnorm=1.0),
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    dataset = (
        tf.data.Dataset.from_tensor_slices(
            with_repeats([train[i] for i in order], config["repeat_fraction"], rng)
        )
        .shuffle(4096, seed=seed)
        .repeat()
        .batch(config["batch_size"], drop_remainder=True)
    )
    start = time.time()
    checkpointing.fit(
        causal_lm,
        dataset,
        config["steps"],
        max(1, config["steps"] // 10),
        checkpointing.checkpoint_from_args(args, output),
        verbose=verbose,
    )
    seconds = time.time() - start
    report = {
        "config": config,
        "parameters": causal_lm.backbone.count_params(),
        "training_sentences": len(train),
        "held_out_sentences": len(held_out),
        "train_seconds": round(seconds, 1),
        "held_out_perplexity": perplexity(causal_lm, held_out),
        "unigram_perplexity": unigram_perplexity(causal_lm, train, held_out),
        "copy_losses": copy_losses(causal_lm, held_out[:256]),
    }
    causal_lm.save_to_preset(preset_dir)
    with open(report_path, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    return preset_dir, report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/lm")
    parser.add_argument("--config", choices=("tiny", "smoke"), default="tiny")
    parser.add_argument("--steps", type=int, help="override the config's training steps")
    checkpointing.add_training_arguments(parser)
    distribution.add_mesh_argument(parser)
    args = parser.parse_args(argv)
    checkpointing.apply_mixed_precision(args)
    distribution.apply_mesh(args.mesh, keras_hub.models.GemmaBackbone.get_layout_map)
    config = dict(TINY if args.config == "tiny" else SMOKE)
    if args.steps:
        config["steps"] = args.steps
    preset_dir, report = train_lm(args.output, config, args=args)
    print(
        f"held-out perplexity {report['held_out_perplexity']:.1f} "
        f"(unigram baseline {report['unigram_perplexity']:.1f}), "
        f"{report['parameters']:,} parameters, {report['train_seconds']:.0f} s; "
        "held-out nats/token of a sentence, then of its repeat: %.2f, %.2f"
        % tuple(report["copy_losses"])
    )
    print(f"LM preset: {preset_dir} (keras_hub.models.CausalLM.from_preset)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
