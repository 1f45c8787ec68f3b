"""tf.data pipelines: TFRecord shards -> fixed-shape, masked training batches.

    shards --list_shards (per-host)--> read_records (verified, parsed)
        speech: int16 PCM -> float -> bucket by duration -> pad to the bucket
                -> batch -> log-mel in graph (the front end) [-> tokens]
        text:   tokenize -> cap length -> bucket by length -> pad -> batch
    mix_streams({"speech": ..., "text": ..., "paired": ...}) -> one element
    per training step, a dict of fixed-shape sub-batches.

Shapes are fixed per bucket: a bucket's batches are always padded to the
bucket's longest length and its batch size, so an XLA backend compiles once
per bucket (per combination of buckets when streams are mixed). The last,
partial batch of a bucket is either padded with fully-masked rows
(`remainder="pad"`, the default: every example is seen) or dropped
(`remainder="drop"`). Under a data-parallel `--mesh` (keras_slam.distribution)
every batch size is rounded up to a multiple of the devices it is split over,
so each device gets an equal part (a bucket's batches then hold a few more
examples; a partial one is filled with masked rows). Audio is never truncated:
an utterance longer than the last bucket is an error or, with
`too_long="skip"`, a counted skip. Text-only sequences are capped at
`max_length` tokens (mSLAM: 512 characters).

Speech batch: {"speech_features" (B, T, F) float32, "speech_padding_mask"
(B, T) float32, ["token_ids" (B, L) int32, "token_padding_mask" (B, L)
float32 when paired], ["translation_ids" (B, L') int32,
"translation_padding_mask" (B, L') float32 with a translation tokenizer],
["language" (B,) int32], ["target_language" (B,) int32], ["label" (B,) int32]}.
Text batch: {"token_ids" (B, L) int32, "token_padding_mask" (B, L) float32,
["language" (B,) int32], ["label" (B,) int32]}. Strings never leave the pipeline (JAX and torch
cannot take them): languages and labels become indices into the given lists.
Padded rows have all-zero masks, token ids 0, language/label -1.
"""

import contextlib
import dataclasses
import glob
import gzip
import json
import logging
import os

import numpy as np
import tensorflow as tf
from google.protobuf import message

from keras_slam import distribution
from keras_slam.data import framing, schema

AUTOTUNE = tf.data.AUTOTUNE
logger = logging.getLogger(__name__)
PCM_SCALE = 32768.0


class CorruptShardError(ValueError):
    """A shard record that cannot be read; names the shard and record index."""


# ------------------------------------------------------------------ shards


def _folder_shards(folder):
    """The shards of a folder; they must be those its writer's summary.json lists, if it has one."""
    files = glob.glob(os.path.join(folder, "*.tfrecord")) + glob.glob(
        os.path.join(folder, "*.tfrecord.gz")
    )
    summary_path = os.path.join(folder, "summary.json")
    if not os.path.exists(summary_path):
        return files
    with open(summary_path, encoding="utf-8") as file:
        summary = json.load(file)
    if summary.get("kind") not in schema.KINDS or "shards" not in summary:
        return files  # not a writers.write_shards summary (e.g. a corpus-wide one)
    listed = summary["shards"]
    found = sorted(os.path.basename(f) for f in files)
    if found != sorted(listed):
        extra, missing = sorted(set(found) - set(listed)), sorted(set(listed) - set(found))
        raise ValueError(
            f"{folder}: the shards disagree with summary.json (not listed: {extra[:3]}{' ...' if len(extra) > 3 else ''}, "
            f"missing: {missing[:3]}{' ...' if len(missing) > 3 else ''}); rewrite the folder with make-tfrecords --overwrite"
        )
    return files


