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
    helpers.write_audio(
        os.path.join(folder, "stereo.wav"), np.stack([helpers.tone(16000, 0.5)] * 2, 1), 16000
    )
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
        file.writelines(
            json.dumps({"audio": path, "text": text, "language": "en", "id": f"u{index}"}) + "\n"
            for index, (path, text, _) in enumerate(entries)
        )
    return manifest, entries, good


def test_each_bad_input_is_an_error_or_a_reported_skip(tmp_path, seeded, capsys):
    manifest, entries, _ = bad_corpus(str(tmp_path / "corpus"), seeded)
    charset = writers.load_charset(tmp_path / "corpus" / "charset.txt")
    for index, (path, text, reason) in enumerate(entries):
        item = {
            "id": f"u{index}",
            "audio": str(tmp_path / "corpus" / path),
            "transcript": text,
            "language": "en",
        }
        if reason is None:
            writers.encode_item(item, "speech", charset=charset)
            continue
        with pytest.raises(audio.BadInputError) as error:
            writers.encode_item(item, "speech", charset=charset)
        assert error.value.reason == reason
        assert path in str(error.value)

    base = [
        "make-tfrecords",
        "--input",
        manifest,
        "--charset",
        str(tmp_path / "corpus" / "charset.txt"),
        "--no-progress",
    ]
    assert cli.main(base + ["--output", str(tmp_path / "strict")]) == 1
    assert "unreadable.wav: unreadable" in capsys.readouterr().err
    assert (
        cli.main(base + ["--output", str(tmp_path / "skip"), "--skip-bad", "--workers", "2"]) == 0
    )
    summary = json.loads((tmp_path / "skip" / "summary.json").read_text())
    assert summary["num_records"] == 1
    assert sorted(s["reason"] for s in summary["skipped"]) == sorted(r for _, _, r in entries if r)
    assert all(
        s["source"].endswith(path)
        for s, (path, _, r) in zip(summary["skipped"], [e for e in entries if e[2]])
    )


def test_downmix_averages_channels(tmp_path):
    left, right = helpers.tone(16000, 0.5, 300.0), helpers.tone(16000, 0.5, 500.0)
    path = helpers.write_audio(
        str(tmp_path / "s.wav"), np.stack([left, right], 1), 16000, subtype="FLOAT"
    )
    expected = audio.to_int16(
        (left.astype("float32").astype("float64") + right.astype("float32")) / 2
    )
    np.testing.assert_array_equal(audio.load_pcm(path, downmix=True), expected)


def write_records(path, records):
    with tf.io.TFRecordWriter(
        path, tf.io.TFRecordOptions(compression_type=schema.compression_type(path))
    ) as writer:
        for record in records:
            writer.write(record)


def good_records(count):
    return [
        schema.speech_example(f"r{i}", np.full(1600 + i, i + 1, "int16"), "en")
        for i in range(count)
    ]


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
        records[corrupt_index] = {
            "wrong_type": wrong_type_record,
            "missing_key": missing_key_record,
            "bad_length": bad_length_record,
        }[case]()
        write_records(bad, records)
    fine = str(tmp_path / f"fine-00000{suffix}")
    write_records(fine, good_records(3))
    files = [bad, fine]

    with pytest.raises(
        pipeline.CorruptShardError, match=f"bad-00000{suffix}: record {corrupt_index}: .*{message}"
    ):
        pipeline.read_records(files)

    dataset = pipeline.read_records(files, skip_corrupt=True)
    ids = sorted(r["id"].numpy().decode() for r in dataset)
    assert dataset.shard_report.num_corrupt == 1
    good_in_bad = (
        [f"r{i}" for i in range(5) if i != corrupt_index]
        if not case.startswith("truncated")
        else [f"r{i}" for i in range(corrupt_index)]
    )
    assert ids == sorted(good_in_bad + ["r0", "r1", "r2"])


def read_bytes(path):
    with open(path, "rb") as file:
        return file.read()


def frame_size(record):
    return 8 + 4 + len(record) + 4  # length, its CRC, data, data CRC


def damaged_shard(path, case, records):
    """Writes `records` to `path` and damages it; returns (ids still readable, records lost, bytes lost, message)."""
    write_records(path, records)
    data = bytearray(read_bytes(path))
    ids = [f"r{i}" for i in range(len(records))]
    start_of_3 = sum(frame_size(r) for r in records[:3])
    if case == "flipped_data_byte":  # record 3's data: the rest of the shard is intact
        data[start_of_3 + 12 + 5] ^= 0xFF
        expected = ids[:3] + ids[4:], 1, frame_size(records[3]), "corrupted record at"
    elif case == "flipped_length_byte":  # record 3's header: resync on record 4's
        data[start_of_3 + 2] ^= 0x01
        expected = ids[:3] + ids[4:], 1, frame_size(records[3]), "corrupted record at"
    elif case == "truncated":
        data = data[: start_of_3 + 100]
        expected = ids[:3], 1, 100, "truncated record at"
    elif case == "gzip_named_plain":
        gzip_path = path + ".gz"
        write_records(gzip_path, records)
        data = bytearray(read_bytes(gzip_path))
        os.remove(gzip_path)
        expected = [], len(records), len(data), "rename it"
    with open(path, "wb") as file:
        file.write(data)
    return expected


