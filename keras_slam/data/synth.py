"""Speech synthesis with libespeak-ng from the `espeakng-loader` wheel (pip, no apt).

    synthesiser = get_synthesiser()
    pcm = synthesiser.synthesise("Hello there.", voice="en-gb", variant="f2", rate=180, pitch=40, word_gap=1)
    # int16 (samples,) at 16 kHz, silence trimmed, peak at PEAK_LEVEL

libespeak-ng keeps its state in globals: there is one `Synthesiser` per
process (`get_synthesiser()`); parallelise with processes (`synthesise_many`). That state also leaks
from one utterance into the next (a pitch-flutter counter, filter memories),
so each call reloads the library (about 1 ms) and seeds its noise generator
(breathy variants; espeak seeds it from the clock) from the text and style:
an utterance's audio depends only on its own arguments, never on what was
spoken before or when. (Reloading resets it only while nothing else in the
process holds libespeak-ng open, e.g. another binding of the same wheel.)

Install with `pip install keras-slam[sample]`. The committed sample corpus
(tfrecords/sample) was made with Debian's espeak-ng 1.51 command line; the
wheel ships 1.52, whose audio differs, so `tfrecords/make_sample_corpus.py`
keeps the command line for that corpus and shares the constants below.
"""

import _ctypes
import ctypes
import dataclasses
import functools
import os
import zlib

import numpy as np

from keras_slam.data import audio as audio_lib
from keras_slam.data import worker_pool

