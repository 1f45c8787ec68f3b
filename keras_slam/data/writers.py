"""Sharded TFRecord writers: items from a corpus reader -> shards + summary.

An *item* is a dict. Speech items: {"id", "audio" (path) or "pcm" (int16
(samples,) at 16 kHz, already in memory), "language", optional
"transcript", "translation", "target_language", "label"}. Text
items: {"id", "text", "language", optional "label"}. `keras_slam.data.corpora` turns corpus
layouts into items; `write_shards` decodes, validates, shards and
summarizes them.

Shards are named `{prefix}-{index:05d}-of-{count:05d}.tfrecord[.gz]`. Each is
written under a temporary name and renamed when complete, with its
statistics in `.stats/` beside it, so an interrupted run resumes by
skipping the shards that exist. A folder holding shards of another run
(another shard count, prefix or compression) is refused unless
`overwrite` clears it: readers take every shard in a folder.
"""

import functools
import json
import os
import shutil

import numpy as np
import tensorflow as tf
import tqdm

from keras_slam.data import audio as audio_lib
from keras_slam.data import schema, worker_pool

SUMMARY_NAME = "summary.json"
STATS_DIR = ".stats"


def load_charset(path):
    """The allowed characters listed in `path`.

    Accepts a plain character list (any layout) or a vocabulary with one
    entry per line (a SentencePiece `.vocab` "piece<TAB>score" works too;
    its "▁" counts as a space). The space is always allowed.
    """
    allowed = {" "}
    with open(path, encoding="utf-8") as file:
        for line in file:
            entry = line.rstrip("\n").split("\t")[0]
            allowed.update(entry.replace("\u2581", " "))
    return frozenset(allowed)


def check_text(source, text, charset):
    """Raises BadInputError when `text` is empty-ish or uses characters outside `charset`."""
    if charset is None:
        return
    outside = sorted(set(text) - charset)
    if outside:
        raise audio_lib.BadInputError(
            source, "bad_characters", "characters outside the charset: " + repr("".join(outside))
        )


def _check_utf8(source, item):
    """Raises BadInputError when a string field of `item` cannot be stored as UTF-8 (a lone surrogate)."""
    for field, value in item.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                raise audio_lib.BadInputError(
                    source,
                    "not_utf8",
                    f"{field}: {error.reason} {value[error.start]!r} at character {error.start}",
                ) from None


def encode_item(item, kind, charset=None, downmix=False, decoder="soundfile"):
    """One item -> (serialized example, seconds). Raises BadInputError.

    Whitespace-only transcripts and translations are stored empty, so such a
    record is not paired.
    """
    if "bad" in item:
        raise audio_lib.BadInputError(*item["bad"])
    source = item["id"] if kind == schema.TEXT else item.get("audio", item["id"])
    _check_utf8(source, item)
    if kind == schema.TEXT:
        if not item["text"].strip():
            raise audio_lib.BadInputError(source, "empty", "whitespace-only text")
        check_text(source, item["text"], charset)
        text = schema.text_example(
            item["id"], item["text"], item["language"], item.get("label", "")
        )
        return text, 0.0
    transcript, translation = (
        item.get(field, "") if item.get(field, "").strip() else ""
        for field in ("transcript", "translation")
    )
    check_text(source, transcript, charset)
    if "pcm" in item:
        pcm = item["pcm"]
        if not np.any(pcm):
            raise audio_lib.BadInputError(source, "silent", "all samples are zero")
    else:
        pcm = audio_lib.load_pcm(item["audio"], downmix=downmix, decoder=decoder)
    serialized = schema.speech_example(
        id=item["id"],
        pcm=pcm,
        language=item["language"],
        transcript=transcript,
        translation=translation,
        target_language=item.get("target_language", "") if translation else "",
        label=item.get("label", ""),
    )
    return serialized, len(pcm) / schema.SAMPLE_RATE