@pytest.mark.parametrize(
    "case", ["flipped_data_byte", "flipped_length_byte", "truncated", "gzip_named_plain"]
)
def test_damaged_plain_shards_report_what_is_lost_and_recover_the_rest(tmp_path, case, caplog):
    records = good_records(10)
    bad = str(tmp_path / "bad-00000.tfrecord")
    expected_ids, records_lost, bytes_lost, message = damaged_shard(bad, case, records)
    fine = str(tmp_path / "fine-00000.tfrecord")
    write_records(fine, good_records(2))

    with pytest.raises(
        pipeline.CorruptShardError,
        match=f"bad-00000.tfrecord: record {0 if case == 'gzip_named_plain' else 3}: .*{message}",
    ):
        pipeline.read_records([bad, fine])
    dataset = pipeline.read_records([bad, fine], skip_corrupt=True)
    ids = [r["id"].numpy().decode() for r in dataset]
    assert ids == ["r0", "r1"] + expected_ids  # intact shards first, then what was recovered
    pcm = {r["id"].numpy().decode(): r["pcm"].numpy() for r in dataset}
    for id in expected_ids:
        np.testing.assert_array_equal(
            pcm[id], np.full(1600 + int(id[1:]), int(id[1:]) + 1, "int16")
        )
    report = dataset.shard_report
    assert (report.num_corrupt, report.bytes_lost) == (records_lost, bytes_lost)
    assert (
        f"skipping {records_lost} corrupt or lost record(s), {bytes_lost} unreadable byte(s)"
        in caplog.text
    )


@pytest.mark.parametrize("compression_level", [0, 6])
def test_damaged_gzip_shard_counts_the_bytes_after_the_damage(tmp_path, compression_level):
    """A flipped byte in GZIP data. Level 0 stores the bytes as they are, so
    only the record holding it is lost; level 6 turns constant audio into
    back-references, so everything after it decodes to garbage and is lost."""
    pcm = [np.full(1600 + i, i + 1, "int16") for i in range(10)]
    path = str(tmp_path / "bad-00000.tfrecord.gz")
    options = tf.io.TFRecordOptions(compression_type="GZIP", compression_level=compression_level)
    with tf.io.TFRecordWriter(path, options) as writer:
        for i, samples in enumerate(pcm):
            writer.write(schema.speech_example(f"r{i}", samples, "en"))
    data = bytearray(read_bytes(path))
    damage_at = len(data) // 2
    data[damage_at] ^= 0xFF
    with open(path, "wb") as file:
        file.write(data)

    dataset = pipeline.read_records([path], skip_corrupt=True)
    read = {r["id"].numpy().decode(): r["pcm"].numpy() for r in dataset}
    report = dataset.shard_report
    first = report.damage[0]
    assert first.offset <= damage_at and "inflate() failed" in first.reason
    for id, samples in read.items():
        np.testing.assert_array_equal(samples, pcm[int(id[1:])])
    if compression_level == 0:
        assert (
            sorted(read) == sorted(f"r{i}" for i in range(10) if i != first.record)
            and report.num_corrupt == 1
        )
        lost = first.record
        assert first.bytes_lost == frame_size(
            schema.speech_example(f"r{lost}", pcm[lost], "en")
        )  # one stored block
    else:
        assert list(read) == [f"r{i}" for i in range(first.record)] and first.record < 10
        assert report.bytes_lost == len(data) - first.offset


def test_a_record_that_is_not_an_example_names_shard_and_record(tmp_path):
    records = good_records(5)
    records[2] = b"\xff\xfe not a tf.train.Example"
    path = str(tmp_path / "bad-00000.tfrecord")
    write_records(path, records)
    with pytest.raises(
        pipeline.CorruptShardError, match="bad-00000.tfrecord: record 2: not a tf.train.Example"
    ):
        pipeline.read_records([path])
    dataset = pipeline.read_records([path], skip_corrupt=True)
    assert [r["id"].numpy().decode() for r in dataset] == ["r0", "r1", "r3", "r4"]
    assert dataset.shard_report.num_corrupt == 1


