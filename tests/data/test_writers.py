import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_slam import cli
from keras_slam.data import audio, corpora, pipeline, schema, writers
from tests.data import helpers


def read_all(folder, kind="speech"):
    return {
        r["id"].numpy().decode(): r
        for r in pipeline.read_records(pipeline.list_shards(folder), kind)
    }


@pytest.mark.parametrize("gzip", [False, True])
def test_jsonl_round_trip_gives_identical_pcm_and_text(tmp_path, seeded, gzip):
    durations = seeded.uniform(0.3, 1.5, size=10)
    manifest, entries = helpers.make_manifest(str(tmp_path / "corpus"), durations, seeded)
    args = [
        "make-tfrecords",
        "--input",
        manifest,
        "--output",
        str(tmp_path / "out"),
        "--num-shards",
        "3",
        "--no-progress",
    ]
    assert cli.main(args + (["--gzip"] if gzip else [])) == 0

    files = pipeline.list_shards(tmp_path / "out")
    assert len(files) == 3 and all(
        f.endswith(".tfrecord.gz" if gzip else ".tfrecord") for f in files
    )
    records = read_all(tmp_path / "out")
    assert sorted(records) == [e["id"] for e in entries]
    for entry, seconds in zip(entries, durations):
        record = records[entry["id"]]
        path = os.path.join(tmp_path / "corpus", entry["audio"])
        np.testing.assert_array_equal(record["pcm"].numpy(), audio.load_pcm(path))
        for field, key in [
            ("transcript", "text"),
            ("translation", "translation"),
            ("label", "label"),
            ("language", "language"),
        ]:
            assert record[field].numpy().decode() == entry[key]
        assert int(record["num_samples"]) == len(record["pcm"])
        assert abs(float(record["duration"]) - seconds) < 2e-3

    # 16-bit 16 kHz input is stored bit-exactly.
    original, _ = helpers.soundfile.read(
        os.path.join(tmp_path / "corpus", entries[0]["audio"]), dtype="int16"
    )
    np.testing.assert_array_equal(records[entries[0]["id"]]["pcm"].numpy(), original)

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["num_records"] == 10 and summary["num_skipped"] == 0
    assert summary["languages"]["en"]["records"] == 5
    np.testing.assert_allclose(
        summary["hours"], sum(float(r["duration"]) for r in records.values()) / 3600, rtol=1e-5
    )


def test_resampling_matches_an_analytic_sine():
    """Polyphase resampling of a 22.05/44.1/8 kHz sine equals the 16 kHz sine."""
    for rate in (8000, 22050, 44100, 48000):
        pcm = audio.to_int16(audio.resample(helpers.tone(rate, 1.0, 440.0), rate)).astype("float64")
        expected = np.round(helpers.tone(16000, 1.0, 440.0) * 32768)
        assert len(pcm) == len(expected)
        interior = slice(400, -400)  # filter edge effects
        assert np.max(np.abs(pcm[interior] - expected[interior])) < 0.002 * 32768, rate


def test_text_files_and_sharding(tmp_path):
    sentences = [f"sentence {i} é" for i in range(23)]
    helpers.make_text_file(tmp_path / "a.txt", sentences[:10] + [""] + sentences[10:])
    args = [
        "make-tfrecords",
        "--input",
        str(tmp_path / "a.txt"),
        "--output",
        str(tmp_path / "out"),
        "--language",
        "fr",
        "--shard-size",
        "5",
        "--no-progress",
    ]
    assert cli.main(args) == 0
    assert len(pipeline.list_shards(tmp_path / "out")) == 5
    texts = sorted(r["text"].numpy().decode() for r in read_all(tmp_path / "out", "text").values())
    assert texts == sorted(sentences)


def test_resume_keeps_finished_shards_and_rewrites_missing(tmp_path, seeded):
    manifest, _ = helpers.make_manifest(str(tmp_path / "corpus"), [0.4] * 6, seeded)
    items = corpora.read_jsonl(manifest)
    first = writers.write_shards(items, str(tmp_path / "out"), num_shards=3, progress=False)
    names = [tmp_path / "out" / n for n in first["shards"]]
    mtimes = [os.path.getmtime(n) for n in names]
    os.remove(names[1])
    (tmp_path / "out" / (first["shards"][1] + ".incomplete")).write_bytes(b"partial")
    with pytest.raises(ValueError, match=r"missing: \['shard-00001-of-00003.tfrecord'\]"):
        pipeline.list_shards(tmp_path / "out")  # the folder no longer holds what its summary lists
    assert (
        len(pipeline.list_shards(str(tmp_path / "out" / "*.tfrecord*"))) == 2
    )  # a partial shard never looks complete
    second = writers.write_shards(
        items, str(tmp_path / "out"), num_shards=3, num_workers=2, progress=False
    )
    assert second["resumed_shards"] == 2
    assert [os.path.getmtime(n) for n in (names[0], names[2])] == [mtimes[0], mtimes[2]]
    assert {k: v for k, v in second.items() if k != "resumed_shards"} == {
        k: v for k, v in first.items() if k != "resumed_shards"
    }
    assert len(read_all(tmp_path / "out")) == 6


