"""Corpus-layout readers: each returns a list of writer items (see writers.py).

Audio paths are resolved here; decoding, validation and sharding happen in
`writers.write_shards`. Every reader is registered in `READERS` under the
name the `make-tfrecords --format` flag uses. A line that cannot be read
(not UTF-8, not JSON) becomes a *bad item* `{"id", "bad": (source, reason,
detail)}`, which the writer reports as an error or, with `skip_bad`, a
counted skip.
"""

import csv
import glob
import json
import os

csv.field_size_limit(1 << 24)


def _item(audio, id, language, transcript="", translation="", target_language="", label=""):
    return {
        "id": id,
        "audio": audio,
        "language": language,
        "transcript": transcript or "",
        "translation": translation or "",
        "target_language": target_language or "",
        "label": label or "",
    }


def bad_item(source, reason, detail):
    """An item the writer refuses (or skips) with this reason; see writers.encode_item."""
    return {"id": source, "bad": (source, reason, detail)}


def _lines(path, bad_items):
    """(line number, text) of each UTF-8 line of `path`; undecodable lines go to `bad_items`."""
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                bad_items.append(
                    bad_item(
                        f"{path}:{number}",
                        "not_utf8",
                        f"{error.reason} at byte {error.start}: {raw[error.start : error.start + 4]!r}",
                    )
                )


def _require(value, what, source):
    if not value:
        raise ValueError(f"{source}: no {what}; pass --language")
    return value


def read_jsonl(path, kind="speech", language=None):
    """A JSONL manifest, one object per line.

    Speech: {"audio": path relative to the manifest, "text"?, "language"?,
    "translation"?, "target_language"?, "label"?, "id"?}. Text:
    {"text", "language"?, "id"?}. `language` fills missing languages.
    """
    base = os.path.dirname(os.path.abspath(path))
    items = []
    for number, line in _lines(path, items):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            items.append(bad_item(f"{path}:{number}", "not_json", str(error)))
            continue
        where = f"{path}:{number}"
        entry_language = _require(entry.get("language") or language, "language", where)
        if kind == "text":
            items.append(
                {
                    "id": entry.get("id") or f"{os.path.basename(path)}:{number}",
                    "text": entry["text"],
                    "language": entry_language,
                }
            )
            continue
        if "audio" not in entry:
            raise ValueError(f"{where}: missing 'audio'")
        audio = os.path.join(base, entry["audio"])
        items.append(
            _item(
                audio,
                id=entry.get("id") or os.path.splitext(entry["audio"])[0],
                language=entry_language,
                transcript=entry.get("text", ""),
                translation=entry.get("translation", ""),
                target_language=entry.get("target_language", ""),
                label=entry.get("label", ""),
            )
        )
    return items


def read_text(path, kind="text", language=None):
    """Plain text, one sentence per line (blank lines ignored); `path` may be a glob."""
    _require(language, "language", path)
    items = []
    for file_path in sorted(glob.glob(path)) or [path]:
        for number, line in _lines(file_path, items):
            sentence = line.strip()
            if sentence:
                items.append(
                    {
                        "id": f"{os.path.basename(file_path)}:{number}",
                        "text": sentence,
                        "language": language,
                    }
                )
    return items


def read_librispeech(root, kind="speech", language=None):
    """LibriSpeech: root/speaker/chapter/{id}.flac + {speaker}-{chapter}.trans.txt."""
    items = []
    for transcripts in sorted(glob.glob(os.path.join(root, "*", "*", "*.trans.txt"))):
        folder = os.path.dirname(transcripts)
        for _, line in _lines(transcripts, items):
            if line.strip():
                utterance, _, text = line.strip().partition(" ")
                items.append(
                    _item(
                        os.path.join(folder, utterance + ".flac"), utterance, language or "en", text
                    )
                )
    return items


