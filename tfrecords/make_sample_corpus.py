"""Regenerates the bundled multilingual sample corpus (tfrecords/sample/).

Real sentences from Debian's fortune collections are spoken by espeak-ng
with varied voices, speeds and pitches, then written as GZIP TFRecord
shards with the keras-slam writer. Everything runs offline and is
deterministic for a given seed and espeak-ng version.

    python tfrecords/make_sample_corpus.py                  # the committed corpus
    python tfrecords/make_sample_corpus.py --scale 10 --output /data/sample10
    python tfrecords/make_sample_corpus.py --num-utterances 20000 --output /data/big

Steps: (1) extract, clean and split sentences, (2) synthesise WAVs into a
work directory, (3) write JSONL manifests and text files per kind/split,
(4) write shards under <output>/<kind>/<split>/<language>/, (5) write a
summary.

Needs: `apt-get install espeak-ng fortunes fortunes-de fortunes-es fortunes-it`.
The committed corpus was made with Debian's espeak-ng 1.51 command line and
regenerates byte-identically only with it; the espeak-ng 1.52 of the
`espeakng-loader` wheel speaks differently. Larger corpora need no apt:
`keras-slam synth-corpus` (keras_slam/data/synth_corpus.py) speaks the
bundled text with the wheel.
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

# Shared with the pip synthesiser (keras-slam synth-corpus), which needs none of apt.
from keras_slam.data.synth import (
    PEAK_LEVEL,
    PITCH_RANGE,
    RATE_RANGE,
    TRIM_THRESHOLD_DB,
    VARIANTS,
    trim_and_normalise,
)

FORTUNE_DIR = Path("/usr/share/games/fortunes")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "sample"
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "keras_slam_sample_corpus_work"
ESPEAK = "espeak-ng"
INSTALL_HINT = (
    "sudo apt-get update && sudo apt-get install -y espeak-ng "
    "fortunes fortunes-de fortunes-es fortunes-it"
)

PAIRED, SPEECH_ONLY, TEXT_ONLY = "paired", "speech", "text"
TRAIN, DEV, TEST = "train", "dev", "test"

MIN_WORDS, MAX_WORDS, MAX_CHARS = 3, 16, 110


@dataclasses.dataclass(frozen=True)
class Language:
    code: str
    package: str
    version: str
    license: str
    files: tuple  # fortune files (relative to FORTUNE_DIR) known to be clean
    voices: tuple  # espeak-ng voices
    letters: str  # letters beyond a-z/A-Z that the transcripts may hold
    blocked: str  # word stems (regex) of vulgar words: a bundled corpus stays polite
    counts: dict  # (kind, split) -> utterances (audio) or sentences (text)


def _counts(train, dev, test, speech, text):
    return {
        (PAIRED, TRAIN): train,
        (PAIRED, DEV): dev,
        (PAIRED, TEST): test,
        (SPEECH_ONLY, TRAIN): speech,
        (TEXT_ONLY, TRAIN): text,
    }


LANGUAGES = (
    Language(
        "en",
        "fortunes (source fortune-mod)",
        "1:1.99.1-7.3",
        "BSD-3-Clause (University of California copyright, Debian copyright file)",
        (
            "wisdom",
            "platitudes",
            "people",
            "education",
            "food",
            "kids",
            "love",
            "pets",
            "science",
            "sports",
            "work",
            "humorists",
            "art",
            "songs-poems",
            "tao",
            "goedel",
            "magic",
            "medicine",
            "law",
            "pratchett",
            "computers",
            "miscellaneous",
        ),
        (
            "en-us",
            "en-gb",
            "en-gb-scotland",
            "en-gb-x-rp",
            "en-us-nyc",
            "en-029",
            "en-gb-x-gbclan",
            "en-gb-x-gbcwmd",
        ),
        "",
        r"fuck|shit|cunt|bitch|whore|nigg|fag|slut|dick\b|cock|piss|bastard|rap(e|ed|es|ist)\b"
        r"|penis|vagin|sex|porn|ass\b|asshole|damn|tits?\b|boob|god ?dam",
        _counts(train=240, dev=20, test=20, speech=20, text=7000),
    ),
    Language(
        "de",
        "fortunes-de",
        "0.35-1",
        "GPL-2.0-or-later",
        (
            "de/zitate",
            "de/sprichworte",
            "de/wusstensie",
            "de/letzteworte",
            "de/murphy",
            "de/regeln",
            "de/tips",
            "de/mathematiker",
            "de/anekdoten",
        ),
        ("de",),
        "äöüÄÖÜß",
        r"schei(ß|ss)|arsch|fick|hure|neger|schwuchtel|fotze|wichs|sex|porn|titte|piss"
        r"|kack|vergewalt|nutte",
        _counts(train=30, dev=8, test=8, speech=6, text=6000),
    ),
    Language(
        "es",
        "fortunes-es",
        "1.36",
        "public domain (quotations, per the Debian copyright file); scripts GPL-2.0-or-later",
        tuple(
            f"es/{name}.fortunes"
            for name in (
                "amistad",
                "arte",
                "asimov",
                "ciencia",
                "familia",
                "famosos",
                "filosofia",
                "humanos",
                "informatica",
                "lao-tse",
                "leydemurphy",
                "libertad",
                "nietzsche",
                "poder",
                "proverbios",
                "refranes",
                "sabiduria",
                "schopenhauer",
                "sentimientos",
                "verdad",
                "vida",
            )
        ),
        ("es", "es-419"),
        "áéíóúüñÁÉÍÓÚÜÑ¿¡",
        r"put[ao]s?\b|mierd|culo|coño|jod[eií]|cabr[oó]n|maric|polla|pendej|sex|verga|foll"
        r"|tet[ao]s?\b|cojon|viola[rcd]|porn|put[ií]",
        _counts(train=30, dev=8, test=8, speech=6, text=6000),
    ),
    Language(
        "it",
        "fortunes-it",
        "1.99-4.1",
        'public domain / freeware ("you may do whatever you want", Debian copyright file)',
        (
            "it/italia",
            "it/leggi",
            "it/definizioni",
            "it/computer",
            "it/adams",
            "it/norm",
            "it/zuse",
        ),
        ("it",),
        "àèéìíòóùúÀÈÉÌÒÙ",
        r"cazz|merd|culo|fica\b|figa|troi[ae]|puttan|stronz|froci|negr[oi]\b|sesso|sessual"
        r"|vaffanc|coglion|porn|scopa(re|to|ta)\b|tette",
        _counts(train=30, dev=8, test=8, speech=6, text=4000),
    ),
)
LANGUAGE_BY_CODE = {language.code: language for language in LANGUAGES}

# ---------------------------------------------------------------- sentences

_TYPOGRAPHY = str.maketrans(
    {
        "’": "'",
        "‘": "'",
        "`": "'",
        "´": "'",
        "“": "",
        "”": "",
        "„": "",
        "«": "",
        "»": "",
        '"': "",
        "\u00a0": " ",
    }
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_ACRONYM = re.compile(r"\b[A-ZÄÖÜÁÉÍÓÚÑÀÈÌÒÙ]{2,}\b")
# Old Italian typing writes accents as apostrophes: "e'" -> "è", "perche'" -> "perché".
_ITALIAN_ACUTE = re.compile(r"\b(\w*ch)e'(?=\W|$)", re.IGNORECASE)
_ITALIAN_GRAVE = re.compile(r"\b(\w*[^\W\d_])([aeiou])'(?=\W|$)", re.IGNORECASE)
_GRAVE = {"a": "à", "e": "è", "i": "ì", "o": "ò", "u": "ù"}


def _fix_italian_accents(text):
    text = _ITALIAN_ACUTE.sub(lambda m: m.group(1) + "é", text)
    text = re.sub(r"\b([Ee])'(?=\W|$)", lambda m: "è" if m.group(1) == "e" else "È", text)

    def grave(match):
        stem, vowel = match.group(1), match.group(2)
        if (stem + vowel).lower() == "po":  # "po'" (poco) is a true elision
            return match.group(0)
        accented = _GRAVE[vowel.lower()]
        return stem + (accented.upper() if vowel.isupper() else accented)

    return _ITALIAN_GRAVE.sub(grave, text)


def _fortunes(path):
    """Yields the fortunes of one file as lists of lines, attributions dropped."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for block in re.split(r"^%\s*$", text, flags=re.MULTILINE):
        lines = [line.strip() for line in block.splitlines()]
        lines = [line for line in lines if line and not line.startswith(("--", "—"))]
        if lines:
            yield lines


