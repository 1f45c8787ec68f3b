"""Speech-translation corpora spoken from parallel text (data.parallel_speech)."""

import functools
import json
import lzma

import pytest

from keras_slam import cli
from keras_slam.data import gettext_pairs, intents, parallel_speech, pipeline, synth

PAIRS = {
    "train": [
        ("Please wait a moment.", "Bitte einen Moment warten."),
        ("The file was saved.", "Die Datei wurde gespeichert."),
        ("Try it again later.", "Versuche es später erneut."),
    ],
    "dev": [
        (
            "Connection to the server was lost.",
            "Die Verbindung zum Server ging verloren.",
        )
    ],
}


def write_text(folder, pairs=PAIRS, language="de"):
    """A parallel-text folder as `gettext_pairs.write_parallel_text` makes it."""
    (folder / language).mkdir(parents=True)
    for split in gettext_pairs.SPLITS:
        rows = [
            {
                "id": gettext_pairs.pair_id(language, english),
                "source_language": "en",
                "target_language": language,
                "en": english,
                language: other,
                "split": split,
            }
            for english, other in pairs.get(split, [])
        ]
        with lzma.open(folder / language / f"{split}.jsonl.xz", "wt", encoding="utf-8") as file:
            file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return folder


def test_both_directions_speak_one_side_and_carry_the_other_as_translation(tmp_path):
    text = write_text(tmp_path / "text")
    corpus = parallel_speech.ensure_parallel_speech(
        tmp_path / "corpus",
        (("de", "en"), ("en", "de")),
        ("train", "dev"),
        max_pairs=2,
        seed=1,
        text_dir=text,
        progress=False,
    )
    summary = json.loads((tmp_path / "corpus" / "summary.json").read_text())
    assert corpus == str(tmp_path / "corpus") and summary["utterances"] == 6
    assert {
        name: {split: entry["records"] for split, entry in splits.items()}
        for name, splits in summary["directions"].items()
    } == {
        "de-en": {"train": 2, "dev": 1},
        "en-de": {"train": 2, "dev": 1},
    }
    rows = {
        row["id"]: row
        for row in map(
            json.loads,
            (tmp_path / "corpus" / "metadata.jsonl").read_text(encoding="utf-8").splitlines(),
        )
    }
    expected = {
        english: german for split in ("train", "dev") for english, german in PAIRS[split][:2]
    }
    for name, spoken, translated in (("de-en", "de", "en"), ("en-de", "en", "de")):
        for split in ("train", "dev"):
            records = list(
                pipeline.read_records(
                    pipeline.list_shards(str(tmp_path / "corpus" / name / split))
                ).as_numpy_iterator()
            )
            assert len(records) == summary["directions"][name][split]["records"]
            for record in records:
                transcript, translation = (
                    record["transcript"].decode(),
                    record["translation"].decode(),
                )
                english, german = (
                    (translation, transcript) if spoken == "de" else (transcript, translation)
                )
                assert expected[english] == german
                assert (
                    record["language"].decode(),
                    record["target_language"].decode(),
                ) == (spoken, translated)
                row = rows[record["id"].decode()]
                assert (
                    row["text"] == transcript
                    and row["split"] == split
                    and row["voice"] in synth.get_synthesiser().accents(spoken)
                )
                assert (
                    abs(float(record["duration"]) - row["duration"]) < 1e-3
                    and record["num_samples"] > 8000
                )


def test_cached_corpus_is_reused_until_its_parameters_change(tmp_path, capsys):
    text = write_text(tmp_path / "text")
    corpus = tmp_path / "corpus"
    args = [
        "parallel-speech",
        "--output",
        str(corpus),
        "--directions",
        "de-en",
        "--splits",
        "dev",
        "--text",
        str(text),
        "--seed",
        "3",
        "--no-progress",
    ]
    assert cli.main(args) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["seed"] == 3
    shard = next((corpus / "de-en" / "dev").glob("*.tfrecord.gz"))
    built = shard.stat().st_mtime_ns
    assert parallel_speech.ensure_parallel_speech(
        corpus, (("de", "en"),), ("dev",), seed=3, text_dir=text, progress=False
    ) == str(corpus)
    assert shard.stat().st_mtime_ns == built
    parallel_speech.ensure_parallel_speech(
        corpus, (("de", "en"),), ("dev",), seed=4, text_dir=text, progress=False
    )
    assert shard.stat().st_mtime_ns != built


def test_bad_requests_get_clear_errors(tmp_path, capsys):
    text = write_text(tmp_path / "text")
    with pytest.raises(
        ValueError,
        match=r"direction 'de-fr': give spoken-translated languages, one of them 'en'",
    ):
        parallel_speech.ensure_parallel_speech(tmp_path / "a", (("de", "fr"),), text_dir=text)
    with pytest.raises(FileNotFoundError, match=r"no parallel text .*it/train\.jsonl\.xz"):
        parallel_speech.ensure_parallel_speech(tmp_path / "a", (("it", "en"),), text_dir=text)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"mine is not empty and was not made by parallel-speech"):
        parallel_speech.ensure_parallel_speech(
            tmp_path / "mine", (("de", "en"),), ("dev",), text_dir=text, progress=False
        )
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert (
        cli.main(
            [
                "parallel-speech",
                "--output",
                str(tmp_path / "b"),
                "--directions",
                "deen",
                "--text",
                str(text),
            ]
        )
        == 1
    )
    assert "direction 'deen'" in capsys.readouterr().err


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    text = write_text(tmp_path / "text")
    for name, seed, workers in (("a", 5, 1), ("b", 5, 2), ("c", 6, 1)):
        parallel_speech.ensure_parallel_speech(
            tmp_path / name,
            (("de", "en"),),
            ("train",),
            seed=seed,
            text_dir=text,
            num_workers=workers,
            progress=False,
        )

    def shard_bytes(name):
        return [path.read_bytes() for path in sorted((tmp_path / name).rglob("*.gz"))]

    assert shard_bytes("a") == shard_bytes("b") and shard_bytes("a") != shard_bytes("c")
    metadata = (tmp_path / "a" / "metadata.jsonl").read_bytes()
    assert metadata == (tmp_path / "b" / "metadata.jsonl").read_bytes()


def test_pairs_from_another_source_are_spoken_with_their_english_as_translation(tmp_path):
    read = functools.partial(intents.translation_pairs, held_out="slots")
    corpus = parallel_speech.ensure_parallel_speech(
        tmp_path / "corpus", (("it", "en"),), ("test",), 2, progress=False, read_pairs=read
    )
    records = list(
        pipeline.read_records(pipeline.list_shards(f"{corpus}/it-en/test")).as_numpy_iterator()
    )
    expected = read("it", "test")[:2]
    assert [(r["transcript"].decode(), r["translation"].decode()) for r in records] == [
        (pair["it"], pair["en"]) for pair in expected
    ]
    assert expected[0]["en"] == "I am travelling to Spain today, will my card work there?"
    assert {r["language"].decode() + "-" + r["target_language"].decode() for r in records} == {
        "it-en"
    }
