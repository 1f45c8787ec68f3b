"""Synthetic audio corpora for the data tests (numpy sines/noise via soundfile)."""

import json
import os

import numpy as np
import soundfile

# (sample rate, container, subtype, extension)
FORMATS = [
    (16000, "WAV", "PCM_16", "wav"),
    (22050, "FLAC", "PCM_16", "flac"),
    (8000, "OGG", "VORBIS", "ogg"),
    (44100, "WAV", "FLOAT", "wav"),
    (48000, "FLAC", "PCM_24", "flac"),
]


def tone(sample_rate, seconds, frequency=440.0, rng=None):
    """A sine plus a little noise, float64 in [-0.5, 0.5]."""
    t = np.arange(round(sample_rate * seconds)) / sample_rate
    noise = 0.0 if rng is None else 0.01 * rng.standard_normal(len(t))
    return 0.4 * np.sin(2 * np.pi * frequency * t) + noise


def write_audio(path, audio, sample_rate, container="WAV", subtype="PCM_16"):
    soundfile.write(path, audio, sample_rate, format=container, subtype=subtype)
    return path


def make_manifest(
    folder, durations, rng, languages=("en", "fr"), formats=FORMATS, transcripts=True
):
    """Writes audio files + `manifest.jsonl`; returns (manifest path, entries)."""
    os.makedirs(os.path.join(folder, "audio"), exist_ok=True)
    entries = []
    for index, seconds in enumerate(durations):
        rate, container, subtype, extension = formats[index % len(formats)]
        relative = f"audio/utt{index:04d}.{extension}"
        write_audio(
            os.path.join(folder, relative),
            tone(rate, seconds, 200 + 50 * index, rng),
            rate,
            container,
            subtype,
        )
        entry = {
            "audio": relative,
            "language": languages[index % len(languages)],
            "id": f"utt{index:04d}",
        }
        if transcripts:
            entry.update(
                text=f"utterance number {index}",
                translation=f"traduction {index}",
                target_language="xx",
                label=f"intent{index % 3}",
            )
        entries.append(entry)
    manifest = os.path.join(folder, "manifest.jsonl")
    with open(manifest, "w", encoding="utf-8") as file:
        file.writelines(json.dumps(entry) + "\n" for entry in entries)
    return manifest, entries


def make_text_file(path, sentences):
    with open(path, "w", encoding="utf-8") as file:
        file.writelines(sentence + "\n" for sentence in sentences)
    return path