def _mark_duplicate_ids(items):
    """`items` with each repeat of an earlier id replaced by a bad item (reason "duplicate_id")."""
    first_seen = {}
    marked = []
    for index, item in enumerate(items):
        source = item.get("audio", item["id"])
        if "bad" not in item and item["id"] in first_seen:
            first_index, first_source = first_seen[item["id"]]
            detail = f"id {item['id']!r} is also item {first_index} ({first_source})"
            item = {"id": item["id"], "bad": (source, "duplicate_id", detail)}
        else:
            first_seen.setdefault(item["id"], (index, source))
        marked.append(item)
    return marked


def _encode_safely(indexed_item, **options):
    """Pool worker: never raises on bad input, returns the error instead."""
    index, item = indexed_item
    try:
        serialized, seconds = encode_item(item, **options)
        return index, serialized, seconds, None
    except audio_lib.BadInputError as error:
        return index, None, 0.0, (error.source, error.reason, error.detail)


def shard_names(prefix, num_shards, compress):
    suffix = ".tfrecord.gz" if compress else ".tfrecord"
    return [f"{prefix}-{index:05d}-of-{num_shards:05d}{suffix}" for index in range(num_shards)]


def _empty_stats():
    return {"num_records": 0, "seconds": 0.0, "languages": {}, "skipped": []}


def _merge_stats(stats, more):
    stats["num_records"] += more["num_records"]
    stats["seconds"] += more["seconds"]
    for language, totals in more["languages"].items():
        entry = stats["languages"].setdefault(language, {"records": 0, "seconds": 0.0})
        entry["records"] += totals["records"]
        entry["seconds"] += totals["seconds"]
    stats["skipped"].extend(more["skipped"])


def write_json(path, payload):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(payload, file, indent=2, ensure_ascii=False)
    os.replace(temporary, path)


def _clear_or_refuse(output_dir, names, kind, overwrite):
    """Makes `output_dir` safe to write `names` into: empty, or a resumable run of the same command.

    Raises FileExistsError naming the shards or summary of another run,
    unless `overwrite`, which deletes them (and the statistics) first.
    """
    if not os.path.isdir(output_dir):
        return
    shards = sorted(name for name in os.listdir(output_dir) if ".tfrecord" in name)
    summary_path = os.path.join(output_dir, SUMMARY_NAME)
    summary = None
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as file:
            summary = json.load(file)
    if overwrite:
        for name in shards:
            os.remove(os.path.join(output_dir, name))
        shutil.rmtree(os.path.join(output_dir, STATS_DIR), ignore_errors=True)
        if summary is not None:
            os.remove(summary_path)
        return
    foreign = [name for name in shards if name not in names and not name.endswith(".incomplete")]
    if foreign:
        raise FileExistsError(
            f"{output_dir} holds {len(foreign)} shard(s) of another run ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
            "readers would take them too: pass overwrite (--overwrite) to replace them, or choose an empty folder"
        )
    if summary is not None and (summary.get("shards") != names or summary.get("kind") != kind):
        raise FileExistsError(
            f"{summary_path} describes another run (kind {summary.get('kind')!r}, {len(summary.get('shards', []))} shard(s)); "
            "pass overwrite (--overwrite) to replace it, or choose an empty folder"
        )


