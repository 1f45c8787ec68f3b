"""Synthetic speech corpora spoken by espeak-ng (pip only): `keras-slam synth-corpus`.

    corpus = ensure_synth_corpus("runs/synth_corpus", hours_per_language=1.0)  # built once, then reused

Sentences come from the bundled sample's text-only shards
(`tfrecords/sample/text/train/<lang>`), which share no sentence with the
sample's dev and test splits, so those stay held out. Each utterance draws
a sentence (a fresh shuffle once all were used) and a `synth.Style` (a
voice of the language, variant, rate, pitch, word gap) from one random
stream per (seed, language); a language is done once it has the hours
asked for. Output, through `writers.write_shards` (the bundled schema):

    <output>/paired/train/<lang>/<lang>-0000i-of-0000n.tfrecord.gz, summary.json
    <output>/metadata.jsonl   id, language, text, style and duration of every utterance
    <output>/summary.json     parameters, espeak-ng version, records and hours per language

The top `summary.json` is written last: a folder holding one whose
parameters match is a finished corpus and is reused.
"""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import tqdm

from keras_slam.data import pipeline, schema, synth, worker_pool, writers

SAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "tfrecords" / "sample"
SHARD_SECONDS = 1800  # audio per shard (~55 MB of int16 before GZIP)
BATCH = 64  # utterances drawn and synthesised at a time
FORMAT_VERSION = 1
MARKER = ".synth_corpus"  # a folder with it may be rebuilt; any other non-empty folder is refused


def bundled_sentences(text_dir=SAMPLE_CORPUS, languages=None):
    """{language: [sentence]} from the text-only shards `text_dir/text/train/<lang>`
    (all languages found when `languages` is None)."""
    root = Path(text_dir) / "text" / "train"
    found = sorted(path.name for path in root.iterdir() if path.is_dir()) if root.is_dir() else []
    languages = found if languages is None else list(languages)
    missing = [language for language in languages if language not in found]
    if missing or not languages:
        raise ValueError(
            f"no bundled text for {missing or 'any language'} under {root}; available: {', '.join(found) or 'none'}"
        )
    sentences = {}
    for language in languages:
        records = pipeline.read_records(
            pipeline.list_shards(str(root / language)), kind=schema.TEXT
        )
        sentences[language] = [
            record["text"].decode("utf-8") for record in records.as_numpy_iterator()
        ]
    return sentences


def _digest(sentences):
    return hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()[:16]


def _sentence_stream(sentences, rng):
    """Endless sentences: each pass over all of them in a fresh random order."""
    while True:
        for index in rng.permutation(len(sentences)):
            yield sentences[index]


def _synthesise_language(language, sentences, samples_wanted, seed, synthesiser, pool, bar):
    """Utterance items (with "pcm") and metadata rows until `samples_wanted` of audio."""
    rng = np.random.default_rng([seed, *language.encode("utf-8")])  # one stream per language
    voices = synthesiser.accents(language)
    stream = _sentence_stream(sentences, rng)
    items, rows, samples = [], [], 0
    while samples < samples_wanted:
        batch = [(next(stream), synth.draw_style(rng, voices)) for _ in range(BATCH)]
        for (text, style), pcm in zip(batch, synth.synthesise_many(batch, pool)):
            bar.update(min(len(pcm), samples_wanted - samples))
            samples += len(pcm)
            id = f"{language}-synth-{len(items):06d}"
            items.append(
                {"id": id, "pcm": pcm, "language": language, "transcript": text, "label": language}
            )
            rows.append(
                {
                    "id": id,
                    "language": language,
                    "text": text,
                    **dataclasses.asdict(style),
                    "duration": round(len(pcm) / schema.SAMPLE_RATE, 3),
                }
            )
            if samples >= samples_wanted:
                break
    return items, rows, samples / schema.SAMPLE_RATE


