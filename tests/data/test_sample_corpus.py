"""The committed sample corpus (tfrecords/sample/): present, within budget,
complete, held-out splits disjoint, every record parses with the schema."""

import collections
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from keras_slam.data import pipeline, schema

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tfrecords" / "sample"
LANGUAGES = ("en", "de", "es", "it")
LAYOUT = (
    ("paired", "train"),
    ("paired", "dev"),
    ("paired", "test"),
    ("speech", "train"),
    ("text", "train"),
)
BUDGET_BYTES = 30 * 1000 * 1000


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "make_sample_corpus", ROOT / "tfrecords" / "make_sample_corpus.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


def _metadata():
    with open(SAMPLE / "metadata.jsonl", encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def _records(kind, split, language):
    """Parsed records of one folder, read with the project's reader (which also
    verifies every record)."""
    files = pipeline.list_shards(str(SAMPLE / kind / split / language))
    assert all(name.endswith(".tfrecord.gz") for name in files)
    dataset = pipeline.read_records(files, kind="text" if kind == "text" else "speech")
    return list(dataset.as_numpy_iterator())


def test_corpus_is_committed_and_within_budget():
    for name in ("README.md", "sources.json", "summary.json", "metadata.jsonl"):
        assert (SAMPLE / name).is_file(), name
    total = sum(path.stat().st_size for path in SAMPLE.rglob("*") if path.is_file())
    assert total < BUDGET_BYTES, f"{total / 1e6:.2f} MB"
    sources = json.loads((SAMPLE / "sources.json").read_text(encoding="utf-8"))
    assert set(sources["languages"]) == set(LANGUAGES)
    assert all(entry["license"] for entry in sources["languages"].values())
    # The synthesis settings the script shares with keras_slam.data.synth are the ones recorded.
    recorded = sources["synthesiser"]
    assert (list(script.VARIANTS), list(script.RATE_RANGE), list(script.PITCH_RANGE)) == (
        recorded["variants"],
        recorded["speed_wpm"],
        recorded["pitch"],
    )


def test_every_language_has_every_kind_and_split():
    summary = json.loads((SAMPLE / "summary.json").read_text())
    rows = {(row["kind"], row["split"], row["language"]): row for row in summary["shards"]}
    assert set(rows) == {
        (kind, split, language) for kind, split in LAYOUT for language in LANGUAGES
    }
    assert all(row["records"] > 0 for row in rows.values())
    # English carries the most paired speech (an English CTC model is tuned on it).
    english = rows[("paired", "train", "en")]["hours"]
    assert english > max(rows[("paired", "train", code)]["hours"] for code in LANGUAGES[1:])


def test_held_out_sentences_are_disjoint_from_training():
    keys = collections.defaultdict(set)
    for row in _metadata():
        keys[row["split"]].add(script.sentence_key(row["text"]))
    for language in LANGUAGES:
        records = _records("text", "train", language)
        assert {record["language"].decode() for record in records} == {language}
        keys["train"].update(script.sentence_key(record["text"].decode()) for record in records)
    assert keys["dev"] and keys["test"]
    assert not keys["dev"] & keys["train"]
    assert not keys["test"] & keys["train"]
    assert not keys["dev"] & keys["test"]


@pytest.mark.parametrize("kind,split", [("paired", "test"), ("speech", "train")])
def test_speech_records_parse_and_match_metadata(kind, split):
    metadata = {row["id"]: row for row in _metadata()}
    for language in LANGUAGES:
        records = _records(kind, split, language)
        expected = [
            row_id
            for row_id, row in metadata.items()
            if (row["kind"], row["split"], row["language"]) == (kind, split, language)
        ]
        assert sorted(record["id"].decode() for record in records) == sorted(expected)
        for record in records:
            row = metadata[record["id"].decode()]
            assert record["sample_rate"] == schema.SAMPLE_RATE
            assert record["pcm"].shape == (record["num_samples"],)
            # The WAVs are 22.05 kHz; the writer resampled them to 16 kHz.
            assert record["num_samples"] / schema.SAMPLE_RATE == pytest.approx(
                row["duration"], abs=1e-3
            )
            # Trimmed: raw espeak-ng output ends in >= 0.3 s below 5% of its peak.
            loud = np.flatnonzero(np.abs(record["pcm"].astype("int32")) > 32768 * 0.125 * 0.05)
            assert loud[0] < 0.15 * schema.SAMPLE_RATE
            assert record["num_samples"] - loud[-1] < 0.25 * schema.SAMPLE_RATE
            assert record["language"].decode() == language
            assert record["label"].decode() == language
            transcript = record["transcript"].decode()
            assert transcript == (row["text"] if kind == "paired" else "")


def test_transcripts_fit_each_language_character_set():
    for row in _metadata():
        allowed = script.allowed_characters(script.LANGUAGE_BY_CODE[row["language"]])
        assert set(row["text"]) <= allowed, row["id"]


@pytest.mark.parametrize(
    "language,raw,expected",
    [
        (
            "it",
            "Il cervello e' un organo, perche' funziona.",
            "Il cervello è un organo, perché funziona.",
        ),
        ("it", "Ne ho preso un po' in citta'.", None),  # "po'" keeps a loose apostrophe
        ("en", "The  quick\tbrown fox.", "The quick brown fox."),
        ("en", "He was born in 1951.", None),  # digits are read out, not spelled
        ("en", "The NASA budget is huge.", None),  # acronyms are spelled out
        ("en", "Too short.", None),
        ("en", "What the hell, this damn thing broke.", None),  # blocked vulgarity
        ("en", "Sussex is a county in England.", "Sussex is a county in England."),
        ("en", "Dr. Smith is in.", None),  # abbreviation inside
        (
            "de",
            "„Weiß denn der Sperling, wie’s dem Storch zumute sei?“",
            "Weiß denn der Sperling, wie's dem Storch zumute sei?",
        ),
        ("es", "¿Dónde está la biblioteca?", "¿Dónde está la biblioteca?"),
    ],
)
def test_clean_sentence(language, raw, expected):
    spec = script.LANGUAGE_BY_CODE[language]
    assert script.clean_sentence(raw, spec, script.allowed_characters(spec)) == expected


def test_allocation_keeps_held_out_unique_when_sentences_run_short():
    wanted = {
        ("paired", "dev"): 3,
        ("paired", "test"): 3,
        ("paired", "train"): 20,
        ("speech", "train"): 10,
        ("text", "train"): 30,
    }
    pools = script.allocate(26, wanted)
    held_out = set(pools[("paired", "dev")]) | set(pools[("paired", "test")])
    assert len(held_out) == 6
    assert len(pools[("paired", "train")]) == 20  # repeated with fresh voices
    train = (
        set(pools[("paired", "train")])
        | set(pools[("speech", "train")])
        | set(pools[("text", "train")])
    )
    assert not train & held_out
    assert max(train) < 26