def manifest_with(folder, bad_case):
    """Two good lines and one bad line of `bad_case`; returns (manifest, bad source, reason)."""
    os.makedirs(folder)
    helpers.write_audio(os.path.join(folder, "a.wav"), helpers.tone(16000, 0.5), 16000)
    helpers.write_audio(os.path.join(folder, "b.wav"), helpers.tone(16000, 0.5, 300.0), 16000)
    good = [json.dumps({"audio": "a.wav", "text": "hello", "language": "en", "id": "a"}).encode()]
    good.append(
        json.dumps({"audio": "b.wav", "text": "world", "language": "en", "id": "b"}).encode()
    )
    if bad_case == "not_utf8":
        bad, source = (
            b'{"audio": "a.wav", "text": "caf\xe9", "language": "en", "id": "c"}',
            "manifest.jsonl:2",
        )
    elif bad_case == "lone_surrogate":
        bad, source = (
            b'{"audio": "a.wav", "text": "x\\ud800", "language": "en", "id": "c"}',
            "a.wav",
        )
    elif bad_case == "truncated_wav":
        path = helpers.write_audio(os.path.join(folder, "cut.wav"), helpers.tone(16000, 1.0), 16000)
        with open(path, "rb+") as file:
            file.truncate(os.path.getsize(path) // 2)
        bad, source = (
            json.dumps({"audio": "cut.wav", "text": "cut", "language": "en", "id": "c"}).encode(),
            "cut.wav",
        )
    elif bad_case == "duplicate_id":
        bad, source = (
            json.dumps({"audio": "b.wav", "text": "again", "language": "en", "id": "a"}).encode(),
            "b.wav",
        )
    manifest = os.path.join(folder, "manifest.jsonl")
    with open(manifest, "wb") as file:
        file.write(b"\n".join([good[0], bad, good[1]]) + b"\n")
    return (
        manifest,
        source,
        {"lone_surrogate": "not_utf8", "truncated_wav": "truncated"}.get(bad_case, bad_case),
    )


@pytest.mark.parametrize(
    "bad_case", ["not_utf8", "lone_surrogate", "truncated_wav", "duplicate_id"]
)
def test_text_encoding_truncated_audio_and_repeated_ids_are_errors_or_counted_skips(
    tmp_path, bad_case, capsys
):
    manifest, source, reason = manifest_with(str(tmp_path / "corpus"), bad_case)
    base = ["make-tfrecords", "--input", manifest, "--no-progress"]
    assert cli.main(base + ["--output", str(tmp_path / "strict")]) == 1
    assert f"{source}: {reason}" in capsys.readouterr().err
    assert cli.main(base + ["--output", str(tmp_path / "skip"), "--skip-bad"]) == 0
    summary = json.loads((tmp_path / "skip" / "summary.json").read_text())
    assert summary["num_records"] == 2 and [s["reason"] for s in summary["skipped"]] == [reason]
    assert summary["skipped"][0]["source"].endswith(source)
    records = pipeline.read_records(pipeline.list_shards(tmp_path / "skip"))
    assert sorted((r["id"].numpy(), r["transcript"].numpy()) for r in records) == [
        (b"a", b"hello"),
        (b"b", b"world"),
    ]


def test_whitespace_transcripts_are_not_paired(tmp_path):
    path = helpers.write_audio(str(tmp_path / "a.wav"), helpers.tone(16000, 0.5), 16000)
    item = {
        "id": "a",
        "audio": path,
        "language": "en",
        "transcript": " \t\n",
        "translation": "  ",
        "target_language": "fr",
    }
    parsed = tf.io.parse_single_example(
        writers.encode_item(item, "speech")[0], schema.feature_spec("speech")
    )
    assert [parsed[k].numpy() for k in ("transcript", "translation", "target_language")] == [
        b"",
        b"",
        b"",
    ]
    with pytest.raises(audio.BadInputError, match="x:1: empty"):
        writers.encode_item({"id": "x:1", "text": "  ", "language": "en"}, "text")

    # Shards written before keep such transcripts: paired batches still leave them out.
    shard = str(tmp_path / "s-00000.tfrecord")
    write_records(
        shard,
        [
            schema.speech_example(id, np.full(1600, 5, "int16"), "en", transcript=text)
            for id, text in [("blank", "  "), ("real", "ab")]
        ],
    )

    def frontend(waveform, padding_mask):
        return waveform[:, :, None], padding_mask

    dataset = pipeline.speech_dataset(
        [shard],
        frontend,
        pipeline.Buckets((1.0,), 4),
        tokenizer=lambda s: tf.strings.unicode_decode(s, "UTF-8"),
        max_token_length=4,
        paired=True,
    )
    batch = next(iter(dataset))
    assert batch["speech_padding_mask"].numpy().sum(axis=1).tolist() == [1600, 0, 0, 0]


def test_streamed_wav_sizes_are_not_truncation(tmp_path):
    """WAVs written to a pipe leave the data size unset (0xFFFFFFFF): not flagged."""
    samples = helpers.tone(16000, 0.5)
    expected = audio.load_pcm(helpers.write_audio(str(tmp_path / "a.wav"), samples, 16000))
    data = bytearray(read_bytes(str(tmp_path / "a.wav")))
    size_at = data.index(b"data") + 4
    data[size_at : size_at + 4] = (0xFFFFFFFF).to_bytes(4, "little")
    with open(tmp_path / "streamed.wav", "wb") as file:
        file.write(data)
    np.testing.assert_array_equal(audio.load_pcm(str(tmp_path / "streamed.wav")), expected)
    data[size_at : size_at + 4] = (len(data) - size_at - 4 + 2).to_bytes(
        4, "little"
    )  # two bytes short
    with open(tmp_path / "short.wav", "wb") as file:
        file.write(data)
    with pytest.raises(audio.BadInputError, match="short.wav: truncated"):
        audio.load_pcm(str(tmp_path / "short.wav"))