def build_synth_corpus(output, sentences, hours_per_language, seed=0, num_workers=1, progress=True):
    """Speaks `sentences` ({language: [sentence]}) into a paired corpus at `output`.

    Args:
        output: corpus folder, new, empty or made by this function (its
            `paired/`, `metadata.jsonl` and `summary.json` are replaced).
        sentences: {language code: non-empty list of sentences}.
        hours_per_language: audio hours per language (> 0); the last
            utterance may overshoot by a few seconds.
        seed: fixes sentences and styles; the same seed gives the same bytes
            whatever `num_workers`.
        num_workers: synthesis processes.
    Returns:
        The summary dict (also `output/summary.json`).
    """
    if hours_per_language <= 0:
        raise ValueError(f"hours_per_language must be > 0, got {hours_per_language}")
    for language, texts in sentences.items():
        if not texts:
            raise ValueError(f"{language}: no sentences")
        for index, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"{language}: empty text at sentence index {index}")
    synthesiser = synth.get_synthesiser()
    for language in sentences:
        synthesiser.accents(language)  # unknown languages fail before any work
    generated = ("paired", "metadata.jsonl", "summary.json")
    output = prepare_output(output, MARKER, "synth-corpus", generated)
    samples_wanted = round(hours_per_language * 3600 * schema.SAMPLE_RATE)
    pool = worker_pool.make_pool(num_workers)
    bar = tqdm.tqdm(
        total=samples_wanted * len(sentences),
        unit_scale=1 / schema.SAMPLE_RATE,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of speech [{elapsed}<{remaining}]",
        desc="espeak-ng",
        disable=not progress,
    )
    languages, metadata = {}, []
    try:
        for language in sorted(sentences):
            items, rows, seconds = _synthesise_language(
                language, sentences[language], samples_wanted, seed, synthesiser, pool, bar
            )
            folder = output / "paired" / "train" / language
            shards = write_corpus_shards(items, folder, language, seconds)
            languages[language] = {
                "records": shards["num_records"],
                "hours": shards["hours"],
                "voices": list(synthesiser.accents(language)),
            }
            metadata += rows
    finally:
        bar.close()
        worker_pool.release_pool(pool)
    write_metadata(output, metadata)
    summary = {
        "parameters": _parameters(sentences, hours_per_language, seed, synthesiser.version),
        "utterances": sum(entry["records"] for entry in languages.values()),
        "hours": sum(entry["hours"] for entry in languages.values()),
        "languages": languages,
        "ranges": {
            "variants": list(synth.VARIANTS),
            "rate_wpm": list(synth.RATE_RANGE),
            "pitch": list(synth.PITCH_RANGE),
            "word_gap_10ms": list(synth.WORD_GAP_RANGE),
        },
    }
    writers.write_json(str(output / "summary.json"), summary)
    return summary


def write_corpus_shards(items, folder, prefix, seconds, kind=schema.SPEECH):
    """GZIP shards of about SHARD_SECONDS of audio each (text: one shard); the
    writer's summary."""
    num_shards = max(1, round(seconds / SHARD_SECONDS))
    shards = writers.write_shards(
        items,
        str(folder),
        kind=kind,
        prefix=prefix,
        num_shards=num_shards,
        compress=True,
        progress=False,
    )
    # The writer's resume notes go: the top summary.json marks completion.
    shutil.rmtree(Path(folder) / writers.STATS_DIR)
    return shards


def write_metadata(output, rows):
    """`output/metadata.jsonl`: one JSON row per utterance."""
    with open(Path(output) / "metadata.jsonl", "w", encoding="utf-8") as file:
        file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def prepare_output(output, marker, command, generated):
    """Makes `output` ready for `command`'s files: refuses a non-empty folder
    without `marker` (so it never deletes what it did not make), deletes the
    `generated` files and folders of an earlier build, marks the folder."""
    output = Path(output)
    if output.is_dir() and any(output.iterdir()) and not (output / marker).exists():
        raise ValueError(
            f"{output} is not empty and was not made by {command}: choose a new or empty folder"
        )
    for name in generated:
        path = output / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    (output / marker).touch()
    return output


def is_built(output, parameters):
    """Whether `output` holds a finished build (its top summary.json, written
    last) made with `parameters`."""
    summary_path = Path(output) / "summary.json"
    if not summary_path.is_file():
        return False
    with open(summary_path, encoding="utf-8") as file:
        return json.load(file).get("parameters") == parameters


def _parameters(sentences, hours_per_language, seed, espeak_version):
    """What a cached corpus must match to be reused."""
    return {
        "format_version": FORMAT_VERSION,
        "espeak_ng": espeak_version,
        "seed": seed,
        "hours_per_language": hours_per_language,
        "text": {language: _digest(texts) for language, texts in sorted(sentences.items())},
    }


def ensure_synth_corpus(
    output,
    hours_per_language=1.0,
    languages=None,
    seed=0,
    text_dir=SAMPLE_CORPUS,
    num_workers=1,
    progress=True,
):
    """The corpus at `output`, built from the bundled text unless a finished one
    with the same parameters is already there. Returns `output`; read it with
    `pipeline.list_shards(f"{output}/paired/train/*/*.tfrecord.gz")`."""
    sentences = bundled_sentences(text_dir, languages)
    if is_built(
        output,
        _parameters(sentences, hours_per_language, seed, synth.get_synthesiser().version),
    ):
        return str(output)
    build_synth_corpus(output, sentences, hours_per_language, seed, num_workers, progress)
    return str(output)
