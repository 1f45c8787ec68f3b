"""Spoken language-ID and intent corpora (data.spoken_classification)."""

import json
from pathlib import Path

import pytest

from keras_slam import cli
from keras_slam.data import intents, pipeline, schema, spoken_classification, synth, tokenizers

pytest.importorskip("espeakng_loader")


def shard_bytes(folder):
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(Path(folder).rglob("*.tfrecord.gz"))
    }


def metadata(folder):
    return [
        json.loads(line)
        for line in (Path(folder) / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    ]


def tiny_intent_corpus(folder, seed=0):
    return spoken_classification.ensure_intent_corpus(
        folder, ("en", "fr"), ("balance", "freeze"), max_per_template=1, seed=seed, progress=False
    )


def test_committed_text_gives_nine_languages_with_unseen_test_sentences():
    languages = spoken_classification.LID_LANGUAGES
    assert len(languages) >= 8
    rows = spoken_classification.language_id_utterances()  # the default sizes are available
    for language in languages:
        train = {
            row["text"] for row in rows if row["language"] == language and row["split"] == "train"
        }
        test = {
            row["text"] for row in rows if row["language"] == language and row["split"] == "test"
        }
        assert len(train) == 120 and len(test) == 30 and not train & test, language
        assert all(len(text.split()) <= spoken_classification.LID_MAX_WORDS for text in train)
    assert {row["label"] for row in rows} == set(languages)
    with pytest.raises(ValueError, match=r"no language-ID text for \['xx'\]"):
        spoken_classification.language_id_utterances(("en", "xx"))
    with pytest.raises(ValueError, match=r"pl/test: \d+ sentences of <= 12 words, 100000 asked"):
        spoken_classification.language_id_utterances(("pl",), 1, 100000)


def test_intent_corpus_is_deterministic_by_seed_and_holds_out_voice_variants(tmp_path):
    tiny_intent_corpus(tmp_path / "a", seed=5)
    tiny_intent_corpus(tmp_path / "b", seed=5)
    tiny_intent_corpus(tmp_path / "c", seed=6)
    first = shard_bytes(tmp_path / "a")
    assert "speech/test/fr/fr-00000-of-00001.tfrecord.gz" in first
    assert "text/train/en/en-00000-of-00001.tfrecord.gz" in first
    assert first == shard_bytes(tmp_path / "b")
    other = shard_bytes(tmp_path / "c")
    assert all(other[name] != first[name] for name in first if name.startswith("speech/"))
    rows = metadata(tmp_path / "a")
    assert len(rows) == 2 * 2 * intents.TEMPLATES_PER_INTENT
    for row in rows:
        held_out = row["variant"] in spoken_classification.TEST_VARIANTS
        assert held_out == (row["split"] == "test"), row
        assert row["voice"] in synth.get_synthesiser().accents(row["language"])


def test_speech_and_text_records_carry_the_label_and_the_test_split_is_unseen(tmp_path):
    corpus = tiny_intent_corpus(tmp_path)
    summary = spoken_classification.read_summary(corpus)
    assert summary["labels"] == ["balance", "freeze"] and summary["languages"] == ["en", "fr"]
    texts = {}
    for split in spoken_classification.SPLITS:
        speech = pipeline.read_records(spoken_classification.shard_files(corpus, "speech", split))
        written = pipeline.read_records(
            spoken_classification.shard_files(corpus, "text", split), kind=schema.TEXT
        )
        speech = {r["id"].decode(): r for r in speech.as_numpy_iterator()}
        written = {r["id"].decode(): r for r in written.as_numpy_iterator()}
        assert speech.keys() == written.keys()
        for id, record in speech.items():
            assert record["label"] == written[id]["label"] == id.split("-")[1].encode()
            assert record["transcript"] == written[id]["text"]
        texts[split] = {record["text"] for record in written.values()}
    assert texts["train"] and texts["test"] and not texts["train"] & texts["test"]
    # The pipeline turns the written label into its index among the class names.
    tokenizer = tokenizers.CharacterTokenizer(
        tokenizers.build_character_vocabulary(t.decode() for t in texts["train"]),
        sequence_length=None,
    )
    batches = pipeline.text_dataset(
        spoken_classification.shard_files(corpus, "text", "train"),
        tokenizer,
        pipeline.Buckets((128,), 32),
        labels=summary["labels"],
    )
    (batch,) = list(batches.as_numpy_iterator())
    real = batch["token_padding_mask"].any(axis=1)
    assert sorted(batch["label"][real]) == [0] * 6 + [1] * 6 and (batch["label"][~real] == -1).all()


def test_language_id_corpus_labels_each_language(tmp_path):
    corpus = spoken_classification.ensure_language_id_corpus(
        tmp_path, ("en", "pl"), train_per_language=2, test_per_language=1, progress=False
    )
    files = [
        *spoken_classification.shard_files(corpus, "speech", "train"),
        *spoken_classification.shard_files(corpus, "speech", "test"),
    ]
    records = pipeline.read_records(files)
    labels = sorted(r["label"].decode() for r in records.as_numpy_iterator())
    assert labels == ["en"] * 3 + ["pl"] * 3
    assert not (tmp_path / "text").exists()


def test_cli_builds_once_then_reuses_and_refuses_unknown_languages(tmp_path, capsys):
    args = ["intent-corpus", "--output", str(tmp_path), "--languages", "it", "--no-progress"]
    args += ["--intents", "abroad", "--max-per-template", "1"]
    assert cli.main(args) == 0
    assert json.loads(capsys.readouterr().out)["labels"] == ["abroad"]
    shard = next((tmp_path / "speech" / "train" / "it").glob("*.tfrecord.gz"))
    built = shard.stat().st_mtime_ns
    assert cli.main(args) == 0 and shard.stat().st_mtime_ns == built
    assert cli.main(["lid-corpus", "--output", str(tmp_path / "x"), "--languages", "tlh"]) == 1
    assert "no language-ID text for ['tlh']" in capsys.readouterr().err
