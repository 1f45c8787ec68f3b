"""The Python TFRecord framing reader against files tf.data wrote."""

import numpy as np
import tensorflow as tf

from keras_slam.data import framing


def masked_crc32c_reference(data):
    """Bitwise CRC-32C (RFC 3720) and TFRecord's mask, written out without a table."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_crc32c_matches_the_check_value_and_tf_records(tmp_path):
    # The CRC-32C check value of "123456789" is 0xE3069283 (RFC 3720 / iSCSI).
    unmasked = (framing.masked_crc32c(b"123456789") - 0xA282EAD8) & 0xFFFFFFFF
    assert ((unmasked << 15) | (unmasked >> 17)) & 0xFFFFFFFF == 0xE3069283
    data = np.random.default_rng(0).bytes(1000)
    assert framing.masked_crc32c(data) == masked_crc32c_reference(data)

    records = [np.random.default_rng(i).bytes(50 + 30 * i) for i in range(4)]
    path = str(tmp_path / "x.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    with open(path, "rb") as file:
        stream = file.read()
    frames, spans = framing.walk_frames(stream)
    assert spans == [] and [stream[o + 12 : o + 12 + n] for o, n in frames] == records


def test_walk_frames_resyncs_after_garbage():
    records = [np.random.default_rng(i).bytes(40 + i) for i in range(3)]

    def frame(record):
        length = len(record).to_bytes(8, "little")
        return (
            length
            + framing.masked_crc32c(length).to_bytes(4, "little")
            + record
            + framing.masked_crc32c(record).to_bytes(4, "little")
        )

    garbage = b"\x00\x01garbage" * 3
    stream = frame(records[0]) + garbage + frame(records[1]) + frame(records[2])[:-1]
    frames, spans = framing.walk_frames(stream)
    assert [stream[o + 12 : o + 12 + n] for o, n in frames] == records[:2]
    start = len(frame(records[0]))
    assert spans == [
        framing.Span(start, start + len(garbage), False),
        framing.Span(len(stream) - len(frame(records[2])) + 1, len(stream), False),
    ]