def _is_prose(lines):
    """Rejects ASCII art, tables and dialogue scripts."""
    body = "".join(lines)
    letters = sum(char.isalpha() for char in body)
    return letters >= 0.75 * len(body.replace(" ", "")) and not any(
        line.endswith(":") for line in lines
    )


def allowed_characters(language):
    return set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,.!?;'-") | set(
        language.letters
    )


def clean_sentence(sentence, language, allowed):
    """Returns the normalised sentence, or None when it is unsuitable."""
    sentence = unicodedata.normalize("NFC", sentence).translate(_TYPOGRAPHY)
    sentence = " ".join(sentence.split())
    if language.code == "it":
        sentence = _fix_italian_accents(sentence)
    words = sentence.split()
    opening = sentence.lstrip("¿¡")
    if not (MIN_WORDS <= len(words) <= MAX_WORDS and len(sentence) <= MAX_CHARS):
        return None
    if not opening or not opening[0].isupper() or sentence[-1] not in ".!?":
        return None
    if set(sentence) - allowed or "--" in sentence:
        return None
    # One terminal mark only: an inner '.' is an abbreviation or an ellipsis.
    if re.search(r"[.!?]", sentence[:-1].rstrip(".!?")) or sentence.endswith(".."):
        return None
    if _ACRONYM.search(sentence) or re.search(r"\s[,.;!?]|[,;]\S", sentence):
        return None  # espeak spells acronyms letter by letter; broken spacing
    if re.search(r"(^|\s)['-]|['-](\s|$)", sentence):
        return None  # quote marks or dashes used as punctuation
    if re.search(r"\b(" + language.blocked + ")", sentence, re.IGNORECASE):
        return None
    return sentence