def test_corpus_layouts(tmp_path, seeded):
    def wav(path, seconds=0.3):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        helpers.write_audio(
            path, helpers.tone(16000, seconds), 16000, "FLAC" if path.endswith(".flac") else "WAV"
        )

    # LibriSpeech: speaker/chapter/*.flac + trans.txt
    libri = tmp_path / "libri"
    for speaker, chapter in [("19", "198"), ("26", "495")]:
        lines = []
        for u in range(2):
            utterance = f"{speaker}-{chapter}-{u:04d}"
            wav(str(libri / speaker / chapter / f"{utterance}.flac"))
            lines.append(f"{utterance} HELLO WORLD {u}\n")
        (libri / speaker / chapter / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    # Common Voice + CoVoST 2
    cv = tmp_path / "cv" / "fr"
    rows = [("a.mp3", "bonjour", "hello"), ("b.mp3", "merci", "thanks")]
    for name, _, _ in rows:
        wav(str(cv / "clips" / name.replace(".mp3", ".wav")))
    (cv / "validated.tsv").write_text(
        "client_id\tpath\tsentence\tlocale\n"
        + "".join(f"x\t{n.replace('.mp3', '.wav')}\t{s}\tfr\n" for n, s, _ in rows)
    )
    (cv / "covost_v2.fr_en.tsv").write_text(
        "path\tsentence\ttranslation\tclient_id\n"
        + "".join(f"{n.replace('.mp3', '.wav')}\t{s}\t{t}\tx\n" for n, s, t in rows)
    )
    # FLEURS
    fleurs = tmp_path / "fleurs" / "sw_ke"
    wav(str(fleurs / "audio" / "train" / "1.wav"))
    (fleurs / "train.tsv").write_text("7\t1.wav\tHabari Yako\thabari yako\th a\t4800\tMALE\n")
    # MINDS-14
    minds = tmp_path / "minds"
    wav(str(minds / "audio" / "en-US" / "x.wav"))
    os.makedirs(minds / "text")
    with open(minds / "text" / "en-US.csv", "w", newline="") as file:
        csv.writer(file).writerows(
            [
                ["filepath", "text_asr", "text_translated", "intent"],
                ["audio/en-US/x.wav", "pay my bill", "pay my bill", "pay_bill"],
            ]
        )

    cases = [
        ("librispeech", str(libri), 4, {"19-198-0001": ("HELLO WORLD 1", "", "en", "")}),
        ("common_voice", str(cv / "validated.tsv"), 2, {"a": ("bonjour", "", "fr", "")}),
        ("covost", str(cv / "covost_v2.fr_en.tsv"), 2, {"b": ("merci", "thanks", "fr", "")}),
        (
            "fleurs",
            str(fleurs / "train.tsv"),
            1,
            {"sw_ke/1": ("Habari Yako", "", "sw_ke", "sw_ke")},
        ),
        (
            "minds14",
            str(minds / "text" / "en-US.csv"),
            1,
            {"audio/en-US/x": ("pay my bill", "pay my bill", "en-US", "pay_bill")},
        ),
    ]
    for corpus_format, source, count, expected in cases:
        out = tmp_path / "out" / corpus_format
        assert (
            cli.main(
                [
                    "make-tfrecords",
                    "--format",
                    corpus_format,
                    "--input",
                    source,
                    "--output",
                    str(out),
                    "--no-progress",
                ]
            )
            == 0
        ), corpus_format
        records = read_all(out)
        assert len(records) == count, corpus_format
        for id, (transcript, translation, language, label) in expected.items():
            got = tuple(
                records[id][k].numpy().decode()
                for k in ("transcript", "translation", "language", "label")
            )
            assert got == (transcript, translation, language, label), corpus_format


def test_schema_rejects_non_int16():
    with pytest.raises(ValueError, match="int16"):
        schema.speech_example("x", np.zeros(10, "float32"), "en")
    parsed = tf.io.parse_single_example(
        schema.speech_example("x", np.arange(5, dtype="int16"), "en"), schema.feature_spec("speech")
    )
    assert parsed["transcript"].numpy() == b"" and int(parsed["sample_rate"]) == 16000


def test_items_with_pcm_in_memory_are_written_as_given(tmp_path, seeded):
    pcm = [seeded.integers(-3000, 3000, size=size).astype("int16") for size in (800, 1600, 2400)]
    items = [
        {"id": f"m{index}", "pcm": samples, "language": "en", "transcript": f"words {index}"}
        for index, samples in enumerate(pcm)
    ]
    summary = writers.write_shards(items, str(tmp_path / "out"), num_shards=2, progress=False)
    assert summary["num_records"] == 3 and abs(summary["hours"] * 3600 - 0.3) < 1e-9
    records = read_all(tmp_path / "out")
    for index, samples in enumerate(pcm):
        np.testing.assert_array_equal(records[f"m{index}"]["pcm"].numpy(), samples)
        assert records[f"m{index}"]["transcript"].numpy().decode() == f"words {index}"
    silent = [{"id": "quiet-one", "pcm": np.zeros(100, "int16"), "language": "en"}]
    with pytest.raises(audio.BadInputError, match="quiet-one: silent"):
        writers.write_shards(silent, str(tmp_path / "silent"), progress=False)


def test_rewriting_a_folder_with_another_shard_count_is_refused_or_overwritten(
    tmp_path, seeded, capsys
):
    manifest, _ = helpers.make_manifest(str(tmp_path / "corpus"), [0.4] * 6, seeded)
    out = tmp_path / "out"
    args = ["make-tfrecords", "--input", manifest, "--output", str(out), "--no-progress"]
    assert cli.main(args + ["--num-shards", "3"]) == 0
    assert cli.main(args + ["--num-shards", "2"]) == 1
    assert "shard(s) of another run" in capsys.readouterr().err
    assert cli.main(args + ["--num-shards", "3", "--gzip"]) == 1
    assert len(read_all(out)) == 6  # the first run is intact
    # A summary of another kind in an otherwise empty folder is refused too.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "summary.json").write_text(
        json.dumps({"kind": "text", "shards": ["x.tfrecord"]})
    )
    with pytest.raises(FileExistsError, match="describes another run"):
        writers.write_shards(corpora.read_jsonl(manifest), str(tmp_path / "other"), progress=False)

    assert cli.main(args + ["--num-shards", "2", "--overwrite"]) == 0
    assert len(pipeline.list_shards(out)) == 2 and len(read_all(out)) == 6
    assert sorted(os.listdir(out / ".stats")) == sorted(
        n + ".json" for n in json.loads((out / "summary.json").read_text())["shards"]
    )
    # Rerunning the same command resumes instead of refusing.
    assert cli.main(args + ["--num-shards", "2"]) == 0
    assert json.loads((out / "summary.json").read_text())["resumed_shards"] == 2


