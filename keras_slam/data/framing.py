"""TFRecord framing read in Python: the recovery path for damaged shards.

A TFRecord file (after GZIP inflation for `.gz` shards) is a sequence of
frames: uint64 length, uint32 masked CRC-32C of the length, the record,
uint32 masked CRC-32C of the record (all little-endian). tf.data stops at the
first bad frame; `walk_frames` instead checks every frame and, after damage,
resumes at the next offset whose header and record checksums are valid, so
one flipped byte costs one record, not the rest of the shard. This is slow
(pure Python CRC, a few MB/s) and only runs on shards tf.data failed to read.
"""

import dataclasses
import struct
import zlib

import numpy as np

HEADER_BYTES = 12  # length + its CRC
FOOTER_BYTES = 4  # record CRC
GZIP_MAGIC = b"\x1f\x8b"
INFLATE_CHUNK = 1 << 16  # compressed bytes per inflate step


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC32C_TABLE = _crc32c_table()
_CRC32C_ARRAY = np.array(CRC32C_TABLE, np.uint32)


def masked_crc32c(data):
    """TFRecord's masked CRC-32C (Castagnoli) of `data` (bytes)."""
    crc = 0xFFFFFFFF
    table = CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _header_length(stream, offset):
    """The record length of a frame at `offset` whose header is valid and fits in `stream`, else None."""
    if offset + HEADER_BYTES > len(stream):
        return None
    length_bytes = stream[offset : offset + 8]
    if masked_crc32c(length_bytes) != struct.unpack_from("<I", stream, offset + 8)[0]:
        return None
    length = struct.unpack("<Q", length_bytes)[0]
    return length if offset + HEADER_BYTES + length + FOOTER_BYTES <= len(stream) else None


def _frame_length(stream, offset):
    """The record length of a fully valid frame at `offset`, else None."""
    length = _header_length(stream, offset)
    if length is None:
        return None
    start = offset + HEADER_BYTES
    record_crc = struct.unpack_from("<I", stream, start + length)[0]
    return length if masked_crc32c(stream[start : start + length]) == record_crc else None


def _next_frame(stream, start, block=1 << 20):
    """Offset of the first valid frame at or after `start`, else len(stream).

    Header checksums of every offset are computed at once with numpy (the
    frames found are then checked in full).
    """
    buffer = np.frombuffer(stream, np.uint8)
    last = len(stream) - HEADER_BYTES - FOOTER_BYTES  # last offset a frame fits at
    for first in range(start, last + 1, block):
        count = min(block, last + 1 - first)
        crc = np.full(count, 0xFFFFFFFF, np.uint32)
        for k in range(8):
            crc = _CRC32C_ARRAY[(crc ^ buffer[first + k : first + k + count]) & 0xFF] ^ (crc >> 8)
        crc ^= np.uint32(0xFFFFFFFF)
        masked = ((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)
        stored = sum(
            buffer[first + 8 + k : first + 8 + k + count].astype(np.uint32) << (8 * k)
            for k in range(4)
        )
        for candidate in np.flatnonzero(masked == stored):
            if _frame_length(stream, first + int(candidate)) is not None:
                return first + int(candidate)
    return len(stream)


@dataclasses.dataclass
class Span:
    """Unreadable bytes [start, end) of a stream; `exact`: one frame with a valid header (one record)."""

    start: int
    end: int
    exact: bool


def walk_frames(stream):
    """Valid frames [(offset, length)] and unreadable `Span`s of a TFRecord stream (bytes)."""
    frames, spans = [], []
    offset = 0
    while offset < len(stream):
        length = _frame_length(stream, offset)
        if length is not None:
            frames.append((offset, length))
            offset += HEADER_BYTES + length + FOOTER_BYTES
            continue
        length = _header_length(stream, offset)
        if length is not None:  # intact framing around a damaged record: skip exactly it
            end, exact = offset + HEADER_BYTES + length + FOOTER_BYTES, True
        else:
            end, exact = _next_frame(stream, offset + 1), False
        spans.append(Span(offset, end, exact))
        offset = end
    return frames, spans


def _feed(decompressor, first, chunk, stop=lambda produced: False):
    """Feeds `chunk` (at compressed offset `first`) byte by byte -> (pieces, offset of a zlib error or of `stop`, or None)."""
    pieces, produced = [], 0
    for position in range(len(chunk)):
        try:
            piece = decompressor.decompress(chunk[position : position + 1])
        except zlib.error:
            return pieces, first + position
        pieces.append(piece)
        produced += len(piece)
        if stop(produced):
            return pieces, first + position
    return pieces, None


def inflate(data):
    """GZIP bytes -> (stream, failure).

    `failure` is None, or (compressed offset, zlib message) where inflation
    failed or the data ended early; `stream` is what came before it (the
    failing chunk is fed again byte by byte to keep its good part).
    """
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pieces = []
    for first in range(0, len(data), INFLATE_CHUNK):
        chunk = data[first : first + INFLATE_CHUNK]
        before = decompressor.copy()
        try:
            pieces.append(decompressor.decompress(chunk))
        except zlib.error as error:
            good, offset = _feed(before, first, chunk)
            return b"".join(pieces + good), (offset, str(error))
        if decompressor.eof:
            return b"".join(pieces), None
    return b"".join(pieces), (len(data), "compressed data ends early (truncated file)")


def compressed_offset(data, position):
    """Offset of the GZIP byte of `data` whose inflation yields stream byte `position` (len(data) if none does)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    produced = 0
    for first in range(0, len(data), INFLATE_CHUNK):
        chunk = data[first : first + INFLATE_CHUNK]
        before = decompressor.copy()
        try:
            size = len(decompressor.decompress(chunk))
        except zlib.error:
            size = None
        if size is None or produced + size > position:
            _, offset = _feed(
                before,
                first,
                chunk,
                stop=lambda more, before_chunk=produced: before_chunk + more > position,
            )
            return len(data) if offset is None else offset
        produced += size
    return len(data)
