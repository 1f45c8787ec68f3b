import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_slam.data import pipeline, schema
from keras_slam.layers.log_mel import LogMelSpectrogram


def characters(strings):
    """A tokenizer stand-in: UTF-8 code points (keras-hub tokenizers plug in the same way)."""
    return tf.strings.unicode_decode(strings, "UTF-8")


def write_speech_corpus(folder, rng, count=23, num_shards=3, max_seconds=1.2):
    """Shards of random-length noise records; returns {id: (pcm, transcript)}."""
    os.makedirs(folder, exist_ok=True)
    corpus = {}
    for shard in range(num_shards):
        with tf.io.TFRecordWriter(os.path.join(folder, f"s-{shard:05d}.tfrecord")) as writer:
            for index in range(shard, count, num_shards):
                pcm = rng.integers(
                    -3000, 3000, size=int(rng.uniform(0.1, max_seconds) * 16000)
                ).astype("int16")
                transcript = "x" * int(rng.integers(1, 12)) if index % 4 else ""
                corpus[f"u{index:03d}"] = (pcm, transcript)
                writer.write(
                    schema.speech_example(
                        f"u{index:03d}", pcm, "en", transcript=transcript, label=f"u{index:03d}"
                    )
                )
    return corpus


def write_text_corpus(folder, counts, rng):
    os.makedirs(folder, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(folder, "t-00000.tfrecord")) as writer:
        for language, count in counts.items():
            for index in range(count):
                writer.write(
                    schema.text_example(
                        f"{language}{index}", "a" * int(rng.integers(1, 40)), language
                    )
                )
    with open(os.path.join(folder, "summary.json"), "w") as file:
        json.dump({"languages": {lang: {"records": n} for lang, n in counts.items()}}, file)


def epoch(dataset):
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset]


def test_bucketing_never_truncates_and_fixes_shapes(tmp_path, seeded):
    corpus = write_speech_corpus(str(tmp_path / "c"), seeded)
    frontend = LogMelSpectrogram()
    ids = sorted(corpus)
    buckets = pipeline.Buckets.from_budget((0.5, 1.0, 1.25), budget=2.5)
    assert buckets.batch_sizes == (5, 2, 2)
    dataset = pipeline.speech_dataset(
        pipeline.list_shards(tmp_path / "c"),
        frontend,
        buckets,
        labels=ids,
        shuffle_buffer=8,
        seed=3,
    )
    shapes = {}
    seen = []
    for batch in epoch(dataset):
        size = batch["speech_features"].shape[0]
        frames = batch["speech_features"].shape[1]
        limits = [frontend.num_frames(int(b * 16000)) for b in buckets.boundaries]
        assert frames in limits and size == buckets.batch_sizes[limits.index(frames)], (
            frames,
            size,
        )
        shapes.setdefault(frames, set()).add(batch["speech_features"].shape)
        for row, label in enumerate(batch["label"]):
            if label < 0:  # a fully-masked padding row
                assert batch["speech_padding_mask"][row].sum() == 0
                continue
            seen.append(ids[label])
            pcm = corpus[ids[label]][0]
            # Every real frame of the utterance is kept: nothing truncated.
            assert batch["speech_padding_mask"][row].sum() == frontend.num_frames(len(pcm))
            expected, _ = frontend(pcm[None].astype("float32") / 32768.0)
            np.testing.assert_allclose(
                batch["speech_features"][row, : frontend.num_frames(len(pcm))],
                keras.ops.convert_to_numpy(expected)[0],
                atol=1e-4,
            )
    assert all(len(s) == 1 for s in shapes.values())  # one shape per bucket
    assert sorted(seen) == ids  # exactly once per epoch


