"""Classification corpora spoken by espeak-ng: language ID and banking intents.

    lid = ensure_language_id_corpus("runs/lid")  # built once, then reused
    intent = ensure_intent_corpus("runs/intent")
    files = shard_files(intent, "speech", "train")  # label: the intent
    written = shard_files(intent, "text", "train")  # the same sentences, written

Language ID (`LID_LANGUAGES`, nine languages): sentences of at most
`LID_MAX_WORDS` words from the committed gettext text, the X side of
`tfrecords/parallel` (de, es, fr, it) and `tfrecords/lid_text` (nl, pl, pt,
sv), English from the English side of the German pairs. The gettext split
is by English sentence, so test sentences are never in train, in any
language. Label = the language.

Intents: `intents.intent_utterances`, split by template (label = the intent),
written as text shards too (the `TextClassifier` side of the cross-modal
transfer).

Voices: train utterances draw espeak-ng variants from `TRAIN_VARIANTS`,
test utterances from the held-out `TEST_VARIANTS`, so a test utterance
has an unseen sentence in an unseen voice variant. Styles come from one
random stream per (seed, split, language). Output:

    <output>/speech/<split>/<lang>/<lang>-0000i-of-0000n.tfrecord.gz, summary.json
    <output>/text/<split>/<lang>/...   (intent corpus) text records with "label"
    <output>/metadata.jsonl   id, text, label, split, style, duration of every utterance
    <output>/summary.json     parameters, labels, records and hours per split and language

The top `summary.json` is written last: a folder holding one whose
parameters match is a finished corpus and is reused.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import tqdm

from keras_slam.data import (
    gettext_pairs,
    intents,
    pipeline,
    schema,
    synth,
    synth_corpus,
    worker_pool,
    writers,
)

LID_LANGUAGES = ("de", "en", "es", "fr", "it", "nl", "pl", "pt", "sv")
LID_TEXT = gettext_pairs.PARALLEL_TEXT.parent / "lid_text"
LID_MAX_WORDS = 12  # short clips: language ID needs seconds, not sentences
TEST_VARIANTS = ("f3", "m3", "klatt2")
TRAIN_VARIANTS = tuple(variant for variant in synth.VARIANTS if variant not in TEST_VARIANTS)
SPLITS = ("train", "test")
FORMAT_VERSION = 1


def lid_sentences(language, split, count):
    """The first `count` sentences (<= LID_MAX_WORDS words) of `language` in
    the committed gettext `split` ("train" or "test")."""
    if language == "en":
        pairs, side = gettext_pairs.read_pairs("de", split), "en"
    elif language in gettext_pairs.SAMPLE_LANGUAGES:
        pairs, side = gettext_pairs.read_pairs(language, split), language
    else:
        pairs, side = gettext_pairs.read_pairs(language, split, LID_TEXT), language
    sentences = [pair[side] for pair in pairs if len(pair[side].split()) <= LID_MAX_WORDS]
    if len(sentences) < count:
        raise ValueError(
            f"{language}/{split}: {len(sentences)} sentences of <= {LID_MAX_WORDS} words, "
            f"{count} asked for"
        )
    return sentences[:count]


def language_id_utterances(languages=LID_LANGUAGES, train_per_language=120, test_per_language=30):
    """[{"id", "text", "language", "label", "split"}] of the language-ID corpus."""
    unknown = sorted(set(languages) - set(LID_LANGUAGES))
    if unknown:
        raise ValueError(f"no language-ID text for {unknown}; available: {LID_LANGUAGES}")
    counts = {"train": train_per_language, "test": test_per_language}
    return [
        {
            "id": f"{language}-{split}-{index:05d}",
            "text": text,
            "language": language,
            "label": language,
            "split": split,
        }
        for language in languages
        for split in SPLITS
        for index, text in enumerate(lid_sentences(language, split, counts[split]))
    ]


def _groups(utterances):
    """{(split, language): [utterance]} in sorted key order, utterance order kept."""
    groups = {}
    for utterance in utterances:
        groups.setdefault((utterance["split"], utterance["language"]), []).append(utterance)
    return dict(sorted(groups.items()))


def _parameters(name, utterances, seed, espeak_version):
    """What a cached corpus must match to be reused."""
    text = json.dumps(utterances, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return {
        "format_version": FORMAT_VERSION,
        "corpus": name,
        "espeak_ng": espeak_version,
        "seed": seed,
        "test_variants": list(TEST_VARIANTS),
        "utterances": hashlib.sha256(text).hexdigest()[:16],
    }


def build_labelled_speech(
    output, name, utterances, written=False, seed=0, num_workers=1, progress=True
):
    """Speaks `utterances` ([{"id", "text", "language", "label", "split"}]) into
    speech shards at `output` (and text shards when `written`); returns the summary.

    Args:
        output: corpus folder, new, empty or made by this function.
        name: the corpus's name (in its parameters and refusal messages).
        seed: fixes every style; the same seed gives the same bytes whatever
            `num_workers`.
    """
    for index, utterance in enumerate(utterances):
        if utterance["split"] not in SPLITS or not utterance["text"].strip():
            raise ValueError(
                f"{name} utterance {index} ({utterance['id']}): needs non-empty text and a "
                f"split in {SPLITS}, got {utterance['text']!r}, {utterance['split']!r}"
            )
    synthesiser = synth.get_synthesiser()
    groups = _groups(utterances)
    for _, language in groups:
        synthesiser.accents(language)  # unknown languages fail before any work
    generated = ("speech", "text", "metadata.jsonl", "summary.json")
    output = synth_corpus.prepare_output(output, f".{name}", name, generated)
    pool = worker_pool.make_pool(num_workers)
    bar = tqdm.tqdm(total=len(utterances), unit="utterance", desc="espeak-ng", disable=not progress)
    splits, metadata = {}, []
    try:
        for (split, language), group in groups.items():
            rng = np.random.default_rng([seed, *f"{split}/{language}".encode()])
            voices = synthesiser.accents(language)
            variants = TEST_VARIANTS if split == "test" else TRAIN_VARIANTS
            requests = [(row["text"], synth.draw_style(rng, voices, variants)) for row in group]
            items = []
            for row, (_, style), pcm in zip(group, requests, synth.synthesise_many(requests, pool)):
                bar.update(1)
                items.append(
                    {
                        "id": row["id"],
                        "pcm": pcm,
                        "language": language,
                        "transcript": row["text"],
                        "label": row["label"],
                    }
                )
                duration = round(len(pcm) / schema.SAMPLE_RATE, 3)
                metadata.append({**row, **dataclasses.asdict(style), "duration": duration})
            seconds = sum(len(item["pcm"]) for item in items) / schema.SAMPLE_RATE
            folder = output / "speech" / split / language
            shards = synth_corpus.write_corpus_shards(items, folder, language, seconds)
            splits.setdefault(split, {})[language] = {
                "records": shards["num_records"],
                "hours": shards["hours"],
            }
            if written:
                texts = [
                    {key: row[key] for key in ("id", "text", "language", "label")} for row in group
                ]
                folder = output / "text" / split / language
                synth_corpus.write_corpus_shards(texts, folder, language, 0, kind=schema.TEXT)
    finally:
        bar.close()
        worker_pool.release_pool(pool)
    synth_corpus.write_metadata(output, metadata)
    summary = {
        "parameters": _parameters(name, utterances, seed, synthesiser.version),
        "labels": sorted({utterance["label"] for utterance in utterances}),
        "languages": sorted({language for _, language in groups}),
        "utterances": len(metadata),
        "hours": sum(entry["hours"] for done in splits.values() for entry in done.values()),
        "splits": splits,
    }
    writers.write_json(str(output / "summary.json"), summary)
    return summary


def _ensure(output, name, utterances, written, seed, num_workers, progress):
    parameters = _parameters(name, utterances, seed, synth.get_synthesiser().version)
    if not synth_corpus.is_built(output, parameters):
        build_labelled_speech(output, name, utterances, written, seed, num_workers, progress)
    return str(output)


def ensure_language_id_corpus(
    output,
    languages=LID_LANGUAGES,
    train_per_language=120,
    test_per_language=30,
    seed=0,
    num_workers=1,
    progress=True,
):
    """The spoken language-ID corpus at `output` (see the module docstring),
    built unless a finished one with the same parameters is there."""
    utterances = language_id_utterances(languages, train_per_language, test_per_language)
    return _ensure(output, "language-id-corpus", utterances, False, seed, num_workers, progress)


def ensure_intent_corpus(
    output,
    languages=intents.LANGUAGES,
    intent_names=intents.INTENTS,
    max_per_template=None,
    seed=0,
    num_workers=1,
    progress=True,
):
    """The spoken and written intent corpus at `output` (see the module
    docstring): at most `max_per_template` sentences of each template (evenly
    spread over its slot combinations; None: all)."""
    utterances = intents.intent_utterances(languages, intent_names, max_per_template)
    return _ensure(output, "intent-corpus", utterances, True, seed, num_workers, progress)


def shard_files(output, kind, split):
    """The shards of a corpus made here: `kind` "speech" or "text", `split` "train" or "test"."""
    return pipeline.list_shards(f"{output}/{kind}/{split}/*/*.tfrecord.gz")


def read_summary(output):
    """The summary.json of a corpus made here (labels, languages, counts)."""
    with open(Path(output) / "summary.json", encoding="utf-8") as file:
        return json.load(file)
