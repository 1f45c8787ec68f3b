"""Feature-pipeline contenders: TFRecord -> batched, padded log-mel features.

keras-slam's pipeline (parse -> int16 PCM -> bucket -> pad -> batch ->
LogMelSpectrogram in graph, w2v-BERT 2.0 settings) against Hugging Face's
`SeamlessM4TFeatureExtractor` (numpy, per utterance, batches of 8) on the
same audio: noisy sines of 2-15 s. Each `make_*` returns a function that
makes one pass over the whole corpus.

A corpus of 50 min (the harness' default) is large enough that the partly
filled last batch of each of the 15 buckets does not dominate; with 10 min
it does.
"""

import os

import numpy as np

from keras_slam.data import schema


def make_corpus(folder, total_seconds, rng):
    """Noisy sines of 2-15 s in 4 shards; returns the int16 waveforms."""
    import tensorflow as tf

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


def make_pipeline_pass(folder, batch_seconds=64.0):
    """One pass of keras-slam's tf.data pipeline over the shards in `folder`."""
    from keras_slam.data import pipeline
    from keras_slam.layers.log_mel import LogMelSpectrogram

    buckets = pipeline.Buckets.from_budget(tuple(range(2, 17)), batch_seconds)
    dataset = pipeline.speech_dataset(
        pipeline.list_shards(folder),
        LogMelSpectrogram.w2v_bert_2_0(),
        buckets,
        verify=False,
        deterministic=False,
    )

    def one_pass():
        for batch in dataset:
            batch["speech_features"].numpy()

    return "keras-slam TFRecord -> log-mel (tf.data)", one_pass


def make_huggingface_pass(waveforms, batch_size=8):
    """One pass of HF's feature extractor over `waveforms`, `batch_size` at a time."""
    from transformers import SeamlessM4TFeatureExtractor

    extractor = SeamlessM4TFeatureExtractor()
    audio = [w.astype("float32") / 32768.0 for w in waveforms]

    def one_pass():
        for index in range(0, len(audio), batch_size):
            extractor(
                audio[index : index + batch_size],
                sampling_rate=16000,
                padding=True,
                return_tensors="np",
            )

    return "HF SeamlessM4TFeatureExtractor (numpy)", one_pass
