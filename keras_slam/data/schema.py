"""The one TFRecord schema for keras-slam shards (see tfrecords/README.md).

Two record kinds share a file format (`tf.train.Example`):

- speech records (speech-only and paired): 16 kHz mono int16 PCM stored as
  little-endian bytes, so reading needs no audio codec, plus metadata. A
  record is *paired* when its transcript has a non-whitespace character (the
  writers store whitespace-only transcripts empty).
- text records: a sentence and its language.

Optional string fields are always written (empty when absent) so every
record of a kind parses with the same fixed spec.
"""

import numpy as np
import tensorflow as tf

SAMPLE_RATE = 16000
SPEECH = "speech"
TEXT = "text"
KINDS = (SPEECH, TEXT)

# Field name -> (dtype, default or None when required).
SPEECH_FIELDS = {
    "id": (tf.string, None),
    "pcm": (tf.string, None),  # int16 little-endian, mono, SAMPLE_RATE
    "sample_rate": (tf.int64, None),
    "num_samples": (tf.int64, None),
    "duration": (tf.float32, None),  # seconds = num_samples / sample_rate
    "language": (tf.string, None),
    "transcript": (tf.string, ""),
    "translation": (tf.string, ""),
    "target_language": (tf.string, ""),
    "label": (tf.string, ""),
}
TEXT_FIELDS = {
    "id": (tf.string, None),
    "text": (tf.string, None),
    "language": (tf.string, None),
    "label": (tf.string, ""),
}
FIELDS = {SPEECH: SPEECH_FIELDS, TEXT: TEXT_FIELDS}


def feature_spec(kind):
    """The `tf.io.parse_example` spec of a record kind ("speech" or "text")."""
    if kind not in FIELDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    spec = {}
    for name, (dtype, default) in FIELDS[kind].items():
        if default is None:
            spec[name] = tf.io.FixedLenFeature([], dtype)
        else:
            spec[name] = tf.io.FixedLenFeature([], dtype, default_value=default)
    return spec


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _text(value):
    return _bytes((value or "").encode("utf-8"))


def speech_example(
    id,
    pcm,
    language,
    transcript="",
    translation="",
    target_language="",
    label="",
):
    """Serializes one speech record.

    Args:
        id: unique utterance id.
        pcm: int16 numpy array (num_samples,), mono, at `SAMPLE_RATE`.
        language: language code of the speech (e.g. "en", "fr").
        transcript, translation, target_language, label: optional strings.
    Returns:
        The serialized `tf.train.Example` (bytes).
    """
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16 or pcm.ndim != 1:
        raise ValueError(f"{id}: pcm must be 1-D int16, got {pcm.dtype} {pcm.shape}")
    features = {
        "id": _text(id),
        "pcm": _bytes(pcm.astype("<i2").tobytes()),
        "sample_rate": tf.train.Feature(int64_list=tf.train.Int64List(value=[SAMPLE_RATE])),
        "num_samples": tf.train.Feature(int64_list=tf.train.Int64List(value=[len(pcm)])),
        "duration": tf.train.Feature(float_list=tf.train.FloatList(value=[len(pcm) / SAMPLE_RATE])),
        "language": _text(language),
        "transcript": _text(transcript),
        "translation": _text(translation),
        "target_language": _text(target_language),
        "label": _text(label),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(
        deterministic=True
    )


def text_example(id, text, language, label=""):
    """Serializes one text-only record (bytes); `label` is an optional class name."""
    features = {
        "id": _text(id),
        "text": _text(text),
        "language": _text(language),
        "label": _text(label),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(
        deterministic=True
    )


def is_gzip(path):
    """Shards named `*.gz` are GZIP-compressed TFRecords."""
    return str(path).endswith(".gz")


def compression_type(path):
    return "GZIP" if is_gzip(path) else ""


def shard_kind(path):
    """SPEECH or TEXT, from the fields of the first record of shard `path`.

    Raises:
        ValueError: the shard holds no record.
    """
    for record in tf.data.TFRecordDataset(path, compression_type(path)).take(1):
        fields = tf.train.Example.FromString(record.numpy()).features.feature
        return SPEECH if "pcm" in fields else TEXT
    raise ValueError(f"{path}: no record to tell speech from text shards")