def _rows(path, items, header=True, **csv_options):
    """CSV/TSV rows (dicts with `header`, else lists) of the UTF-8 lines of `path`; others go to `items` as bad items."""
    lines = (line for _, line in _lines(path, items))
    return csv.DictReader(lines, **csv_options) if header else csv.reader(lines, **csv_options)


def read_common_voice(path, kind="speech", language=None):
    """Common Voice (`validated.tsv` etc. beside `clips/`) or CoVoST 2.

    `path` is a Common Voice TSV (columns path, sentence, locale?) or a
    `covost_v2.{src}_{tgt}.tsv` (path, sentence, translation) placed in the
    Common Voice language folder, whose `clips/` holds the audio; languages
    come from the CoVoST file name, the locale column or `language`.
    """
    folder = os.path.dirname(os.path.abspath(path))
    clips = os.path.join(folder, "clips")
    name = os.path.basename(path)
    source_language = target_language = None
    if name.startswith("covost_v2."):
        source_language, target_language = name.split(".")[1].split("_")
    items = []
    for row in _rows(path, items, delimiter="\t", quoting=csv.QUOTE_NONE):
        row_language = _require(source_language or row.get("locale") or language, "language", path)
        items.append(
            _item(
                os.path.join(clips, row["path"]),
                id=os.path.splitext(row["path"])[0],
                language=row_language,
                transcript=row.get("sentence", ""),
                translation=row.get("translation", ""),
                target_language=target_language if row.get("translation") else "",
            )
        )
    return items


def read_fleurs(path, kind="speech", language=None):
    """FLEURS: `{lang}/{split}.tsv` with audio in `{lang}/audio/{split}/`.

    Columns (no header): id, file name, raw transcription, normalized
    transcription, ... The label is the language (language identification).
    """
    folder = os.path.dirname(os.path.abspath(path))
    split = os.path.splitext(os.path.basename(path))[0]
    language = language or os.path.basename(folder)
    audio_dirs = [os.path.join(folder, "audio", split), os.path.join(folder, "audio")]
    items = []
    for row in _rows(path, items, header=False, delimiter="\t", quoting=csv.QUOTE_NONE):
        audio = next(
            (
                os.path.join(d, row[1])
                for d in audio_dirs
                if os.path.exists(os.path.join(d, row[1]))
            ),
            os.path.join(audio_dirs[0], row[1]),
        )
        items.append(
            _item(
                audio,
                id=f"{language}/{os.path.splitext(row[1])[0]}",
                language=language,
                transcript=row[2],
                label=language,
            )
        )
    return items


def _first(row, names):
    return next((row[name] for name in names if row.get(name)), "")


def read_minds14(path, kind="speech", language=None):
    """MINDS-14: a CSV (filepath, text_asr, text_translated, intent) per locale.

    Audio paths are relative to the CSV's folder or its parent; the
    language defaults to the CSV's stem (e.g. "en-US"); the label is the intent.
    """
    folder = os.path.dirname(os.path.abspath(path))
    language = language or os.path.splitext(os.path.basename(path))[0]
    items = []
    for row in _rows(path, items):
        relative = _first(row, ("filepath", "path", "file"))
        candidates = [
            os.path.join(folder, relative),
            os.path.join(os.path.dirname(folder), relative),
        ]
        audio = next((c for c in candidates if os.path.exists(c)), candidates[0])
        items.append(
            _item(
                audio,
                id=os.path.splitext(relative)[0],
                language=language,
                transcript=_first(row, ("text_asr", "transcription", "text")),
                translation=_first(row, ("text_translated", "english_transcription")),
                target_language="en"
                if _first(row, ("text_translated", "english_transcription"))
                else "",
                label=_first(row, ("intent", "intent_class")),
            )
        )
    return items


READERS = {
    "jsonl": read_jsonl,
    "text": read_text,
    "librispeech": read_librispeech,
    "common_voice": read_common_voice,
    "covost": read_common_voice,
    "fleurs": read_fleurs,
    "minds14": read_minds14,
}