# espeak-ng voice variants that stay intelligible (no whisper or robots).
VARIANTS = (
    "",
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
)
RATE_RANGE = (150, 220)  # words per minute; espeak's default is 175
PITCH_RANGE = (30, 70)  # 0-99; espeak's default is 50
WORD_GAP_RANGE = (0, 3)  # extra pause between words, in 10 ms units at the default rate
PEAK_LEVEL = 0.125  # -18 dBFS: quieter int16 GZIPs ~10% smaller than at -6 dBFS
TRIM_THRESHOLD_DB = -45.0  # frame RMS below this (re. loudest frame) is silence
TRIM_MARGIN_S = 0.05

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_RATE, _PITCH, _WORDGAP = 1, 3, 7
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, code, NUL)*, NUL
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def trim_and_normalise(audio, rate):
    """Cuts leading/trailing silence (10 ms frames below TRIM_THRESHOLD_DB of the
    loudest, keeping TRIM_MARGIN_S), scales the peak to PEAK_LEVEL.

    audio: float (samples,), not all zero. Returns float (trimmed samples,).
    """
    frame = int(0.01 * rate)
    frames = len(audio) // frame
    rms = np.sqrt(np.mean(audio[: frames * frame].reshape(frames, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (TRIM_THRESHOLD_DB / 20))
    margin = int(TRIM_MARGIN_S * rate)
    start = max(0, loud[0] * frame - margin)
    stop = min(len(audio), (loud[-1] + 1) * frame + margin)
    audio = audio[start:stop]
    return audio * (PEAK_LEVEL / np.abs(audio).max())


def _load_espeakng_loader():
    try:
        import espeakng_loader
    except ImportError as error:
        raise ImportError(
            "speech synthesis needs the espeak-ng wheel: pip install 'keras-slam[sample]'"
        ) from error
    return espeakng_loader


@dataclasses.dataclass(frozen=True)
class Style:
    """How one utterance is spoken: an espeak voice (a language code such as
    "en-gb"), a variant from VARIANTS, rate (words/min), pitch (0-99) and the
    extra gap between words (10 ms units)."""

    voice: str
    variant: str = ""
    rate: int = 175
    pitch: int = 50
    word_gap: int = 0


def draw_style(rng, voices, variants=VARIANTS):
    """A random Style: a voice from `voices`, the rest uniform over `variants`
    and the inclusive ranges RATE_RANGE, PITCH_RANGE, WORD_GAP_RANGE."""
    return Style(
        voice=voices[rng.integers(len(voices))],
        variant=variants[rng.integers(len(variants))],
        rate=int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
        pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        word_gap=int(rng.integers(WORD_GAP_RANGE[0], WORD_GAP_RANGE[1] + 1)),
    )


class Synthesiser:
    """libespeak-ng through ctypes, synthesising into memory. One per process:
    get it with `get_synthesiser()`."""

    _created = False

    def __init__(self):
        if Synthesiser._created:
            raise RuntimeError(
                "libespeak-ng is one global state per process: use synth.get_synthesiser()"
            )
        Synthesiser._created = True
        loader = _load_espeakng_loader()
        self.library_path = loader.get_library_path()
        self.data_path = loader.get_data_path()
        self._chunks = []
        self._callback = _CALLBACK(self._collect)  # kept alive as long as the library may call it
        self._library = None
        self._load()
        info = self._library.espeak_Info
        info.restype, info.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        self.version = info(None).decode()
        self.voices, self._primary_codes = self._list_voices()
        self.variants = tuple(sorted(os.listdir(os.path.join(self.data_path, "voices", "!v"))))

    def _collect(self, samples, count, events):
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0

    def _load(self):
        """(Re)loads libespeak-ng: unloading resets every global it keeps."""
        if self._library is not None:
            self._library.espeak_Terminate()
            _ctypes.dlclose(self._library._handle)
        library = ctypes.CDLL(self.library_path)
        library.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        library.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        library.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        library.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.espeak_rate = library.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if self.espeak_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed for data at {self.data_path}")
        library.espeak_SetSynthCallback(self._callback)
        self._library = library

    def _list_voices(self):
        """({language code (lower case): voice identifier}, each voice's first code),
        e.g. "en-gb": "gmw/en"; later codes of a voice are aliases ("es-mx")."""
        voices, primary, entries, index = {}, set(), self._library.espeak_ListVoices(None), 0
        while entries[index]:
            voice = entries[index].contents
            position = voice.languages
            while ctypes.string_at(position, 1) != b"\0":
                code = ctypes.string_at(position + 1).decode().lower()
                if position == voice.languages:
                    primary.add(code)
                voices.setdefault(code, voice.identifier.decode())
                position += len(code) + 2
            index += 1
        return dict(sorted(voices.items())), primary

    def accents(self, language):
        """The voices of `language` ("en" -> en-029, en-gb, ..., en-us-nyc), leaving
        out voices for another script (a four-letter subtag, e.g. en-shaw)."""
        language, found = (
            language.lower(),
            {},
        )  # found: identifier -> code, the voice's own code before an alias
        for code, identifier in self.voices.items():
            of_language = code == language or code.startswith(language + "-")
            other_script = any(len(part) == 4 for part in code.split("-")[1:])
            if (
                of_language
                and not other_script
                and (identifier not in found or code in self._primary_codes)
            ):
                found[identifier] = code
        if not found:
            raise ValueError(
                f"espeak-ng {self.version} has no voice for language {language!r}; available: {', '.join(self.voices)}"
            )
        return tuple(sorted(found.values()))

    def synthesise(self, text, style):
        """Speaks `text` in `style` (a Style). Returns int16 (samples,) at 16 kHz,
        silence trimmed and the peak at PEAK_LEVEL."""
        if not text or not text.strip():
            raise ValueError(f"nothing to synthesise: empty text {text!r}")
        if style.voice.lower() not in self.voices:
            raise ValueError(
                f"unknown espeak-ng voice {style.voice!r}; available: {', '.join(self.voices)}"
            )
        if style.variant and style.variant not in self.variants:
            raise ValueError(
                f"unknown espeak-ng variant {style.variant!r}; available: {', '.join(self.variants)}"
            )
        self._load()
        self._library.espeak_ng_SetRandSeed(zlib.crc32(repr((text, style)).encode("utf-8")))
        name = self.voices[style.voice.lower()] + (f"+{style.variant}" if style.variant else "")
        if self._library.espeak_SetVoiceByName(name.encode()) != 0:
            raise RuntimeError(f"espeak_SetVoiceByName({name!r}) failed")
        for parameter, value in (
            (_RATE, style.rate),
            (_PITCH, style.pitch),
            (_WORDGAP, style.word_gap),
        ):
            self._library.espeak_SetParameter(parameter, value, 0)
        encoded = text.encode("utf-8")
        self._chunks = []
        status = self._library.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
        )
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
        raw = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        if not np.any(raw):
            raise ValueError(f"espeak-ng produced no sound for {text!r} in {style}")
        audio = trim_and_normalise(raw / 32768.0, self.espeak_rate)
        return audio_lib.to_int16(audio_lib.resample(audio, self.espeak_rate))


@functools.cache
def get_synthesiser():
    """This process's Synthesiser."""
    return Synthesiser()


def _synthesise_in_process(request):
    text, style = request
    return get_synthesiser().synthesise(text, style)


def synthesise_many(requests, pool=None):
    """[(text, Style)] -> iterator of int16 PCM, in order; `pool`
    (`worker_pool.make_pool`) spreads the work over processes."""
    return worker_pool.pool_map(_synthesise_in_process, requests, pool, chunksize=8)
