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

Text instructions (`instruction_fraction` > 0): that fraction of the training
items are instruction examples of the trained SLM families in the layout the
SLM gives the frozen LM (`SpeechLanguageModel`: start token, instruction,
then the content where the adapted speech goes, then the response + eos),
the text standing in for the speech: transcribe -> the same text, language
-> its language name, translate -> the English side of a training pair. The
loss is on the response tokens only, as in the SLM. The held-out family
(contextual biasing) is never among them. Reported on held-out sentences and
pairs (`instruction_report`): greedy language-name accuracy, copy CER,
translation BLEU / chrF, and nats per response token of each family.
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
from keras_slam.data import gettext_pairs, instructions, pipeline, schema
from keras_slam.data.tokenizers import train_sentencepiece
from keras_slam.metrics import bleu
from keras_slam.metrics.error_rates import character_error_rate
from keras_slam.models.speech_language_model import lm_hooks

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
    # Training items that are text instruction examples in the SLM's layout
    # (module docstring); the repeats are drawn among the others.
    instruction_fraction=0.0,
    held_out_sentences=None,  # the first N held-out sentences scored (None: all)
    held_out_instructions=200,  # held-out examples per family in `instruction_report`
    max_new_tokens=48,
)
SMOKE = dict(TINY, vocabulary_size=256, num_layers=1, hidden_dim=32, intermediate_dim=64,
             head_dim=16, steps=4, sequence_length=32, held_out_sentences=64,
             held_out_instructions=8, max_new_tokens=4)  # fmt: skip


def _text_shard_sentences(corpus):
    """[(sentence, language)] of the text shards (one folder per language)."""
    text = os.path.join(corpus, "text", "train")
    sentences = []
    for language in sorted(os.listdir(text)):
        files = pipeline.list_shards([os.path.join(text, language)])
        records = pipeline.read_records(files, kind=schema.TEXT).map(lambda r: r["text"])
        sentences += [(t.decode("utf-8"), language) for t in records.as_numpy_iterator()]
    return sentences


def _transcripts(corpus, split):
    """[(transcript, language)] of the paired sample's `split`."""
    with open(os.path.join(corpus, "metadata.jsonl"), encoding="utf-8") as file:
        rows = [json.loads(line) for line in file]
    return [
        (r["text"], r["language"]) for r in rows if r["kind"] == "paired" and r["split"] == split
    ]


def translation_pairs(split):
    """[(source sentence, English sentence)] of the parallel text's `split`."""
    return [
        (pair[language], pair["en"])
        for language in PARALLEL_LANGUAGES
        for pair in gettext_pairs.read_pairs(language, split)
    ]


def _pair_sentences(split):
    """[(sentence, language)]: both sides of the parallel text's `split`."""
    sentences = []
    for language in PARALLEL_LANGUAGES:
        for pair in gettext_pairs.read_pairs(language, split):
            sentences += [(pair["en"], "en"), (pair[language], language)]
    return sentences


def labelled_sentences(corpus=SAMPLE_CORPUS):
    """(training, held-out) [(sentence, language)] of the bundled text."""
    train = _text_shard_sentences(corpus) + _transcripts(corpus, "train") + _pair_sentences("train")
    held_out = _transcripts(corpus, "test") + _pair_sentences("test")
    return train, held_out


def instruction_candidates(sentences, pairs):
    """{family: [(content, response)]} of the trained SLM families, the text
    standing in for the speech: transcribe (sentence -> itself), language
    (sentence -> its language's name) from `sentences` [(text, language)];
    translate (source -> English) from `pairs` [(source, English)]."""
    candidates = {family: [] for family in instructions.TRAINED}
    for text, language in sentences:
        record = {"transcript": text, "language": language}
        for family in ("transcribe", "language"):
            candidates[family].append((text, instructions.response(family, record)))
    for source, english in pairs:
        record = {"transcript": source, "translation": english, "target_language": "en"}
        candidates["translate"].append((source, instructions.response("translate", record)))
    return candidates


def fitting_instruction_rows(causal_lm, candidates):
    """{family: [(ids, weights)]}: `instruction_rows` of each family's
    candidates [(content, response)], those that fit the sequence length."""
    rows = {}
    for family, pairs in candidates.items():
        items = [(family, content, answer) for content, answer in pairs]
        rows[family] = [row for row in instruction_rows(causal_lm, items) if row is not None]
    return rows


def draw_instructions(count, rows, rng):
    """`count` items of `rows` {family: [item]}: a family drawn uniformly
    among those with items, then one of its items."""
    families = [family for family in instructions.TRAINED if rows.get(family)]
    return [rows[family][rng.integers(len(rows[family]))] for family in rng.choice(families, count)]


def tokenize_texts(tokenizer, texts, batch_size=4096):
    """Token ids of each text (list of lists of int), tokenized in tf.data
    batches (one eager call per text would take minutes on the corpus)."""
    ids = []
    batches = tf.data.Dataset.from_tensor_slices(list(texts)).batch(batch_size)
    for batch in batches.map(tokenizer).as_numpy_iterator():
        ids += batch.to_list() if hasattr(batch, "to_list") else [list(row) for row in batch]
    return [[int(i) for i in row] for row in ids]


