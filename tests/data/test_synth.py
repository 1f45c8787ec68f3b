"""espeak-ng synthesis from the pip wheel (keras_slam.data.synth) and the
synthetic corpora built with it (keras_slam.data.synth_corpus)."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from keras_slam import cli
from keras_slam.data import pipeline, schema, synth, synth_corpus, tokenizers
from keras_slam.layers.log_mel import LogMelSpectrogram

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = {
    "en": [
        "There is nothing more silly than a silly laugh.",
        "Arrange them to your will, each foot in place.",
        "The sun is up.",
    ],
    "it": ["Chi dorme non piglia pesci.", "Il tempo è denaro."],
}
# Klatt filters and breath noise (f variants) are where espeak-ng keeps state.
STYLES = (
    synth.Style("en-gb-x-rp", "klatt3", rate=170, pitch=35, word_gap=2),
    synth.Style("en-us", "f5", rate=200, pitch=60, word_gap=0),
)


@pytest.fixture(scope="module")
def synthesiser():
    return synth.get_synthesiser()


def test_audio_depends_only_on_the_call_not_on_what_came_before(synthesiser):
    text = SENTENCES["en"][0]
    first = [synthesiser.synthesise(text, style) for style in STYLES]
    synthesiser.synthesise(SENTENCES["it"][0], synth.Style("it", "f2", 210, 65, 0))
    for style, pcm in zip(STYLES, first):
        assert pcm.dtype == np.int16 and pcm.ndim == 1 and len(pcm) > schema.SAMPLE_RATE
        np.testing.assert_array_equal(pcm, synthesiser.synthesise(text, style))
    # ... and equals what a fresh process speaks first, seconds later.
    code = (
        "import hashlib; from keras_slam.data import synth; "
        f"print(hashlib.sha256(synth.get_synthesiser().synthesise({text!r}, synth.{STYLES[1]!r}).tobytes()).hexdigest())"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert fresh.stdout.split()[-1] == hashlib.sha256(first[1].tobytes()).hexdigest()


def test_output_is_trimmed_and_normalised(synthesiser):
    pcm = synthesiser.synthesise(SENTENCES["en"][2], synth.Style("en-us")) / 32768.0
    assert (
        abs(np.abs(pcm).max() - synth.PEAK_LEVEL) < 0.01 * synth.PEAK_LEVEL
    )  # resampling may overshoot slightly
    edge = round(synth.TRIM_MARGIN_S * schema.SAMPLE_RATE)
    assert (
        np.abs(pcm[:edge]).max() < 0.5 * synth.PEAK_LEVEL
        and np.abs(pcm[-edge:]).max() < 0.5 * synth.PEAK_LEVEL
    )


def test_every_style_parameter_changes_the_audio(synthesiser):
    text = SENTENCES["en"][1]
    base = synth.Style("en-us", "m3", 175, 50, 0)
    reference = synthesiser.synthesise(text, base)
    for change in (
        {"voice": "en-gb"},
        {"variant": "f4"},
        {"rate": 210},
        {"pitch": 70},
        {"word_gap": 3},
    ):
        changed = synthesiser.synthesise(text, dataclasses.replace(base, **change))
        assert len(changed) != len(reference) or not np.array_equal(changed, reference), change
    assert len(synthesiser.synthesise(text, dataclasses.replace(base, rate=220))) < len(reference)
    assert len(synthesiser.synthesise(text, dataclasses.replace(base, word_gap=3))) > len(reference)


def test_styles_are_drawn_within_the_stated_ranges():
    rng = np.random.default_rng(0)
    voices = ("en-us", "en-gb")
    styles = [synth.draw_style(rng, voices) for _ in range(3000)]
    for field, (low, high) in (
        ("rate", synth.RATE_RANGE),
        ("pitch", synth.PITCH_RANGE),
        ("word_gap", synth.WORD_GAP_RANGE),
    ):
        values = {getattr(style, field) for style in styles}
        assert min(values) == low and max(values) == high and len(values) == high - low + 1, field
    assert {style.variant for style in styles} == set(synth.VARIANTS)
    assert {style.voice for style in styles} == set(voices)
    again = [synth.draw_style(np.random.default_rng(0), voices) for _ in range(1)]
    assert again[0] == styles[0]


def test_synthesis_is_many_times_faster_than_real_time(synthesiser):
    # A ratio of audio to this process's CPU time, not wall-clock: the machine may be busy.
    rng = np.random.default_rng(1)
    requests = [
        (text, synth.draw_style(rng, synthesiser.accents(language)))
        for language, texts in SENTENCES.items()
        for text in texts
    ] * 3
    start = time.process_time()
    seconds = sum(len(pcm) for pcm in synth.synthesise_many(requests)) / schema.SAMPLE_RATE
    ratio = seconds / (time.process_time() - start)
    assert ratio >= 20, f"{ratio:.1f}x real time"


def test_bad_requests_get_clear_errors(synthesiser):
    with pytest.raises(ValueError, match=r"unknown espeak-ng voice 'xx-yy'; available: .*en-gb.*"):
        synthesiser.synthesise("Hello.", synth.Style("xx-yy"))
    with pytest.raises(ValueError, match=r"no voice for language 'xx'; available: .*de, .*"):
        synthesiser.accents("xx")
    with pytest.raises(ValueError, match=r"unknown espeak-ng variant 'm99'; available: .*klatt"):
        synthesiser.synthesise("Hello.", synth.Style("en-us", "m99"))
    for empty in ("", "   "):
        with pytest.raises(ValueError, match="empty text"):
            synthesiser.synthesise(empty, synth.Style("en-us"))
    with pytest.raises(ValueError, match=r"produced no sound for '\.\.\.'"):
        synthesiser.synthesise("...", synth.Style("en-us"))
    with pytest.raises(RuntimeError, match="one global state per process"):
        synth.Synthesiser()
    with pytest.raises(ValueError, match=r"it: empty text at sentence index 1"):
        synth_corpus.build_synth_corpus("unused", {"it": ["Ciao a tutti.", " "]}, 0.01)
    with pytest.raises(ValueError, match=r"no voice for language 'qq'"):
        synth_corpus.build_synth_corpus("unused", {"qq": ["Hello there."]}, 0.01)
    with pytest.raises(ValueError, match=r"sample is not empty and was not made by synth-corpus"):
        synth_corpus.build_synth_corpus(synth_corpus.SAMPLE_CORPUS, {"it": ["Ciao a tutti."]}, 0.01)
    with pytest.raises(
        ValueError, match=r"no bundled text for \['qq'\] .*available: de, en, es, it"
    ):
        synth_corpus.bundled_sentences(languages=["qq"])


def _shard_bytes(folder):
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(Path(folder).rglob("*.tfrecord.gz"))
    }


def test_corpus_is_deterministic_whatever_the_worker_count(tmp_path):
    hours = 12 / 3600
    first = synth_corpus.build_synth_corpus(
        tmp_path / "a", SENTENCES, hours, seed=5, progress=False
    )
    synth_corpus.build_synth_corpus(
        tmp_path / "b", SENTENCES, hours, seed=5, num_workers=2, progress=False
    )
    synth_corpus.build_synth_corpus(tmp_path / "c", SENTENCES, hours, seed=6, progress=False)
    shards = _shard_bytes(tmp_path / "a")
    assert set(shards) == {
        "paired/train/en/en-00000-of-00001.tfrecord.gz",
        "paired/train/it/it-00000-of-00001.tfrecord.gz",
    }
    assert shards == _shard_bytes(tmp_path / "b")
    assert (tmp_path / "a" / "metadata.jsonl").read_bytes() == (
        tmp_path / "b" / "metadata.jsonl"
    ).read_bytes()
    other = _shard_bytes(tmp_path / "c")
    assert all(other[name] != shards[name] for name in shards)
    for language, entry in first["languages"].items():
        assert hours <= entry["hours"] < hours + 10 / 3600, (
            language
        )  # done once the hours are reached


def test_corpus_reads_through_the_pipeline_with_its_transcripts(tmp_path):
    summary = synth_corpus.build_synth_corpus(
        tmp_path, SENTENCES, 15 / 3600, seed=1, progress=False
    )
    rows = [
        json.loads(line)
        for line in (tmp_path / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert (
        len(rows)
        == summary["utterances"]
        == sum(entry["records"] for entry in summary["languages"].values())
    )
    files = pipeline.list_shards(f"{tmp_path}/paired/train/*/*.tfrecord.gz")
    records = {r["id"].decode(): r for r in pipeline.read_records(files).as_numpy_iterator()}
    for row in rows:
        record = records[row["id"]]
        assert record["transcript"].decode() == row["text"] in SENTENCES[row["language"]]
        assert record["language"].decode() == record["label"].decode() == row["language"]
        assert (
            abs(float(record["duration"]) - row["duration"]) < 1e-3
            and record["sample_rate"] == schema.SAMPLE_RATE
        )
        assert (
            row["voice"] in summary["languages"][row["language"]]["voices"]
            and row["variant"] in synth.VARIANTS
        )
    vocabulary = tokenizers.build_character_vocabulary(row["text"] for row in rows)
    tokenizer = tokenizers.CharacterTokenizer(vocabulary=vocabulary)
    dataset = pipeline.speech_dataset(
        files,
        LogMelSpectrogram(),
        pipeline.Buckets((10.0,), 4),
        tokenizer=tokenizer,
        max_token_length=512,
        paired=True,
        languages=sorted(SENTENCES),
    )
    batches = list(dataset.as_numpy_iterator())
    assert sum(int(batch["speech_padding_mask"].any(axis=1).sum()) for batch in batches) == len(
        rows
    )
    assert all((batch["token_ids"] > 0).any() for batch in batches)


def test_cached_corpus_is_reused_until_its_parameters_change(tmp_path, capsys):
    args = [
        "synth-corpus",
        "--output",
        str(tmp_path),
        "--hours",
        str(5 / 3600),
        "--languages",
        "it",
        "--seed",
        "3",
        "--no-progress",
    ]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["parameters"]["seed"] == 3 and list(summary["languages"]) == ["it"]
    shard = next((tmp_path / "paired" / "train" / "it").glob("*.tfrecord.gz"))
    built = shard.stat().st_mtime_ns
    corpus = synth_corpus.ensure_synth_corpus(tmp_path, 5 / 3600, ["it"], seed=3, progress=False)
    assert corpus == str(tmp_path) and shard.stat().st_mtime_ns == built
    synth_corpus.ensure_synth_corpus(tmp_path, 5 / 3600, ["it"], seed=4, progress=False)
    assert shard.stat().st_mtime_ns != built
    assert json.loads((tmp_path / "summary.json").read_text())["parameters"]["seed"] == 4