def sentence_key(sentence):
    """Case- and punctuation-free key: sentences equal under it are one sentence."""
    return " ".join(re.sub(r"[^\w\s]", " ", sentence.lower()).split())


def extract_sentences(language):
    """All usable sentences of a language, deduplicated, sorted by key.

    Returns:
        list of (sentence, source file name).
    """
    allowed = allowed_characters(language)
    by_key = {}
    for name in language.files:
        path = FORTUNE_DIR / name
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: install {language.package.split()[0]} ({INSTALL_HINT})"
            )
        for lines in _fortunes(path):
            if not _is_prose(lines):
                continue
            for piece in _SENTENCE_END.split(" ".join(lines)):
                sentence = clean_sentence(piece, language, allowed)
                if sentence:
                    by_key.setdefault(sentence_key(sentence), (sentence, name))
    return [by_key[key] for key in sorted(by_key)]


# ---------------------------------------------------------------- planning


@dataclasses.dataclass
class Item:
    id: str
    language: str
    kind: str
    split: str
    text: str
    source: str
    voice: str = ""
    speed: int = 0
    pitch: int = 0
    audio: str = ""  # WAV path relative to the work directory
    duration: float = 0.0  # seconds after trimming


def scaled_counts(args):
    """(language, kind, split) -> count, from --scale or --num-utterances."""
    counts = {
        (language.code, *key): value
        for language in LANGUAGES
        if language.code in args.languages
        for key, value in language.counts.items()
    }
    audio_total = sum(value for (_, kind, _), value in counts.items() if kind != TEXT_ONLY)
    factor = args.scale
    if args.num_utterances:
        factor = args.num_utterances / audio_total
    return {key: max(1, round(value * factor)) for key, value in counts.items()}