def list_shards(paths, num_hosts=1, host_index=0):
    """Sorted shard files of this host.

    Args:
        paths: a folder (its `*.tfrecord` and `*.tfrecord.gz`, which must
            be those its summary.json lists, if any), a glob, a file, or a
            list of these. Unfinished shards (`*.incomplete`, see
            writers.py) never match.
        num_hosts, host_index: host `host_index` gets files
            `host_index::num_hosts`, so hosts read disjoint shards.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for path in map(str, paths):
        if os.path.isdir(path):
            files += _folder_shards(path)
        else:
            files += glob.glob(path) or [path]
    files = sorted({f for f in files if not f.endswith(".incomplete")})
    if not files:
        raise FileNotFoundError(f"no shards in {paths}")
    if not 0 <= host_index < num_hosts:
        raise ValueError(f"host_index {host_index} outside [0, {num_hosts})")
    host_files = files[host_index::num_hosts]
    if not host_files:
        raise ValueError(
            f"{len(files)} shards cannot feed {num_hosts} hosts; host {host_index} gets none"
        )
    return host_files


def host_shards(paths):
    """The sorted training shards of `paths` (as `list_shards`) that this
    host reads: on a multi-process JAX run process i of n reads files i::n
    (`distribution.processes`)."""
    num_hosts, host_index = distribution.processes()
    return list_shards(paths, num_hosts=num_hosts, host_index=host_index)


def language_counts(files):
    """Per-language record counts from the `summary.json` files beside `files`."""
    counts = {}
    for folder in sorted({os.path.dirname(os.path.abspath(f)) for f in files}):
        with open(os.path.join(folder, "summary.json"), encoding="utf-8") as file:
            for language, totals in json.load(file)["languages"].items():
                counts[language] = counts.get(language, 0) + totals["records"]
    return counts


def language_weights(counts, temperature=3.0):
    """Temperature sampling (mSLAM): p_l ∝ n_l^(1/T); T=1 is natural, T->inf uniform."""
    languages = sorted(counts)
    scaled = np.array([counts[language] for language in languages], dtype="float64") ** (
        1.0 / temperature
    )
    return dict(zip(languages, scaled / scaled.sum()))


# ------------------------------------------------------- verified reading


@dataclasses.dataclass
class Damage:
    """An unreadable stretch of a shard (bad checksums, truncation, GZIP damage) and what it cost."""

    shard: str
    record: int  # index of its first lost record (records read or lost before it)
    offset: int  # byte of the file where it starts (GZIP: the compressed byte)
    records_lost: int  # a lower bound unless `exact`
    exact: bool
    bytes_lost: int  # bytes of the file from `offset` that could not be read
    reason: str

    def describe(self):
        if self.exact:
            lost = f"{self.records_lost} record(s)"
        else:
            lost = (
                f"at least {self.records_lost} record(s)"
                if self.records_lost
                else "an unknown number of records"
            )
        return f"{self.shard}: record {self.record}: {self.reason}; lost {lost} and {self.bytes_lost} byte(s) from byte {self.offset}"


@dataclasses.dataclass
class ShardReport:
    """What `scan_shards` found: records per shard, invalid records and damage.

    `recovered` maps each shard tf.data could not read through to its
    readable frames [(stream offset, length)], read back in Python.
    """

    num_records: dict = dataclasses.field(default_factory=dict)
    corrupt: list = dataclasses.field(
        default_factory=list
    )  # (shard, index, reason): read but invalid
    damage: list = dataclasses.field(default_factory=list)  # Damage
    recovered: dict = dataclasses.field(default_factory=dict)

    @property
    def clean(self):
        return not self.corrupt and not self.damage

    @property
    def num_corrupt(self):
        """Records skipped: invalid ones plus those lost to damage (a lower bound where not exact)."""
        return len(self.corrupt) + sum(damage.records_lost for damage in self.damage)

    @property
    def bytes_lost(self):
        return sum(damage.bytes_lost for damage in self.damage)

    def describe(self, limit=5):
        lines = [damage.describe() for damage in self.damage]
        lines += [f"{shard}: record {index}: {reason}" for shard, index, reason in self.corrupt]
        return "\n".join(
            lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])
        )


def _record_problem(record, kind, spec):
    """None if the serialized record is valid, else a one-line reason."""
    try:
        tf.train.Example.FromString(record.numpy())
    except message.DecodeError as error:
        return f"not a tf.train.Example ({error})"
    try:
        parsed = tf.io.parse_single_example(record, spec)
    except tf.errors.InvalidArgumentError as error:
        return error.message.splitlines()[0].split(" [Op:")[0]
    if kind == schema.SPEECH:
        if int(parsed["sample_rate"]) != schema.SAMPLE_RATE:
            return f"sample_rate {int(parsed['sample_rate'])} != {schema.SAMPLE_RATE}"
        if len(parsed["pcm"].numpy()) != 2 * int(parsed["num_samples"]):
            return f"pcm holds {len(parsed['pcm'].numpy())} bytes, num_samples says {int(parsed['num_samples'])}"
        if int(parsed["num_samples"]) == 0:
            return "zero-length audio"
    return None


def _batch_is_valid(records, kind, spec):
    try:
        parsed = tf.io.parse_example(records, spec)
    except (
        tf.errors.InvalidArgumentError,
        UnicodeDecodeError,
    ):  # TF quotes undecodable bytes of non-Examples
        return False
    if kind == schema.TEXT:
        return True
    return bool(
        tf.reduce_all(parsed["sample_rate"] == schema.SAMPLE_RATE)
        and tf.reduce_all(
            tf.strings.length(parsed["pcm"]) == 2 * tf.cast(parsed["num_samples"], tf.int32)
        )
        and tf.reduce_all(parsed["num_samples"] > 0)
    )


def _check_records(shard, indices, records, kind, spec, report):
    """Adds the invalid ones of `records` (B,) string tensor, numbered `indices`, to `report.corrupt`; returns their indices."""
    if _batch_is_valid(records, kind, spec):
        return set()
    bad = set()
    for index, record in zip(indices, records):
        problem = _record_problem(record, kind, spec)
        if problem:
            report.corrupt.append((shard, index, problem))
            bad.add(index)
    return bad


def _misnamed(shard, data):
    """The frames of a shard whose compression contradicts its name, else None."""
    holds_gzip = data[:2] == framing.GZIP_MAGIC
    if holds_gzip == schema.is_gzip(shard):
        return None
    frames, spans = framing.walk_frames(framing.inflate(data)[0] if holds_gzip else data)
    return (frames, spans, "GZIP" if holds_gzip else "uncompressed") if frames else None


def _recover_shard(shard, tf_error, kind, spec, report):
    """Reads a shard tf.data failed on frame by frame (see framing.py), recording the damage."""
    with open(shard, "rb") as file:
        data = file.read()
    misnamed = _misnamed(shard, data)
    if misnamed:
        frames, spans, holds = misnamed
        where = "named without .gz" if holds == "GZIP" else "named .gz"
        reason = f"holds {holds} TFRecords but is {where}; rename it (tf.data: {tf_error})"
        report.damage.append(
            Damage(shard, 0, 0, len(frames) + len(spans), not spans, len(data), reason)
        )
        report.recovered[shard], report.num_records[shard] = [], 0
        return
    stream, failure = framing.inflate(data) if schema.is_gzip(shard) else (data, None)

    def file_offset(position):
        return framing.compressed_offset(data, position) if schema.is_gzip(shard) else position

    frames, spans = framing.walk_frames(stream)
    events = sorted(
        [(offset, length, None) for offset, length in frames]
        + [(span.start, 0, span) for span in spans],
        key=lambda event: event[0],
    )
    damage, readable, index = [], [], 0
    for offset, length, span in events:
        if span is None:
            readable.append((index, offset, length))
        else:
            ends_stream = span.end == len(stream)
            if span.exact:
                reason = "record checksum mismatch"
            elif ends_stream and failure:
                reason = f"GZIP data unreadable from compressed byte {failure[0]} ({failure[1]})"
            elif ends_stream:
                reason = "file ends inside a record (truncated)"
            else:
                reason = f"bad frame header; resumed at byte {file_offset(span.end)}"
            end = len(data) if ends_stream and failure else file_offset(span.end)
            damage.append(
                Damage(
                    shard,
                    index,
                    file_offset(span.start),
                    1,
                    span.exact,
                    end - file_offset(span.start),
                    reason,
                )
            )
        index += 1
    if failure and not (spans and spans[-1].end == len(stream)):  # inflation failed between records
        damage.append(
            Damage(
                shard,
                index,
                failure[0],
                0,
                False,
                len(data) - failure[0],
                f"GZIP data unreadable ({failure[1]})",
            )
        )
    if not damage:
        damage.append(
            Damage(shard, index, len(data), 0, True, 0, "tf.data failed but every frame checks out")
        )
    damage[0].reason += f" (tf.data: {tf_error})"
    report.damage += damage
    records = tf.constant(
        [
            stream[offset + framing.HEADER_BYTES : offset + framing.HEADER_BYTES + length]
            for _, offset, length in readable
        ],
        tf.string,
    )
    bad = (
        _check_records(shard, [index for index, _, _ in readable], records, kind, spec, report)
        if readable
        else set()
    )
    report.recovered[shard] = [(offset, length) for i, offset, length in readable if i not in bad]
    report.num_records[shard] = len(readable)


def scan_shards(files, kind=schema.SPEECH):
    """Parses every record of `files` once (no audio decoding) -> ShardReport.

    Finds missing keys, wrong feature types, records that are not
    `tf.train.Example`s and PCM whose length disagrees with `num_samples`.
    A shard tf.data cannot read through (bad checksums, truncation, GZIP
    damage, compression other than its name says) is read again frame by
    frame: its records after the damage are recovered where the framing
    allows, and what was lost (records, bytes, tf.data's error) is recorded.
    """
    spec = schema.feature_spec(kind)
    report = ShardReport()
    for shard in files:
        count = 0
        try:
            for records in tf.data.TFRecordDataset(shard, schema.compression_type(shard)).batch(
                512
            ):
                _check_records(
                    shard, range(count, count + int(records.shape[0])), records, kind, spec, report
                )
                count += int(records.shape[0])
        except tf.errors.NotFoundError as error:
            raise FileNotFoundError(f"{shard}: {error.message}") from error
        except (
            tf.errors.DataLossError,
            tf.errors.OutOfRangeError,
            tf.errors.InvalidArgumentError,
        ) as error:
            report.corrupt = [
                entry for entry in report.corrupt if entry[0] != shard
            ]  # found again below
            _recover_shard(shard, " ".join(error.message.split()), kind, spec, report)
            continue
        report.num_records[shard] = count
    return report


def _raw_records(shard, report):
    """Serialized records of one shard: tf.data's reader, or the frames recovered in Python."""
    if shard not in report.recovered:
        return tf.data.TFRecordDataset(shard, schema.compression_type(shard))
    frames = report.recovered[shard]

    def generate():
        with (gzip.open if schema.is_gzip(shard) else open)(shard, "rb") as file:
            for offset, length in frames:
                file.seek(offset + framing.HEADER_BYTES)
                yield file.read(length)

    return tf.data.Dataset.from_generator(generate, output_signature=tf.TensorSpec([], tf.string))


def read_records(
    files,
    kind=schema.SPEECH,
    skip_corrupt=False,
    verify=True,
    shuffle_files=False,
    seed=None,
    deterministic=True,
):
    """Shards -> dataset of parsed records (each a dict of scalars, PCM as int16 (S,)).

    Args:
        files: shard paths (see `list_shards`).
        kind: "speech" or "text".
        skip_corrupt: skip corrupt records and read damaged shards as far as
            they can be (counted, logged, and reported with the records and
            bytes lost in `dataset.shard_report`) instead of raising
            CorruptShardError. Records recovered from damaged shards come
            after those of the intact shards.
        verify: scan the shards once first (`scan_shards`); without it TF's
            own errors, which do not name the record, surface at read time.
        shuffle_files: reshuffle the file order every epoch (with `seed`).
        deterministic: fixed interleaving order.
    """
    files = [str(f) for f in files]
    report = scan_shards(files, kind) if verify else ShardReport()
    if not report.clean:
        summary = f"{report.num_corrupt} corrupt or lost record(s), {report.bytes_lost} unreadable byte(s)"
        if not skip_corrupt:
            raise CorruptShardError(
                f"{summary}; pass skip_corrupt=True to skip them:\n" + report.describe()
            )
        logger.warning("skipping %s:\n%s", summary, report.describe())
    compression = {schema.compression_type(f) for f in files}
    if len(compression) != 1:
        raise ValueError("mix of GZIP (.gz) and plain shards; keep one compression per dataset")
    compression = compression.pop()
    readable = [(file_id, f) for file_id, f in enumerate(files) if f not in report.recovered]
    bad_keys = tf.constant(
        [
            files.index(shard) * 2**32 + index
            for shard, index, _ in report.corrupt
            if shard not in report.recovered
        ]
        or [-1],
        tf.int64,
    )

    def file_records(file_id, path):
        records = tf.data.TFRecordDataset(path, compression).enumerate()
        keys = tf.data.Dataset.from_tensors(file_id).repeat()
        return tf.data.Dataset.zip(keys, records)

    records = None
    if readable:
        file_ids, paths = zip(*readable)
        file_list = tf.data.Dataset.from_tensor_slices(
            (tf.constant(file_ids, tf.int64), list(paths))
        )
        if shuffle_files:
            file_list = file_list.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        indexed = file_list.interleave(
            file_records,
            cycle_length=min(len(paths), 16),
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )
        if report.corrupt:
            indexed = indexed.filter(
                lambda file_id, indexed: tf.logical_not(
                    tf.reduce_any(bad_keys == file_id * 2**32 + indexed[0])
                )
            )
        records = indexed.map(lambda file_id, indexed: indexed[1])
    for shard in report.recovered:
        records = (
            _raw_records(shard, report)
            if records is None
            else records.concatenate(_raw_records(shard, report))
        )
    spec = schema.feature_spec(kind)

    def parse(record):
        example = tf.io.parse_single_example(record, spec)
        if kind == schema.SPEECH:
            example["pcm"] = tf.io.decode_raw(example["pcm"], tf.int16, little_endian=True)
        return example

    dataset = records.map(parse, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    dataset.shard_report = report
    return dataset


# --------------------------------------------------------------- buckets


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Fixed padded lengths with a batch size each.

    `boundaries` are the inclusive upper limits of each bucket (seconds of
    audio for speech, tokens for text), ascending; an item goes to the first
    bucket that holds it and is padded to that bucket's limit.
    """

    boundaries: tuple
    batch_sizes: tuple

    def __post_init__(self):
        boundaries = tuple(self.boundaries)
        sizes = self.batch_sizes
        sizes = (
            tuple(sizes) if isinstance(sizes, (list, tuple)) else (int(sizes),) * len(boundaries)
        )
        if len(sizes) != len(boundaries) or not boundaries:
            raise ValueError(f"need one batch size per boundary, got {boundaries} and {sizes}")
        if list(boundaries) != sorted(set(boundaries)) or min(sizes) < 1:
            raise ValueError(
                f"boundaries must ascend and batch sizes be >= 1: {boundaries}, {sizes}"
            )
        object.__setattr__(self, "boundaries", boundaries)
        object.__setattr__(self, "batch_sizes", sizes)

    @classmethod
    def from_budget(cls, boundaries, budget):
        """Batch size per bucket = budget // boundary (e.g. audio seconds per batch), at least 1."""
        return cls(tuple(boundaries), tuple(max(1, int(budget // b)) for b in boundaries))


def _bucket_and_batch(
    dataset, length_fn, limits, batch_sizes, padded_shapes_fn, padding_values, remainder
):
    """Groups items by bucket, pads each to its bucket's limit, batches.

    `limits[k]` is bucket k's padded length; `padded_shapes_fn(limit)` gives
    the padded shapes. With remainder="pad" a partial batch is filled with
    rows whose every value is its padding value (all-zero masks). Under a
    data-parallel `--mesh`, each batch size is rounded up to a multiple of
    the devices a host's batch is split over (`distribution.batch_multiple`).
    """
    if remainder not in ("pad", "drop"):
        raise ValueError(f"remainder must be 'pad' or 'drop', got {remainder!r}")
    multiple = distribution.batch_multiple()
    batch_sizes = [-(-size // multiple) * multiple for size in batch_sizes]
    limits_tensor = tf.constant(limits, tf.int64)
    sizes_tensor = tf.constant(batch_sizes, tf.int64)

    def key_fn(item):
        return tf.reduce_sum(tf.cast(tf.cast(length_fn(item), tf.int64) > limits_tensor, tf.int64))

    def reduce_fn(key, window):
        batch_size = sizes_tensor[key]
        batches = window.padded_batch(
            batch_size,
            padded_shapes=padded_shapes_fn(limits_tensor[key]),
            padding_values=padding_values,
            drop_remainder=remainder == "drop",
        )
        if remainder == "pad":

            def fill(batch):
                missing = batch_size - tf.shape(next(iter(batch.values())), out_type=tf.int64)[0]
                return {
                    name: tf.concat(
                        [
                            value,
                            tf.fill(
                                tf.concat([[missing], tf.shape(value, out_type=tf.int64)[1:]], 0),
                                tf.cast(padding_values[name], value.dtype),
                            ),
                        ],
                        axis=0,
                    )
                    for name, value in batch.items()
                }

            batches = batches.map(fill)
        return batches

    return dataset.group_by_window(
        key_fn, reduce_fn, window_size_func=lambda key: sizes_tensor[key]
    )


def _index_lookup(names, what):
    """A string -> index table (-1 for unknown names is caught by an assert)."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(names)), tf.range(len(names), dtype=tf.int32)
        ),
        -1,
    )

    def lookup(value, id):
        index = table.lookup(value)
        with tf.control_dependencies(
            [tf.debugging.Assert(index >= 0, [f"unknown {what}", value, "in record", id])]
        ):
            return tf.identity(index)

    return lookup


def _sample_by_language(records, counts, temperature, seed):
    """Infinite stream drawing language l with probability ∝ n_l^(1/T)."""
    weights = language_weights(counts, temperature)
    streams = [
        records.filter(lambda r, name=language: tf.equal(r["language"], name)).repeat()
        for language in weights
    ]
    return tf.data.Dataset.sample_from_datasets(streams, weights=list(weights.values()), seed=seed)


def _finish(dataset, options_deterministic, repeat, prefetch):
    options = tf.data.Options()
    options.deterministic = options_deterministic
    dataset = dataset.with_options(options)
    if repeat:
        dataset = dataset.repeat()
    return dataset.prefetch(AUTOTUNE) if prefetch else dataset


def _source(
    files,
    kind,
    skip_corrupt,
    verify,
    seed,
    deterministic,
    shuffle_buffer,
    language_temperature,
    counts,
):
    records = read_records(
        files,
        kind,
        skip_corrupt=skip_corrupt,
        verify=verify,
        shuffle_files=shuffle_buffer > 0,
        seed=seed,
        deterministic=deterministic,
    )
    report = records.shard_report
    if language_temperature is not None:
        records = _sample_by_language(
            records, counts or language_counts(files), language_temperature, seed
        )
    if shuffle_buffer:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return records, report


# --------------------------------------------------------------- streams


def speech_dataset(
    files,
    frontend,
    buckets,
    tokenizer=None,
    max_token_length=None,
    paired=False,
    translation_tokenizer=None,
    max_translation_length=None,
    languages=None,
    target_languages=None,
    labels=None,
    label_field="label",
    too_long="error",
    remainder="pad",
    shuffle_buffer=0,
    seed=None,
    deterministic=True,
    repeat=False,
    language_temperature=None,
    language_counts=None,
    skip_corrupt=False,
    verify=True,
    prefetch=True,
):
    """Speech-only (or, with `paired=True`, speech + transcript) batches.

    Args:
        files: shard paths (`list_shards` does per-host splitting).
        frontend: `features, frame_mask = frontend(waveform (B, S), mask (B, S))`
            with `frontend.num_frames(num_samples)`; runs batched in graph.
        buckets: `Buckets` on audio seconds.
        tokenizer: `tokenizer(string) -> int ids` (e.g. a keras-hub
            tokenizer); needed when `paired`.
        max_token_length: L, the fixed transcript length of paired batches;
            longer transcripts follow `too_long` (never truncated).
        paired: keep only records with a transcript (not only whitespace)
            and add its tokens.
        translation_tokenizer: the target side's `tokenizer(string) -> int
            ids`; when given, keep only records with a translation and add
            its tokens as "translation_ids" (needs `max_translation_length`,
            the fixed L'; longer translations follow `too_long`).
        languages / target_languages / labels: lists of names; when given,
            batches carry their indices as "language" / "target_language" /
            "label" (B,) int32.
        label_field: the record's string field whose value `labels` indexes
            (default "label": intents, the sample corpus's language codes;
            "language" for language ID from any corpus). A value not in
            `labels` stops the pipeline with an error naming the record.
        too_long: "error" or "skip" for audio longer than the last bucket
            (the count is `dataset.num_too_long` when `verify`).
        remainder: "pad" (fully-masked rows) or "drop" for partial batches.
        shuffle_buffer, seed: record shuffling (0 = file order); the seed
            also fixes file order and language sampling.
        deterministic: reproducible order given `seed`; with
            `language_temperature=None` and `remainder="pad"` every record
            appears exactly once per epoch.
        repeat: repeat forever.
        language_temperature: sample languages with p_l ∝ n_l^(1/T)
            (infinite stream); counts from `language_counts` or the shards'
            summary.json.
        skip_corrupt, verify: see `read_records`.
    Returns:
        A dataset of speech batch dicts (see the module docstring); its
        `shard_report` attribute lists corrupt records found.
    """
    if paired and (tokenizer is None or max_token_length is None):
        raise ValueError("paired batches need a tokenizer and max_token_length")
    if translation_tokenizer is not None and max_translation_length is None:
        raise ValueError("translation_tokenizer needs max_translation_length")
    if too_long not in ("error", "skip"):
        raise ValueError(f"too_long must be 'error' or 'skip', got {too_long!r}")
    records, report = _source(
        files,
        schema.SPEECH,
        skip_corrupt,
        verify,
        seed,
        deterministic,
        shuffle_buffer,
        language_temperature,
        language_counts,
    )
    if paired:
        records = records.filter(lambda r: tf.strings.length(tf.strings.strip(r["transcript"])) > 0)
    if translation_tokenizer is not None:
        records = records.filter(
            lambda r: tf.strings.length(tf.strings.strip(r["translation"])) > 0
        )
    limits = [round(seconds * schema.SAMPLE_RATE) for seconds in buckets.boundaries]
    language_index = _index_lookup(languages, "language") if languages else None
    target_language_index = (
        _index_lookup(target_languages, "target language") if target_languages else None
    )
    text_fields = [n for n, (t, _) in schema.SPEECH_FIELDS.items() if t == tf.string and n != "pcm"]
    if label_field not in text_fields:
        raise ValueError(
            f"label_field must be a text field of speech records, one of {text_fields}; "
            f"got {label_field!r}"
        )
    label_index = _index_lookup(labels, f"label ({label_field})") if labels else None

    def prepare(record):
        item = {
            "waveform": tf.cast(record["pcm"], tf.float32) / PCM_SCALE,
            "waveform_mask": tf.ones_like(record["pcm"], tf.float32),
        }
        if paired:
            ids = tf.cast(tokenizer(record["transcript"]), tf.int32)
            item["token_ids"] = ids
            item["token_padding_mask"] = tf.ones_like(ids, tf.float32)
        if translation_tokenizer is not None:
            translation_ids = tf.cast(translation_tokenizer(record["translation"]), tf.int32)
            item["translation_ids"] = translation_ids
            item["translation_padding_mask"] = tf.ones_like(translation_ids, tf.float32)
        if language_index:
            item["language"] = language_index(record["language"], record["id"])
        if target_language_index:
            item["target_language"] = target_language_index(record["target_language"], record["id"])
        if label_index:
            item["label"] = label_index(record[label_field], record["id"])
        fits = tf.shape(record["pcm"])[0] <= limits[-1]
        if paired:
            fits = tf.logical_and(fits, tf.shape(item["token_ids"])[0] <= max_token_length)
        if translation_tokenizer is not None:
            translation_fits = tf.shape(item["translation_ids"])[0] <= max_translation_length
            fits = tf.logical_and(fits, translation_fits)
        if too_long == "error":
            check = tf.debugging.Assert(
                fits,
                [
                    "record",
                    record["id"],
                    "does not fit the last bucket: seconds",
                    record["duration"],
                    "limit",
                    buckets.boundaries[-1],
                    "tokens (if paired)",
                    tf.shape(item.get("token_ids", record["pcm"]))[0],
                    "limit",
                    max_token_length or 0,
                    "translation tokens (if any)",
                    tf.shape(item.get("translation_ids", record["pcm"]))[0],
                    "limit",
                    max_translation_length or 0,
                ],
            )
            with tf.control_dependencies([check]):
                item["waveform"] = tf.identity(item["waveform"])
        return item, fits

    def fits_last_bucket(item, fits):
        return fits

    def drop_flag(item, fits):
        return item

    items = records.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    items = items.filter(fits_last_bucket).map(drop_flag)

    def padded_shapes(limit):
        shapes = {"waveform": tf.reshape(limit, [1]), "waveform_mask": tf.reshape(limit, [1])}
        if paired:
            shapes.update(token_ids=[max_token_length], token_padding_mask=[max_token_length])
        if translation_tokenizer is not None:
            shapes.update(
                translation_ids=[max_translation_length],
                translation_padding_mask=[max_translation_length],
            )
        names = {
            "language": languages,
            "target_language": target_languages,
            "label": labels,
        }
        shapes.update({name: [] for name, given in names.items() if given})
        return shapes

    padding_values = {
        "waveform": 0.0,
        "waveform_mask": 0.0,
        "token_ids": 0,
        "token_padding_mask": 0.0,
        "translation_ids": 0,
        "translation_padding_mask": 0.0,
        "language": -1,
        "target_language": -1,
        "label": -1,
    }
    padding_values = {
        name: tf.constant(value, tf.float32 if isinstance(value, float) else tf.int32)
        for name, value in padding_values.items()
    }
    example_keys = padded_shapes(tf.constant(0, tf.int64)).keys()
    padding_values = {name: padding_values[name] for name in example_keys}
    batches = _bucket_and_batch(
        items,
        lambda item: tf.shape(item["waveform"])[0],
        limits,
        buckets.batch_sizes,
        padded_shapes,
        padding_values,
        remainder,
    )

    # AutoGraph must not rewrite the front end's Python control flow.
    @tf.autograph.experimental.do_not_convert
    def featurize(batch):
        features, frame_mask = frontend(
            batch.pop("waveform"), padding_mask=batch.pop("waveform_mask")
        )
        return {"speech_features": features, "speech_padding_mask": frame_mask, **batch}

    dataset = _finish(
        batches.map(featurize, num_parallel_calls=AUTOTUNE, deterministic=deterministic),
        deterministic,
        repeat,
        prefetch,
    )
    dataset.shard_report = report
    if verify:
        dataset.num_too_long = (
            _count_too_long(files, report, limits[-1]) if too_long == "skip" else 0
        )
    return dataset


def _count_too_long(files, report, limit):
    """Records longer than `limit` samples (the skips of too_long="skip")."""
    spec = {"num_samples": tf.io.FixedLenFeature([], tf.int64)}
    total = 0
    for shard in files:
        for records in _raw_records(shard, report).batch(1024):
            # Corrupt records are counted in shard_report.
            with contextlib.suppress(tf.errors.InvalidArgumentError, UnicodeDecodeError):
                total += int(
                    tf.reduce_sum(
                        tf.cast(tf.io.parse_example(records, spec)["num_samples"] > limit, tf.int32)
                    )
                )
    return total


def text_dataset(
    files,
    tokenizer,
    buckets,
    max_length=512,
    languages=None,
    labels=None,
    remainder="pad",
    shuffle_buffer=0,
    seed=None,
    deterministic=True,
    repeat=False,
    language_temperature=None,
    language_counts=None,
    skip_corrupt=False,
    verify=True,
    prefetch=True,
):
    """Text-only batches {"token_ids", "token_padding_mask"[, "language"][, "label"]}.

    Sequences are capped at `max_length` tokens (the cap is added as the last
    bucket boundary if `buckets` stops short of it). Other arguments as in
    `speech_dataset`; `buckets` are on token counts.
    """
    records, report = _source(
        files,
        schema.TEXT,
        skip_corrupt,
        verify,
        seed,
        deterministic,
        shuffle_buffer,
        language_temperature,
        language_counts,
    )
    limits = [int(b) for b in buckets.boundaries if b < max_length] + [max_length]
    batch_sizes = list(buckets.batch_sizes[: len(limits) - 1]) + [
        buckets.batch_sizes[min(len(limits) - 1, len(buckets.batch_sizes) - 1)]
    ]
    language_index = _index_lookup(languages, "language") if languages else None
    label_index = _index_lookup(labels, "label") if labels else None

    def prepare(record):
        ids = tf.cast(tokenizer(record["text"]), tf.int32)[:max_length]
        item = {"token_ids": ids, "token_padding_mask": tf.ones_like(ids, tf.float32)}
        if language_index:
            item["language"] = language_index(record["language"], record["id"])
        if label_index:
            item["label"] = label_index(record["label"], record["id"])
        return item

    items = records.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    items = items.filter(lambda item: tf.shape(item["token_ids"])[0] > 0)

    def padded_shapes(limit):
        shapes = {"token_ids": tf.reshape(limit, [1]), "token_padding_mask": tf.reshape(limit, [1])}
        shapes.update(
            {name: [] for name, given in (("language", languages), ("label", labels)) if given}
        )
        return shapes

    padding_values = {"token_ids": tf.constant(0), "token_padding_mask": tf.constant(0.0)}
    padding_values.update(
        {
            name: tf.constant(-1)
            for name, given in (("language", languages), ("label", labels))
            if given
        }
    )
    batches = _bucket_and_batch(
        items,
        lambda item: tf.shape(item["token_ids"])[0],
        limits,
        batch_sizes,
        padded_shapes,
        padding_values,
        remainder,
    )
    dataset = _finish(batches, deterministic, repeat, prefetch)
    dataset.shard_report = report
    return dataset


def mix_streams(streams, epoch_stream=None):
    """Zips stream batches into one element per step: {name: sub-batch}.

    Args:
        streams: {"speech": ..., "text": ..., "paired": ...} batched datasets
            (their batch sizes set the per-step mix, e.g. mSLAM's 2048 / 8192
            / 256 sequences).
        epoch_stream: the stream whose end ends the epoch; the others repeat.
            None: all repeat (use `steps_per_epoch`).
    """
    if epoch_stream is not None and epoch_stream not in streams:
        raise ValueError(f"epoch_stream {epoch_stream!r} not in {sorted(streams)}")
    zipped = {
        name: stream if name == epoch_stream else stream.repeat()
        for name, stream in streams.items()
    }
    return tf.data.Dataset.zip(zipped).prefetch(AUTOTUNE)
