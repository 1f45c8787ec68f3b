"""Speech-translation corpora: the gettext sentence pairs spoken by espeak-ng.

    corpus = ensure_parallel_speech("runs/parallel_speech")  # built once, then reused
    files = pipeline.list_shards(f"{corpus}/de-en/train")

A direction (spoken, translated) speaks one side of each pair of
`tfrecords/parallel/<lang>/<split>.jsonl.xz` (see `gettext_pairs`; or of
another source, `read_pairs=`, e.g. `intents.translation_pairs`): X->En
speaks the X side and translates into English, En->X the reverse. Every
utterance draws a `synth.Style` from one random stream per (seed, direction,
split). Records (the bundled schema, `writers.write_shards`): `language` =
spoken language, `transcript` = the spoken side, `translation` = the other
side, `target_language`. Output:

    <output>/<spoken>-<translated>/<split>/   shards
        <spoken>-<translated>-0000i-of-0000n.tfrecord.gz, summary.json
    <output>/metadata.jsonl   id, pair id, direction, split, text, style and
                              duration of every utterance
    <output>/summary.json     parameters, records and hours per direction and split

The top `summary.json` is written last: a folder holding one whose
parameters match is a finished corpus and is reused.
"""

import dataclasses
import functools
import hashlib
import json

import numpy as np
import tqdm

from keras_slam.data import gettext_pairs, schema, synth, synth_corpus, worker_pool, writers

DIRECTIONS = (("de", "en"), ("es", "en"), ("fr", "en"), ("it", "en"), ("en", "de"))
# Pairs per direction and split. A split's audio is held in memory until its
# shards are written (~0.75 h of speech, ~85 MB of int16 per 1,000 pairs).
# At most gettext_pairs.MAX_TRAIN_PAIRS: the committed text's train pairs.
MAX_PAIRS = 2500
MARKER = ".parallel_speech"
FORMAT_VERSION = 1


def direction_name(spoken, translated):
    return f"{spoken}-{translated}"


def _pairs(directions, splits, max_pairs, read_pairs):
    """{(spoken, translated, split): [pair]}, the first `max_pairs` of each
    `read_pairs(language, split)`."""
    chosen = {}
    for direction in directions:
        if len(direction) != 2 or "en" not in direction or direction[0] == direction[1]:
            raise ValueError(
                f"direction {'-'.join(direction)!r}: give spoken-translated languages, one of them 'en' (the pairs are English-X)"
            )
        spoken, translated = direction
        language = translated if spoken == "en" else spoken
        for split in splits:
            pairs = read_pairs(language, split)
            chosen[spoken, translated, split] = pairs[:max_pairs]
    return chosen


def _speak(pairs, spoken, translated, split, seed, synthesiser, pool, bar):
    """Speech items and metadata rows of one direction and split."""
    name = direction_name(spoken, translated)
    rng = np.random.default_rng([seed, *f"{name}/{split}".encode()])
    voices = synthesiser.accents(spoken)
    requests = [(pair[spoken], synth.draw_style(rng, voices)) for pair in pairs]
    items, rows = [], []
    for pair, (text, style), pcm in zip(pairs, requests, synth.synthesise_many(requests, pool)):
        bar.update(1)
        id = f"{name}-{pair['id']}"
        items.append(
            {
                "id": id,
                "pcm": pcm,
                "language": spoken,
                "transcript": text,
                "translation": pair[translated],
                "target_language": translated,
            }
        )
        rows.append(
            {
                "id": id,
                "pair": pair["id"],
                "direction": name,
                "split": split,
                "text": text,
                **dataclasses.asdict(style),
                "duration": round(len(pcm) / schema.SAMPLE_RATE, 3),
            }
        )
    return items, rows


def _build(output, chosen, seed, num_workers, progress):
    """Speaks `chosen` ({(spoken, translated, split): [pair]}) into `output`;
    returns the summary."""
    synthesiser = synth.get_synthesiser()
    for spoken, _, _ in chosen:
        synthesiser.accents(spoken)  # unknown languages fail before any work
    names = sorted({direction_name(spoken, translated) for spoken, translated, _ in chosen})
    generated = [*names, "metadata.jsonl", "summary.json"]
    output = synth_corpus.prepare_output(output, MARKER, "parallel-speech", generated)
    pool = worker_pool.make_pool(num_workers)
    total = sum(map(len, chosen.values()))
    bar = tqdm.tqdm(total=total, unit="utterance", desc="espeak-ng", disable=not progress)
    corpus, metadata = {}, []
    try:
        for (spoken, translated, split), pairs in chosen.items():
            if not pairs:
                continue
            items, rows = _speak(pairs, spoken, translated, split, seed, synthesiser, pool, bar)
            name = direction_name(spoken, translated)
            seconds = sum(row["duration"] for row in rows)
            shards = synth_corpus.write_corpus_shards(items, output / name / split, name, seconds)
            corpus.setdefault(name, {})[split] = {
                "records": shards["num_records"],
                "hours": shards["hours"],
            }
            metadata += rows
    finally:
        bar.close()
        worker_pool.release_pool(pool)
    synth_corpus.write_metadata(output, metadata)
    summary = {
        "parameters": _parameters(chosen, seed, synthesiser.version),
        "utterances": len(metadata),
        "hours": sum(entry["hours"] for done in corpus.values() for entry in done.values()),
        "directions": corpus,
    }
    writers.write_json(str(output / "summary.json"), summary)
    return summary


def _parameters(chosen, seed, espeak_version):
    """What a cached corpus must match to be reused."""
    text = {
        f"{direction_name(spoken, translated)}/{split}": hashlib.sha256(
            json.dumps(pairs, sort_keys=True).encode("utf-8")
        ).hexdigest()[:16]
        for (spoken, translated, split), pairs in chosen.items()
    }
    return {
        "format_version": FORMAT_VERSION,
        "espeak_ng": espeak_version,
        "seed": seed,
        "text": text,
    }


def ensure_parallel_speech(
    output,
    directions=DIRECTIONS,
    splits=gettext_pairs.SPLITS,
    max_pairs=MAX_PAIRS,
    seed=0,
    text_dir=gettext_pairs.PARALLEL_TEXT,
    num_workers=1,
    progress=True,
    read_pairs=None,
):
    """Speaks the pairs of `text_dir` into a speech-translation corpus at
    `output`, unless a finished one with the same parameters (pairs, seed,
    espeak-ng version) is there. Returns `output`; its summary.json gives
    records and hours per direction and split.

    Args:
        output: corpus folder, new, empty or made by this function (its
            direction folders, `metadata.jsonl` and `summary.json` are replaced).
        directions: (spoken, translated) language pairs, one of them "en".
        splits: which of "train", "dev", "test".
        max_pairs: at most this many pairs per direction and split (the
            first ones of each file, which is in random id order); None: all.
        seed: fixes every style; the same seed gives the same bytes whatever
            `num_workers`.
        num_workers: synthesis processes.
        read_pairs: (language, split) -> pair dicts {"id", "en", language}
            instead of the gettext pairs of `text_dir` (e.g.
            `intents.translation_pairs`).
    """
    if read_pairs is None:
        read_pairs = functools.partial(gettext_pairs.read_pairs, directory=text_dir)
    chosen = _pairs(directions, splits, max_pairs, read_pairs)
    parameters = _parameters(chosen, seed, synth.get_synthesiser().version)
    if not synth_corpus.is_built(output, parameters):
        _build(output, chosen, seed, num_workers, progress)
    return str(output)
