"""Bad inputs: writers reject or skip them; readers name the shard and record."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_slam import cli
from keras_slam.data import audio, pipeline, schema, writers
from tests.data import helpers


def bad_corpus(folder, rng):
    """One good file and one of each bad kind, with a JSONL manifest."""
    os.makedirs(folder)
    good = helpers.write_audio(os.path.join(folder, "good.wav"), helpers.tone(16000, 0.5), 16000)
    with open(os.path.join(folder, "unreadable.wav"), "wb") as file:
        file.write(b"RIFF not really a wave file" * 10)
    helpers.write_audio(os.path.join(folder, "empty.wav"), np.zeros(0), 16000)
    nan = helpers.tone(16000, 0.5)
    nan[100] = np.nan
    helpers.write_audio(os.path.join(folder, "non_finite.wav"), nan, 16000, subtype="FLOAT")
    helpers.write_audio(os.path.join(folder, "silent.wav"), np.zeros(8000), 16000)
    helpers.write_audio(os.path.join(folder, "stereo.wav"), np.stack([helpers.tone(16000, 0.5)] * 2, 1), 16000)
    entries = [
        ("good.wav", "hello world", None),
        ("unreadable.wav", "hello", "unreadable"),
        ("empty.wav", "hello", "empty"),
        ("non_finite.wav", "hello", "non_finite"),
        ("silent.wav", "hello", "silent"),
        ("stereo.wav", "hello", "wrong_channels"),
        ("good.wav", "héllo wörld", "bad_characters"),
        ("missing.wav", "hello", "unreadable"),
    ]
    with open(os.path.join(folder, "charset.txt"), "w") as file:
        file.write("abcdefghijklmnopqrstuvwxyz\n")
    manifest = os.path.join(folder, "manifest.jsonl")
    with open(manifest, "w") as file:
        file.writelines(json.dumps({"audio": path, "text": text, "language": "en", "id": f"u{index}"}) + "\n" for index, (path, text, _) in enumerate(entries))
    return manifest, entries, good


def test_each_bad_input_is_an_error_or_a_reported_skip(tmp_path, seeded, capsys):
    manifest, entries, _ = bad_corpus(str(tmp_path / "corpus"), seeded)
    charset = writers.load_charset(tmp_path / "corpus" / "charset.txt")
    for index, (path, text, reason) in enumerate(entries):
        item = {"id": f"u{index}", "audio": str(tmp_path / "corpus" / path), "transcript": text, "language": "en"}
        if reason is None:
            writers.encode_item(item, "speech", charset=charset)
            continue
        with pytest.raises(audio.BadInputError) as error:
            writers.encode_item(item, "speech", charset=charset)
        assert error.value.reason == reason
        assert path in str(error.value)

    base = ["make-tfrecords", "--input", manifest, "--charset", str(tmp_path / "corpus" / "charset.txt"), "--no-progress"]
    assert cli.main(base + ["--output", str(tmp_path / "strict")]) == 1
    assert "unreadable.wav: unreadable" in capsys.readouterr().err
    assert cli.main(base + ["--output", str(tmp_path / "skip"), "--skip-bad", "--workers", "2"]) == 0
    summary = json.loads((tmp_path / "skip" / "summary.json").read_text())
    assert summary["num_records"] == 1
    assert sorted(s["reason"] for s in summary["skipped"]) == sorted(r for _, _, r in entries if r)
    assert all(s["source"].endswith(path) for s, (path, _, r) in zip(summary["skipped"], [e for e in entries if e[2]]))


def test_downmix_averages_channels(tmp_path):
    left, right = helpers.tone(16000, 0.5, 300.0), helpers.tone(16000, 0.5, 500.0)
    path = helpers.write_audio(str(tmp_path / "s.wav"), np.stack([left, right], 1), 16000, subtype="FLOAT")
    expected = audio.to_int16((left.astype("float32").astype("float64") + right.astype("float32")) / 2)
    np.testing.assert_array_equal(audio.load_pcm(path, downmix=True), expected)


def write_records(path, records):
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type=schema.compression_type(path))) as writer:
        for record in records:
            writer.write(record)


def good_records(count):
    return [schema.speech_example(f"r{i}", np.full(1600 + i, i + 1, "int16"), "en") for i in range(count)]


def wrong_type_record():
    example = tf.train.Example.FromString(good_records(1)[0])
    example.features.feature["num_samples"].Clear()
    example.features.feature["num_samples"].float_list.value.append(3.0)
    return example.SerializeToString()


def missing_key_record():
    example = tf.train.Example.FromString(good_records(1)[0])
    del example.features.feature["pcm"]
    return example.SerializeToString()


def bad_length_record():
    example = tf.train.Example.FromString(good_records(1)[0])
    example.features.feature["num_samples"].int64_list.value[0] = 99
    return example.SerializeToString()


@pytest.mark.parametrize(
    "case, corrupt_index, message",
    [
        ("wrong_type", 2, "num_samples"),
        ("missing_key", 3, "pcm"),
        ("bad_length", 1, "num_samples"),
        ("truncated", 4, "truncated"),
        ("truncated_gz", 4, "truncated"),
    ],
)
def test_corrupt_shards_name_shard_and_record(tmp_path, case, corrupt_index, message):
    records = good_records(5)
    suffix = ".tfrecord.gz" if case == "truncated_gz" else ".tfrecord"
    bad = str(tmp_path / f"bad-00000{suffix}")
    if case.startswith("truncated"):
        write_records(bad, records)
        with open(bad, "rb+") as file:
            file.truncate(os.path.getsize(bad) - (30 if suffix.endswith("gz") else 1000))
    else:
        records[corrupt_index] = {"wrong_type": wrong_type_record, "missing_key": missing_key_record, "bad_length": bad_length_record}[case]()
        write_records(bad, records)
    fine = str(tmp_path / f"fine-00000{suffix}")
    write_records(fine, good_records(3))
    files = [bad, fine]

    with pytest.raises(pipeline.CorruptShardError, match=f"bad-00000{suffix}: record {corrupt_index}: .*{message}"):
        pipeline.read_records(files)

    dataset = pipeline.read_records(files, skip_corrupt=True)
    ids = sorted(r["id"].numpy().decode() for r in dataset)
    assert dataset.shard_report.num_corrupt == 1
    good_in_bad = [f"r{i}" for i in range(5) if i != corrupt_index] if not case.startswith("truncated") else [f"r{i}" for i in range(corrupt_index)]
    assert ids == sorted(good_in_bad + ["r0", "r1", "r2"])