def sentence_rows(causal_lm, sentences):
    """[(ids, weights)] of plain sentences as the preprocessor packs them:
    start + the sentence's ids (cut to fit) + eos; every target weighted."""
    tokenizer = causal_lm.preprocessor.tokenizer
    length = causal_lm.preprocessor.sequence_length
    rows = []
    for ids in tokenize_texts(tokenizer, sentences):
        ids = [tokenizer.start_token_id] + ids[: length - 1] + [tokenizer.end_token_id]
        rows.append((ids, [0] + [1] * (len(ids) - 1)))
    return rows


def instruction_rows(causal_lm, items):
    """[(ids, weights)] of [(family, content, response)] in the SLM's layout:
    the LM's prompt start ids + INSTRUCTIONS[family] + content + response +
    eos, each part tokenized alone as `SpeechLanguageModel.prompt_ids` /
    `response_ids` do; weight 1 on the response and eos only. An item longer
    than sequence_length + 1 tokens is None."""
    tokenizer = causal_lm.preprocessor.tokenizer
    start = lm_hooks(causal_lm).prompt_start_ids(tokenizer)
    texts = sorted({text for _, content, answer in items for text in (content, answer)})
    texts += [instructions.INSTRUCTIONS[family] for family in instructions.TRAINED]
    ids = dict(zip(texts, tokenize_texts(tokenizer, texts)))
    rows = []
    for family, content, answer in items:
        prefix = start + ids[instructions.INSTRUCTIONS[family]] + ids[content]
        response = ids[answer] + [tokenizer.end_token_id]
        row = prefix + response
        fits = len(row) <= causal_lm.preprocessor.sequence_length + 1
        rows.append((row, [0] * len(prefix) + [1] * len(response)) if fits else None)
    return rows


def pack_rows(rows, sequence_length, pad_id):
    """[(ids, weights)] -> ({"token_ids", "padding_mask"}, targets,
    target weights), each (N, sequence_length): inputs ids[:-1], targets
    ids[1:] (the causal LM's training layout)."""
    ids, _ = instructions.pad_rows([r[0] for r in rows], sequence_length + 1, pad_id, "item")
    weights, mask = instructions.pad_rows(
        [np.asarray(r[1], "float32") for r in rows], sequence_length + 1, 0.0, "item"
    )
    x = {"token_ids": ids[:, :-1].astype("int32"), "padding_mask": mask[:, :-1] > 0}
    return x, ids[:, 1:].astype("int32"), weights[:, 1:]


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
    ids = tokenize_texts(tokenizer, train)
    counts += np.bincount(
        np.concatenate([np.asarray(r, "int64") for r in ids]), minlength=vocabulary_size
    )
    _, y, weights = preprocessor(held_out)
    targets = np.asarray(y)[np.asarray(weights) > 0]
    log_probs = np.log(counts / counts.sum())
    return float(np.exp(-log_probs[targets].mean()))


def greedy_responses(causal_lm, prefixes, max_new_tokens, batch_size=64):
    """Greedy continuations of `prefixes` (lists of ids) up to eos,
    `max_new_tokens` or the sequence length (lists of ids, eos left out)."""
    tokenizer = causal_lm.preprocessor.tokenizer
    length = causal_lm.preprocessor.sequence_length
    outputs = []
    for start in range(0, len(prefixes), batch_size):
        rows = [list(p) for p in prefixes[start : start + batch_size]]
        done = [len(row) >= length for row in rows]
        new = [[] for _ in rows]
        for _ in range(max_new_tokens):
            if all(done):
                break
            ids, mask = instructions.pad_rows(
                [np.asarray(r, "int32") for r in rows], length, tokenizer.pad_token_id
            )
            logits = causal_lm({"token_ids": ids, "padding_mask": mask > 0}, training=False)
            logits = keras.ops.convert_to_numpy(logits)
            for i, row in enumerate(rows):
                if done[i]:
                    continue
                token = int(np.argmax(logits[i, len(row) - 1]))
                done[i] = token == tokenizer.end_token_id or len(row) + 1 >= length
                if token != tokenizer.end_token_id:
                    row.append(token)
                    new[i].append(token)
        outputs += new
    return outputs