def test_deterministic_order_and_host_sharding(tmp_path, seeded):
    write_speech_corpus(str(tmp_path / "c"), seeded, count=20, num_shards=4)
    buckets = pipeline.Buckets((1.25,), 4)
    ids = [f"u{i:03d}" for i in range(20)]

    def labels(seed, files=None):
        files = files or pipeline.list_shards(tmp_path / "c")
        dataset = pipeline.speech_dataset(
            files,
            LogMelSpectrogram(),
            buckets,
            labels=ids,
            shuffle_buffer=16,
            seed=seed,
            deterministic=True,
        )
        return [int(x) for batch in epoch(dataset) for x in batch["label"] if x >= 0]

    first, again, other = labels(1), labels(1), labels(2)
    assert first == again and first != other and sorted(first) == list(range(20))
    per_host = [
        labels(1, pipeline.list_shards(tmp_path / "c", num_hosts=2, host_index=h)) for h in range(2)
    ]
    assert sorted(per_host[0] + per_host[1]) == list(range(20)) and not set(per_host[0]) & set(
        per_host[1]
    )


def test_too_long_is_an_error_or_a_counted_skip(tmp_path, seeded):
    corpus = write_speech_corpus(
        str(tmp_path / "c"), seeded, count=12, num_shards=1, max_seconds=1.2
    )
    files = pipeline.list_shards(tmp_path / "c")
    long_ones = sum(len(pcm) > 8000 for pcm, _ in corpus.values())
    assert 0 < long_ones < 12
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not fit the last bucket"):
        epoch(pipeline.speech_dataset(files, LogMelSpectrogram(), pipeline.Buckets((0.5,), 2)))
    dataset = pipeline.speech_dataset(
        files, LogMelSpectrogram(), pipeline.Buckets((0.5,), 2), too_long="skip", remainder="drop"
    )
    assert dataset.num_too_long == long_ones
    rows = sum(len(b["speech_padding_mask"]) for b in epoch(dataset))
    assert rows == 2 * ((12 - long_ones) // 2)


def test_paired_and_text_batches(tmp_path, seeded):
    corpus = write_speech_corpus(str(tmp_path / "c"), seeded)
    files = pipeline.list_shards(tmp_path / "c")
    paired = epoch(
        pipeline.speech_dataset(
            files,
            LogMelSpectrogram(),
            pipeline.Buckets((1.25,), 4),
            tokenizer=characters,
            max_token_length=16,
            paired=True,
            labels=sorted(corpus),
        )
    )
    texts = {}
    for batch in paired:
        assert batch["token_ids"].shape == (4, 16) and batch["token_ids"].dtype == np.int32
        for row, label in enumerate(batch["label"]):
            if label >= 0:
                length = int(batch["token_padding_mask"][row].sum())
                texts[sorted(corpus)[label]] = "".join(map(chr, batch["token_ids"][row, :length]))
    assert texts == {id: t for id, (_, t) in corpus.items() if t}

    write_text_corpus(str(tmp_path / "t"), {"en": 30, "fr": 7}, seeded)
    text = epoch(
        pipeline.text_dataset(
            pipeline.list_shards(tmp_path / "t"),
            characters,
            pipeline.Buckets((8, 16), (6, 3)),
            max_length=24,
            languages=["en", "fr"],
        )
    )
    assert {b["token_ids"].shape for b in text} == {(6, 8), (3, 16), (3, 24)}
    assert sum(int((b["language"] >= 0).sum()) for b in text) == 37
    lengths = np.concatenate([b["token_padding_mask"].sum(1) for b in text])
    assert lengths.max() == 24  # capped


def test_temperature_sampling_and_mixing(tmp_path, seeded):
    counts = {"en": 400, "fr": 50, "sw": 6}
    write_text_corpus(str(tmp_path / "t"), counts, seeded)
    files = pipeline.list_shards(tmp_path / "t")
    languages = sorted(counts)
    for temperature in (1.0, 3.0):
        expected = np.array([counts[lang] ** (1 / temperature) for lang in languages])
        expected /= expected.sum()
        text = pipeline.text_dataset(
            files,
            characters,
            pipeline.Buckets((40,), 64),
            max_length=40,
            languages=languages,
            language_temperature=temperature,
            seed=0,
        )
        drawn = np.concatenate([b["language"] for b in epoch(text.take(60))])
        observed = np.bincount(drawn, minlength=3) / len(drawn)
        # 3840 draws: binomial standard error <= 0.008.
        np.testing.assert_allclose(observed, expected, atol=0.03)
    assert pipeline.language_weights(counts, 3.0)["sw"] > counts["sw"] / sum(counts.values())

    write_speech_corpus(str(tmp_path / "c"), seeded, count=12)
    speech_files = pipeline.list_shards(tmp_path / "c")
    frontend = LogMelSpectrogram()
    streams = {
        "speech": pipeline.speech_dataset(speech_files, frontend, pipeline.Buckets((1.25,), 4)),
        "text": pipeline.text_dataset(files, characters, pipeline.Buckets((40,), 8), max_length=40),
        "paired": pipeline.speech_dataset(
            speech_files,
            frontend,
            pipeline.Buckets((1.25,), 2),
            tokenizer=characters,
            max_token_length=16,
            paired=True,
        ),
    }
    steps = list(pipeline.mix_streams(streams, epoch_stream="speech"))
    assert len(steps) == 3  # 12 speech records / 4 per step
    for step in steps:
        assert step["speech"]["speech_features"].shape[0] == 4
        assert step["text"]["token_ids"].shape == (8, 40)
        assert step["paired"]["token_ids"].shape == (2, 16)


class TinyMixedModel(keras.Model):
    """Consumes a mixed element; its loss uses every sub-batch and mask."""

    def __init__(self):
        super().__init__()
        self.speech_projection = keras.layers.Dense(1)
        self.embedding = keras.layers.Embedding(256, 4)

    def call(self, inputs):
        speech = self.speech_projection(inputs["speech"]["speech_features"])[..., 0]
        paired = self.speech_projection(inputs["paired"]["speech_features"])[..., 0]
        text = keras.ops.sum(self.embedding(inputs["text"]["token_ids"]), axis=-1)
        return speech, paired, text

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = 0.0
        for values, mask in zip(
            y_pred,
            (
                x["speech"]["speech_padding_mask"],
                x["paired"]["speech_padding_mask"],
                x["text"]["token_padding_mask"],
            ),
        ):
            total += keras.ops.sum(keras.ops.square(values) * mask) / keras.ops.maximum(
                keras.ops.sum(mask), 1.0
            )
        return total


def test_model_fit_consumes_the_mixed_pipeline(tmp_path, seeded):
    write_speech_corpus(str(tmp_path / "c"), seeded, count=12)
    write_text_corpus(str(tmp_path / "t"), {"en": 20}, seeded)
    frontend = LogMelSpectrogram(num_mel_bins=8)
    speech_files = pipeline.list_shards(tmp_path / "c")
    streams = {
        "speech": pipeline.speech_dataset(speech_files, frontend, pipeline.Buckets((0.6, 1.25), 4)),
        "text": pipeline.text_dataset(
            pipeline.list_shards(tmp_path / "t"),
            characters,
            pipeline.Buckets((16,), 4),
            max_length=40,
        ),
        "paired": pipeline.speech_dataset(
            speech_files,
            frontend,
            pipeline.Buckets((1.25,), 2),
            tokenizer=characters,
            max_token_length=16,
            paired=True,
        ),
    }
    model = TinyMixedModel()
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(pipeline.mix_streams(streams), steps_per_epoch=4, epochs=2, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 2 and np.all(np.isfinite(losses)) and losses[1] < losses[0]


def test_label_field_reads_any_text_field_and_rejects_unknown_labels(tmp_path):
    with tf.io.TFRecordWriter(str(tmp_path / "s-00000.tfrecord")) as writer:
        for index, (language, intent) in enumerate([("fr", "pay"), ("en", "greet")]):
            pcm = np.full(1600, 100 * (index + 1), "int16")
            writer.write(schema.speech_example(f"u{index}", pcm, language, label=intent))
    files, frontend = [str(tmp_path / "s-00000.tfrecord")], LogMelSpectrogram()
    buckets = pipeline.Buckets.from_budget((0.5,), budget=1.0)

    def labels(names, field):
        dataset = pipeline.speech_dataset(
            files, frontend, buckets, labels=names, label_field=field, verify=False
        )
        return [int(x) for batch in epoch(dataset) for x in batch["label"] if x >= 0]

    assert labels(["en", "fr"], "language") == [1, 0]
    assert labels(["greet", "pay"], "label") == [1, 0]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"unknown label \(label\).*u1"):
        labels(["pay"], "label")
    with pytest.raises(ValueError, match="label_field must be a text field"):
        labels(["pay"], "intent")