def write_shards(
    items,
    output_dir,
    kind=schema.SPEECH,
    prefix="shard",
    num_shards=None,
    shard_size=None,
    num_workers=1,
    compress=False,
    skip_bad=False,
    charset=None,
    downmix=False,
    decoder="soundfile",
    progress=True,
    overwrite=False,
):
    """Writes `items` to sharded TFRecords and returns the summary dict.

    Args:
        items: list of item dicts (see module docstring); their order fixes
            which shard each item lands in (contiguous chunks).
        output_dir: folder for the shards and `summary.json`.
        kind: "speech" or "text".
        num_shards / shard_size: how to split (at most one; default 1 shard).
        num_workers: decoding processes (multiprocessing).
        compress: GZIP shards (`.tfrecord.gz`).
        skip_bad: skip bad items (undecodable audio or text, repeated ids,
            ...) with a reason in the summary; otherwise the first bad item
            raises BadInputError naming the file and problem.
        charset: allowed transcript/text characters (set) or None.
        downmix: average multi-channel audio instead of rejecting it.
        decoder: "soundfile" or "tfio".
        progress: show a tqdm progress bar.
        overwrite: delete shards, statistics and summary of an earlier run
            in `output_dir` first; without it a folder holding another run's
            shards or summary raises FileExistsError (the same run resumes).
    Returns:
        {"kind", "num_records", "hours", "languages": {lang: {"records",
        "hours"}}, "num_skipped", "skipped": [{"source", "reason", "detail"}],
        "shards": [file names], "resumed_shards": int}; also written to
        `output_dir/summary.json`.
    """
    if kind not in schema.KINDS:
        raise ValueError(f"kind must be one of {schema.KINDS}, got {kind!r}")
    if num_shards and shard_size:
        raise ValueError("pass num_shards or shard_size, not both")
    items = _mark_duplicate_ids(list(items))
    if not items:
        raise ValueError("no items to write")
    if shard_size:
        num_shards = -(-len(items) // shard_size)
    num_shards = min(num_shards or 1, len(items))
    names = shard_names(prefix, num_shards, compress)
    bounds = [round(index * len(items) / num_shards) for index in range(num_shards + 1)]
    _clear_or_refuse(output_dir, names, kind, overwrite)
    os.makedirs(os.path.join(output_dir, STATS_DIR), exist_ok=True)

    def stats_path(name):
        return os.path.join(output_dir, STATS_DIR, name + ".json")

    total = _empty_stats()
    pending = []
    for index, name in enumerate(names):
        if os.path.exists(os.path.join(output_dir, name)) and os.path.exists(stats_path(name)):
            with open(stats_path(name), encoding="utf-8") as file:
                _merge_stats(total, json.load(file))
        else:
            pending.append(index)
    resumed = num_shards - len(pending)

    encode = functools.partial(
        _encode_safely, kind=kind, charset=charset, downmix=downmix, decoder=decoder
    )
    work = [
        (position, items[position])
        for shard in pending
        for position in range(bounds[shard], bounds[shard + 1])
    ]
    pool = worker_pool.make_pool(num_workers)
    results = worker_pool.pool_map(encode, work, pool, chunksize=4)
    bar = tqdm.tqdm(
        total=len(items), initial=len(items) - len(work), disable=not progress, unit="item"
    )
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compress else "")
    try:
        results = iter(results)
        for shard in pending:
            final_path = os.path.join(output_dir, names[shard])
            temporary_path = final_path + ".incomplete"
            stats = _empty_stats()
            with tf.io.TFRecordWriter(temporary_path, options) as writer:
                for _ in range(bounds[shard], bounds[shard + 1]):
                    position, serialized, seconds, error = next(results)
                    bar.update(1)
                    if error is not None:
                        if not skip_bad:
                            raise audio_lib.BadInputError(*error)
                        stats["skipped"].append(dict(zip(("source", "reason", "detail"), error)))
                        continue
                    writer.write(serialized)
                    language = items[position]["language"]
                    entry = stats["languages"].setdefault(language, {"records": 0, "seconds": 0.0})
                    entry["records"] += 1
                    entry["seconds"] += seconds
                    stats["num_records"] += 1
                    stats["seconds"] += seconds
            write_json(stats_path(names[shard]), stats)
            os.replace(temporary_path, final_path)
            _merge_stats(total, stats)
    except BaseException:
        if "temporary_path" in locals() and os.path.exists(temporary_path):
            os.remove(temporary_path)
        raise
    finally:
        bar.close()
        worker_pool.release_pool(pool)

    summary = {
        "kind": kind,
        "num_records": total["num_records"],
        "hours": total["seconds"] / 3600.0,
        "languages": {
            language: {"records": entry["records"], "hours": entry["seconds"] / 3600.0}
            for language, entry in sorted(total["languages"].items())
        },
        "num_skipped": len(total["skipped"]),
        "skipped": total["skipped"],
        "shards": names,
        "compression": "GZIP" if compress else None,
        "resumed_shards": resumed,
    }
    write_json(os.path.join(output_dir, SUMMARY_NAME), summary)
    return summary