def instruction_report(causal_lm, sentences, pairs, count, max_new_tokens):
    """Held-out text-instruction results: the first `count` examples of each
    family from `sentences` [(text, language)] and `pairs` [(source,
    English)] (those that fit): {family: {"items", "nats_per_token" (response
    + eos, teacher-forced), and greedy "accuracy" (language) / "cer"
    (transcribe) / "bleu", "chrf" (translate)}}."""
    tokenizer = causal_lm.preprocessor.tokenizer
    candidates = instruction_candidates(sentences, pairs)
    report = {}
    for family in instructions.TRAINED:
        items = [(family, content, answer) for content, answer in candidates[family]]
        fitting = [
            (row, answer)
            for row, (_, _, answer) in zip(instruction_rows(causal_lm, items), items)
            if row is not None
        ][:count]
        if not fitting:
            continue
        rows, references = [row for row, _ in fitting], [answer for _, answer in fitting]
        x, y, weights = pack_rows(rows, causal_lm.preprocessor.sequence_length, 0)
        logits = keras.ops.convert_to_numpy(causal_lm(x, training=False)).astype("float64")
        log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        picked = np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0]
        prefixes = [ids[: weight.index(1)] for ids, weight in rows]
        hypotheses = [
            str(keras.ops.convert_to_numpy(tokenizer.detokenize(ids))) if ids else ""
            for ids in greedy_responses(causal_lm, prefixes, max_new_tokens)
        ]
        result = {
            "items": len(rows),
            "nats_per_token": float(-(picked * weights).sum() / weights.sum()),
            "examples": list(zip(references, hypotheses))[:5],
        }
        if family == "language":
            result["accuracy"] = float(np.mean([r == h for r, h in zip(references, hypotheses)]))
        elif family == "transcribe":
            result["cer"] = character_error_rate(references, hypotheses)
        else:
            result["bleu"] = bleu.corpus_bleu(references, hypotheses)
            result["chrf"] = bleu.corpus_chrf(references, hypotheses)
        report[family] = result
    return report


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
    labelled_train, labelled_held_out = labelled_sentences()
    train = [sentence for sentence, _ in labelled_train] + list(extra_sentences)
    held_out = [sentence for sentence, _ in labelled_held_out][: config["held_out_sentences"]]
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
    texts = with_repeats([train[i] for i in order], config["repeat_fraction"], rng)
    rows = sentence_rows(causal_lm, texts)
    is_instruction = rng.random(len(rows)) < config["instruction_fraction"]
    candidates = (
        fitting_instruction_rows(
            causal_lm, instruction_candidates(labelled_train, translation_pairs("train"))
        )
        if is_instruction.any()
        else {}
    )
    drawn = iter(draw_instructions(int(is_instruction.sum()), candidates, rng))
    if verbose and is_instruction.any():
        print(
            f"{int(is_instruction.sum())} of {len(rows)} training items are text instructions, "
            f"drawn from { ({f: len(r) for f, r in candidates.items()}) } examples that fit"
        )
    rows = [next(drawn) if chosen else row for row, chosen in zip(rows, is_instruction)]
    x, y, weights = pack_rows(
        rows, config["sequence_length"], causal_lm.preprocessor.tokenizer.pad_token_id
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y, weights))
        .shuffle(4096, seed=seed)
        .repeat()
        .batch(config["batch_size"], drop_remainder=True)
    )
    # The items are packed here (instruction items need their loss mask).
    preprocessor, causal_lm.preprocessor = causal_lm.preprocessor, None
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
    causal_lm.preprocessor = preprocessor
    report = {
        "config": config,
        "parameters": causal_lm.backbone.count_params(),
        "training_sentences": len(train),
        "instruction_items": int(is_instruction.sum()),
        # Per family: the distinct examples that fit the sequence length.
        "instruction_candidates": {family: len(rows) for family, rows in candidates.items()},
        "held_out_sentences": len(held_out),
        "train_seconds": round(seconds, 1),
        "held_out_perplexity": perplexity(causal_lm, held_out),
        "unigram_perplexity": unigram_perplexity(causal_lm, train, held_out),
        "copy_losses": copy_losses(causal_lm, held_out[:256]),
        "instructions": instruction_report(
            causal_lm,
            labelled_held_out,
            translation_pairs("test"),
            config["held_out_instructions"],
            config["max_new_tokens"],
        ),
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
    parser.add_argument(
        "--instruction-fraction", type=float, help="override the config's instruction_fraction"
    )
    checkpointing.add_training_arguments(parser)
    distribution.add_mesh_argument(parser)
    args = parser.parse_args(argv)
    checkpointing.apply_mixed_precision(args)
    distribution.apply_mesh(args.mesh, keras_hub.models.GemmaBackbone.get_layout_map)
    config = dict(TINY if args.config == "tiny" else SMOKE)
    if args.steps:
        config["steps"] = args.steps
    if args.instruction_fraction is not None:
        config["instruction_fraction"] = args.instruction_fraction
    preset_dir, report = train_lm(args.output, config, args=args)
    print(
        f"held-out perplexity {report['held_out_perplexity']:.1f} "
        f"(unigram baseline {report['unigram_perplexity']:.1f}), "
        f"{report['parameters']:,} parameters, {report['train_seconds']:.0f} s; "
        "held-out nats/token of a sentence, then of its repeat: %.2f, %.2f"
        % tuple(report["copy_losses"])
    )
    for family, result in report["instructions"].items():
        scores = {k: round(v, 3) for k, v in result.items() if k not in ("items", "examples")}
        print(f"held-out text instruction {family} ({result['items']} items): {scores}")
    print(f"LM preset: {preset_dir} (keras_hub.models.CausalLM.from_preset)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
