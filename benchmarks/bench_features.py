"""Audio seconds per second: TFRecord -> batched, padded log-mel features.

Compares keras-slam's pipeline (parse -> int16 PCM -> bucket -> pad -> batch
-> LogMelSpectrogram in graph, w2v-BERT 2.0 settings) with Hugging Face's
`SeamlessM4TFeatureExtractor` (numpy, per utterance) on the same audio.

    python benchmarks/bench_features.py [--seconds 3000] [--batch-seconds 64]

The default corpus (50 min) is large enough that the partly filled last batch
of each of the 15 buckets does not dominate; with 10 min it does.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import tensorflow as tf

from keras_slam.data import pipeline, schema
from keras_slam.layers.log_mel import LogMelSpectrogram


def make_corpus(folder, total_seconds, rng):
    """Noisy sines of 2-15 s in 4 shards; returns the int16 waveforms."""
    waveforms = []
    while sum(map(len, waveforms)) < total_seconds * schema.SAMPLE_RATE:
        seconds = rng.uniform(2.0, 15.0)
        t = np.arange(int(seconds * schema.SAMPLE_RATE)) / schema.SAMPLE_RATE
        audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 800) * t) + 0.05 * rng.standard_normal(
            len(t)
        )
        waveforms.append(np.round(audio * 32767).astype("int16"))
    for shard in range(4):
        with tf.io.TFRecordWriter(os.path.join(folder, f"bench-{shard:05d}.tfrecord")) as writer:
            for index in range(shard, len(waveforms), 4):
                writer.write(schema.speech_example(f"u{index}", waveforms[index], "en"))
    return waveforms


def time_pipeline(folder, batch_seconds):
    buckets = pipeline.Buckets.from_budget(tuple(range(2, 17)), batch_seconds)
    dataset = pipeline.speech_dataset(
        pipeline.list_shards(folder),
        LogMelSpectrogram.w2v_bert_2_0(),
        buckets,
        verify=False,
        deterministic=False,
    )
    for _ in dataset.take(2):  # trace the graph functions first
        pass
    start = time.perf_counter()
    real_frames = 0.0
    for batch in dataset:
        real_frames += float(tf.reduce_sum(batch["speech_padding_mask"]))
    return time.perf_counter() - start, real_frames


def time_huggingface(waveforms, batch_size):
    from transformers import SeamlessM4TFeatureExtractor

    extractor = SeamlessM4TFeatureExtractor()
    audio = [w.astype("float32") / 32768.0 for w in waveforms]
    start = time.perf_counter()
    for index in range(0, len(audio), batch_size):
        extractor(
            audio[index : index + batch_size],
            sampling_rate=16000,
            padding=True,
            return_tensors="np",
        )
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3000.0, help="total audio")
    parser.add_argument("--batch-seconds", type=float, default=64.0, help="audio seconds per batch")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        waveforms = make_corpus(folder, args.seconds, rng)
        audio_seconds = sum(map(len, waveforms)) / schema.SAMPLE_RATE
        ours, _ = time_pipeline(folder, args.batch_seconds)
    theirs = time_huggingface(waveforms, batch_size=8)
    ours_rate, theirs_rate = audio_seconds / ours, audio_seconds / theirs
    print(
        f"audio: {audio_seconds:.0f} s in {len(waveforms)} utterances; CPU threads: {os.cpu_count()}"
    )
    print(
        f"keras-slam TFRecord -> padded log-mel batches: {ours_rate:8.0f} audio-s/s ({ours:.2f} s)"
    )
    print(
        f"HF SeamlessM4TFeatureExtractor:                {theirs_rate:8.0f} audio-s/s ({theirs:.2f} s)"
    )
    print(f"speed-up: {ours_rate / theirs_rate:.1f}x")


if __name__ == "__main__":
    main()
