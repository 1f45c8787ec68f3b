"""Audio decoding for the writers: any soundfile format -> 16 kHz mono int16.

Decoding and resampling happen once, at write time, so readers need no codec.
"""

import math
import os
import struct

import numpy as np
import soundfile
from scipy import signal

from keras_slam.data.schema import SAMPLE_RATE


class BadInputError(ValueError):
    """An input the writers refuse; `reason` is a short machine-readable tag."""

    def __init__(self, source, reason, detail=""):
        self.source = str(source)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.source}: {reason}" + (f" ({detail})" if detail else ""))


def check_wav_length(path):
    """Raises BadInputError when a RIFF/WAVE file's data chunk is longer than the file.

    libsndfile reads such a truncated file silently, up to where it ends.
    Streamed WAVs that leave the size unset (0xFFFFFFFF) pass.
    """
    with open(path, "rb") as file:
        header = file.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        file_size = os.fstat(file.fileno()).st_size
        while True:
            chunk = file.read(8)
            if len(chunk) < 8:
                return
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                available = file_size - file.tell()
                if size != 0xFFFFFFFF and size > available:
                    raise BadInputError(
                        path,
                        "truncated",
                        f"the WAV header declares {size} data bytes, the file holds {available}",
                    )
                return
            file.seek(size + size % 2, os.SEEK_CUR)


def _read_soundfile(path):
    info = soundfile.info(path)
    # 16-bit PCM at the target rate is stored bit-exactly.
    if info.subtype == "PCM_16" and info.samplerate == SAMPLE_RATE:
        audio, rate = soundfile.read(path, dtype="int16", always_2d=True)
    else:
        audio, rate = soundfile.read(path, dtype="float64", always_2d=True)
    return audio, rate


def _read_tfio(path):
    try:
        import tensorflow_io as tfio
    except ImportError as error:
        raise ImportError("decoder='tfio' needs `pip install tensorflow-io`") from error
    tensor = tfio.audio.AudioIOTensor(str(path))
    return tensor.to_tensor().numpy(), int(tensor.rate.numpy())


DECODERS = {"soundfile": _read_soundfile, "tfio": _read_tfio}


def resample(audio, rate, target_rate=SAMPLE_RATE):
    """Polyphase resampling of float audio (samples, ...) from `rate` to
    `target_rate` Hz (both whole numbers)."""
    if rate == target_rate:
        return audio
    divisor = math.gcd(int(rate), int(target_rate))
    return signal.resample_poly(audio, int(target_rate) // divisor, int(rate) // divisor, axis=0)


def to_int16(audio):
    """Float audio in [-1, 1] -> int16 (clipped, rounded)."""
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def load_pcm(path, downmix=False, decoder="soundfile"):
    """Decodes `path` to a 1-D int16 array at 16 kHz.

    Args:
        path: audio file (WAV/FLAC/OGG/MP3, anything libsndfile reads).
        downmix: average the channels of multi-channel audio; without it
            anything but mono is an error.
        decoder: "soundfile" or "tfio" (optional tensorflow-io).
    Raises:
        BadInputError: unreadable, truncated (WAV), empty, non-finite,
            silent, or wrong channel count.
    """
    try:
        check_wav_length(path)
        audio, rate = DECODERS[decoder](path)
    except (RuntimeError, OSError, soundfile.LibsndfileError) as error:
        raise BadInputError(path, "unreadable", str(error)) from error
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.shape[0] == 0:
        raise BadInputError(path, "empty", "zero samples")
    if audio.shape[1] != 1 and not downmix:
        raise BadInputError(
            path, "wrong_channels", f"{audio.shape[1]} channels; pass downmix to average them"
        )
    if audio.dtype == np.int16 and rate == SAMPLE_RATE and audio.shape[1] == 1:
        pcm = audio[:, 0]
    else:
        if audio.dtype.kind in "iu":
            audio = audio / float(np.iinfo(audio.dtype).max + 1)
        audio = audio.astype("float64")
        if not np.all(np.isfinite(audio)):
            raise BadInputError(path, "non_finite", "NaN or Inf samples")
        pcm = to_int16(resample(audio.mean(axis=1), rate))
    if not np.any(pcm):
        raise BadInputError(path, "silent", "all samples are zero")
    return pcm