def test_list_shards_never_takes_unfinished_shards(tmp_path):
    (tmp_path / "shard-00000-of-00002.tfrecord").write_bytes(b"")
    (tmp_path / "shard-00001-of-00002.tfrecord.incomplete").write_bytes(b"partial")
    (tmp_path / "shard-00001-of-00002.tfrecord.gz.incomplete").write_bytes(b"partial")
    expected = [str(tmp_path / "shard-00000-of-00002.tfrecord")]
    assert pipeline.list_shards(tmp_path) == expected
    assert pipeline.list_shards(str(tmp_path / "*.tfrecord*")) == expected


def test_list_shards_refuses_a_folder_whose_shards_disagree_with_its_summary(tmp_path, seeded):
    """A folder an earlier writer doubled: shards of two runs, summary of one."""
    manifest, _ = helpers.make_manifest(str(tmp_path / "corpus"), [0.4] * 4, seeded)
    summary = writers.write_shards(
        corpora.read_jsonl(manifest), str(tmp_path / "out"), num_shards=2, progress=False
    )
    assert len(pipeline.list_shards(tmp_path / "out")) == 2
    (tmp_path / "out" / "shard-00000-of-00003.tfrecord").write_bytes(
        (tmp_path / "out" / summary["shards"][0]).read_bytes()
    )
    with pytest.raises(
        ValueError,
        match=r"disagree with summary.json \(not listed: \['shard-00000-of-00003.tfrecord'\], missing: \[\]\)",
    ):
        pipeline.list_shards(tmp_path / "out")


def test_text_records_keep_an_optional_label(tmp_path):
    items = [
        {"id": "a", "text": "Block my card.", "language": "en", "label": "freeze"},
        {"id": "b", "text": "Hello there.", "language": "en"},
    ]
    writers.write_shards(items, str(tmp_path), kind=schema.TEXT, progress=False)
    records = read_all(tmp_path, "text")
    assert records["a"]["label"].numpy() == b"freeze" and records["b"]["label"].numpy() == b""