def allocate(num_sentences, wanted):
    """Splits sentence indices 0..num_sentences-1 (already shuffled) among pools.

    Dev and test come first and are always unique. When the rest cannot give
    every train pool its own sentences, the train pools shrink in proportion
    and the audio pools repeat their sentences with fresh voices (never
    crossing into dev/test).

    Args:
        num_sentences: size of the language's sentence list.
        wanted: {(kind, split): count}.
    Returns:
        {(kind, split): list of positions into the shuffled list}.
    """
    pools, cursor = {}, 0
    for key in ((PAIRED, DEV), (PAIRED, TEST)):
        pools[key] = list(range(cursor, min(cursor + wanted[key], num_sentences)))
        cursor += len(pools[key])
    train_keys = ((PAIRED, TRAIN), (SPEECH_ONLY, TRAIN), (TEXT_ONLY, TRAIN))
    left = num_sentences - cursor
    shrink = min(1.0, left / max(1, sum(wanted[key] for key in train_keys)))
    for key in train_keys:
        unique = list(range(cursor, cursor + int(wanted[key] * shrink)))
        cursor += len(unique)
        if key[0] != TEXT_ONLY and unique:
            unique = [unique[index % len(unique)] for index in range(wanted[key])]
        pools[key] = unique
    return pools


def plan(args):
    """Step 1: picks sentences per (language, kind, split) and draws voices."""
    counts = scaled_counts(args)
    items = []
    for language_index, language in enumerate(LANGUAGES):
        if language.code not in args.languages:
            continue
        # One stream per language: changing one language's counts leaves the others.
        rng = np.random.default_rng([args.seed, language_index])
        sentences = extract_sentences(language)
        order = rng.permutation(len(sentences))
        wanted = {key: counts[(language.code, *key)] for key in language.counts}
        for (kind, split), positions in allocate(len(sentences), wanted).items():
            if len(positions) < wanted[(kind, split)] or len(set(positions)) < len(positions):
                print(
                    f"note: {language.code} {kind}/{split}: {len(set(positions))} unique "
                    f"sentences for {wanted[(kind, split)]} wanted",
                    file=sys.stderr,
                )
            for index, position in enumerate(positions):
                text, source = sentences[order[position]]
                item = Item(
                    f"{language.code}-{kind}-{split}-{index:05d}",
                    language.code,
                    kind,
                    split,
                    text,
                    source,
                )
                if kind != TEXT_ONLY:
                    variant = VARIANTS[rng.integers(len(VARIANTS))]
                    voice = language.voices[rng.integers(len(language.voices))]
                    item.voice = f"{voice}+{variant}" if variant else voice
                    item.speed = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
                    item.pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
                items.append(item)
    return items


# ---------------------------------------------------------------- synthesis


def check_espeak():
    if shutil.which(ESPEAK) is None:
        sys.exit(f"{ESPEAK} not found. Install it with:\n  {INSTALL_HINT}")
    version = subprocess.run([ESPEAK, "--version"], check=True, capture_output=True, text=True)
    return version.stdout.strip()


def synthesise(item, work_dir):
    """Step 2 for one item: speaks, trims and stores a 22.05 kHz PCM_16 WAV.
    The file name hashes the text and voice, so reruns reuse it."""
    digest = hashlib.sha1(
        f"{item.text}|{item.voice}|{item.speed}|{item.pitch}|{PEAK_LEVEL}|"
        f"{TRIM_THRESHOLD_DB}".encode()
    ).hexdigest()[:16]
    relative = Path("wav") / item.language / f"{digest}.wav"
    path = work_dir / relative
    if not path.exists():
        raw = path.with_suffix(".raw.wav")
        subprocess.run(
            [
                ESPEAK,
                "-v",
                item.voice,
                "-s",
                str(item.speed),
                "-p",
                str(item.pitch),
                "-b",
                "1",
                "--stdin",
                "-w",
                str(raw),
            ],
            input=item.text.encode("utf-8"),
            check=True,
            capture_output=True,
        )
        audio, rate = soundfile.read(raw, dtype="float64")
        raw.unlink()
        audio = trim_and_normalise(audio, rate)
        soundfile.write(path.with_suffix(".tmp.wav"), audio, rate, subtype="PCM_16")
        os.replace(path.with_suffix(".tmp.wav"), path)
    item.audio = str(relative)
    item.duration = soundfile.info(path).duration
    return item


def synthesise_all(items, work_dir, jobs):
    speech_items = [item for item in items if item.kind != TEXT_ONLY]
    for language in {item.language for item in speech_items}:
        (work_dir / "wav" / language).mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(synthesise, item, work_dir) for item in speech_items]
        for future in tqdm(
            concurrent.futures.as_completed(futures),
            total=len(futures),
            desc="espeak-ng",
            unit="utt",
        ):
            future.result()


# ---------------------------------------------------------------- manifests


def manifest_path(work_dir, kind, split, language):
    suffix = "txt" if kind == TEXT_ONLY else "jsonl"
    return work_dir / "manifests" / kind / split / f"{language}.{suffix}"


def write_manifests(items, work_dir):
    """Step 3: one writer manifest per (kind, split, language).

    Paired rows carry the transcript; speech-only rows leave it empty (their
    text stays only in metadata.jsonl); text-only data is one sentence a line.
    Every speech row is labelled with its language (a language-ID task).
    """
    groups = collections.defaultdict(list)
    for item in items:
        groups[(item.kind, item.split, item.language)].append(item)
    paths = {}
    for (kind, split, language), group in sorted(groups.items()):
        path = manifest_path(work_dir, kind, split, language)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as file:
            for item in group:
                if kind == TEXT_ONLY:
                    file.write(item.text + "\n")
                    continue
                row = {
                    "id": item.id,
                    "audio": os.path.relpath(work_dir / item.audio, path.parent),
                    "text": item.text if kind == PAIRED else "",
                    "language": language,
                    "translation": "",
                    "label": language,
                }
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
        paths[(kind, split, language)] = path
    return paths


def write_metadata(items, output):
    """Every utterance with its transcript and synthesis settings."""
    with (output / "metadata.jsonl").open("w", encoding="utf-8") as file:
        for item in items:
            if item.kind == TEXT_ONLY:
                continue
            row = {
                key: getattr(item, key)
                for key in (
                    "id",
                    "language",
                    "kind",
                    "split",
                    "text",
                    "voice",
                    "speed",
                    "pitch",
                )
            }
            row["duration"] = round(item.duration, 3)
            row["source"] = f"{LANGUAGE_BY_CODE[item.language].package.split()[0]}:{item.source}"
            file.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_sources(output, espeak_version):
    sources = {
        "synthesiser": {
            "program": "espeak-ng (Debian package espeak-ng)",
            "version": espeak_version,
            "license": "GPL-3.0-or-later",
            "variants": list(VARIANTS),
            "speed_wpm": list(RATE_RANGE),
            "pitch": list(PITCH_RANGE),
        },
        "languages": {},
    }
    for language in LANGUAGES:
        sources["languages"][language.code] = {
            "package": language.package,
            "version": language.version,
            "license": language.license,
            "voices": list(language.voices),
            "files": [str(FORTUNE_DIR / name) for name in language.files],
        }
    (output / "sources.json").write_text(
        json.dumps(sources, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


# ---------------------------------------------------------------- shards

SHARD_SIZE = {SPEECH_ONLY: 100, PAIRED: 100, TEXT_ONLY: 2500}
GENERATED = (
    PAIRED,
    SPEECH_ONLY,
    TEXT_ONLY,
    "metadata.jsonl",
    "sources.json",
    "summary.json",
)


def write_all_shards(manifests, output, jobs):
    """Step 4: GZIP shards under <output>/<kind>/<split>/<language>/."""
    from keras_slam.data import corpora, writers

    summaries = {}
    for (kind, split, language), path in sorted(manifests.items()):
        print(f"writing {kind}/{split}/{language}")
        if kind == TEXT_ONLY:
            items = corpora.read_text(str(path), kind="text", language=language)
        else:
            items = corpora.read_jsonl(str(path), kind="speech")
        directory = output / kind / split / language
        summaries[(kind, split, language)] = writers.write_shards(
            items,
            str(directory),
            kind="text" if kind == TEXT_ONLY else "speech",
            prefix=language,
            shard_size=SHARD_SIZE[kind],
            compress=True,
            # Spawning decoder processes costs more than a few hundred files.
            num_workers=jobs if kind != TEXT_ONLY and len(items) > 500 else 1,
            progress=False,
        )
        # The writer's per-shard resume notes are no use in a committed corpus.
        shutil.rmtree(directory / writers.STATS_DIR, ignore_errors=True)
    return summaries


def _tfrecord_bytes(path):
    """(compressed, uncompressed) size of a GZIP shard."""
    with gzip.open(path, "rb") as file:
        uncompressed = sum(len(chunk) for chunk in iter(lambda: file.read(1 << 20), b""))
    return path.stat().st_size, uncompressed


def write_summary(output, summaries, items, seed):
    """Step 5: counts, hours and sizes per kind/split/language -> summary.json."""
    sentences = collections.Counter((item.kind, item.split, item.language) for item in items)
    table, totals = [], collections.Counter()
    for (kind, split, language), summary in sorted(summaries.items()):
        compressed = uncompressed = 0
        for name in summary["shards"]:
            sizes = _tfrecord_bytes(output / kind / split / language / name)
            compressed += sizes[0]
            uncompressed += sizes[1]
        row = {
            "kind": kind,
            "split": split,
            "language": language,
            "records": summary["num_records"],
            "hours": round(summary["hours"], 4),
            "shards": len(summary["shards"]),
            "bytes": compressed,
            "uncompressed_bytes": uncompressed,
        }
        if summary["num_records"] != sentences[(kind, split, language)]:
            raise RuntimeError(
                f"{kind}/{split}/{language}: {summary['num_records']} "
                f"records for {sentences[(kind, split, language)]} items"
            )
        table.append(row)
        audio = "audio" if kind != TEXT_ONLY else "text"
        totals[f"{audio}_bytes"] += compressed
        totals[f"{audio}_uncompressed_bytes"] += uncompressed
        totals["hours"] += summary["hours"]
    total_bytes = sum(path.stat().st_size for path in output.rglob("*") if path.is_file())
    result = {
        "seed": seed,
        "hours": round(totals["hours"], 4),
        "utterances": sum(row["records"] for row in table if row["kind"] != TEXT_ONLY),
        "sentences_text_only": sum(row["records"] for row in table if row["kind"] == TEXT_ONLY),
        "audio_compression_ratio": round(
            totals["audio_uncompressed_bytes"] / totals["audio_bytes"], 3
        ),
        "text_compression_ratio": round(
            totals["text_uncompressed_bytes"] / totals["text_bytes"], 3
        ),
        "shard_bytes": totals["audio_bytes"] + totals["text_bytes"],
        "total_bytes_before_this_file": total_bytes,
        "shards": table,
    }
    (output / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def clear_output(output):
    """Removes what an earlier run generated (the writer would resume from it);
    hand-written files such as README.md stay."""
    for name in GENERATED:
        path = output / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def print_table(result):
    print(f"{'kind':8}{'split':7}{'lang':6}{'records':>8}{'minutes':>9}{'KB':>8}")
    for row in result["shards"]:
        print(
            f"{row['kind']:8}{row['split']:7}{row['language']:6}{row['records']:8d}"
            f"{row['hours'] * 60:9.2f}{row['bytes'] / 1024:8.0f}"
        )
    print(
        f"{result['utterances']} utterances, {result['hours']:.3f} h, "
        f"{result['sentences_text_only']} text-only sentences, "
        f"{result['total_bytes_before_this_file'] / 1e6:.2f} MB, audio GZIP ratio "
        f"{result['audio_compression_ratio']}"
    )


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="corpus directory (default: tfrecords/sample)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help="WAVs and manifests; WAVs are reused across runs",
    )
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every default count (utterances and sentences)",
    )
    scale.add_argument(
        "--num-utterances",
        type=int,
        help="total utterances over --languages, spread like the defaults",
    )
    parser.add_argument(
        "--languages",
        nargs="+",
        default=[language.code for language in LANGUAGES],
        choices=[language.code for language in LANGUAGES],
    )
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--manifests-only",
        action="store_true",
        help="stop after step 3 (sentences, WAVs, manifests)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    espeak_version = check_espeak()
    work_dir = args.work_dir.resolve()
    output = args.output.resolve()
    items = plan(args)
    synthesise_all(items, work_dir, args.jobs)
    manifests = write_manifests(items, work_dir)
    print(f"manifests under {work_dir / 'manifests'}")
    if args.manifests_only:
        return
    output.mkdir(parents=True, exist_ok=True)
    clear_output(output)
    summaries = write_all_shards(manifests, output, args.jobs)
    write_metadata(items, output)
    write_sources(output, espeak_version)
    print_table(write_summary(output, summaries, items, args.seed))


if __name__ == "__main__":
    main()
