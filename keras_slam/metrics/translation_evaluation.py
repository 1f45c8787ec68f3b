"""Translate the records of speech-translation shards and score them (BLEU, chrF).

    scores, rows = evaluate_translation(translator, files)                  # speech in
    scores, rows = evaluate_translation(translator, files, source="text")   # zero-shot MT
    print(scores.table())
    encoder_reliance(translator, batches)   # CE with own vs another utterance's input
    constant_baseline(candidates, rows)      # the best single sentence, by BLEU and chrF
    write_evaluation("runs/eval", scores, rows, {"preset": ...})

The records are read whole and in file order (no bucketing, no length
limit), so every record is scored against its own `translation` string,
not a detokenized copy of it. A pair is "<language>-<target_language>"
(the spoken or written source language, then the translation's).
`translator` is a `SpeechTranslator` (or anything with its `translate`
and `translate_text`).
"""

import json
import os

import numpy as np
from keras import ops

from keras_slam.data import pipeline
from keras_slam.data.translation import encoder_keys
from keras_slam.metrics.bleu import pair_name, translation_scores

SOURCES = ("speech", "text")
# The rows' fields in `translation_scores`' argument order.
FIELDS = ("reference", "hypothesis", "language", "target_language")


def translation_records(files):
    """Yields the records of `files` (shard paths) as dicts of Python values.

    Raises:
        ValueError naming the file and record id when a record has no
        translation or target language.
    """
    for file in files:
        for record in pipeline.read_records([file]).as_numpy_iterator():
            record = {
                key: value.decode() if isinstance(value, bytes) else value
                for key, value in record.items()
            }
            for field in ("translation", "target_language"):
                if not record.get(field, "").strip():
                    raise ValueError(
                        f"{file}: record {record['id']!r} has no {field!r}; speech-translation "
                        "shards (keras-slam parallel-speech) carry a translation and its language"
                    )
            yield record


def evaluate_translation(
    translator,
    files,
    source="speech",
    strategy="greedy",
    beam_width=4,
    batch_size=8,
    max_length=None,
    lowercase=False,
    keep=None,
):
    """Translates every record of `files` and scores the translations.

    Args:
        translator: a `SpeechTranslator` with its preprocessor.
        files: shard paths (`pipeline.list_shards`).
        source: "speech" (the record's audio) or "text" (its transcript,
            through `translate_text`).
        strategy, beam_width, max_length: decoding (see
            `SpeechTranslator.generate`).
        batch_size: records translated at once.
        lowercase: score lowercased text.
        keep: predicate on a record dict; records it rejects are skipped.
    Returns:
        (`TranslationScores`, rows): one row per record, {"id", "language",
        "target_language", "source", "reference", "hypothesis"}, in file order.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    decoding = {"strategy": strategy, "beam_width": beam_width, "max_length": max_length}
    rows, chunk = [], []

    def flush():
        if source == "speech":
            waveforms = [record["pcm"].astype("float32") / pipeline.PCM_SCALE for record in chunk]
            hypotheses = translator.translate(waveforms, batch_size=batch_size, **decoding)
        else:
            transcripts = [record["transcript"] for record in chunk]
            hypotheses = translator.translate_text(transcripts, batch_size=batch_size, **decoding)
        rows.extend(
            {
                "id": record["id"],
                "language": record["language"],
                "target_language": record["target_language"],
                "source": record["transcript"],
                "reference": record["translation"],
                "hypothesis": hypothesis,
            }
            for record, hypothesis in zip(chunk, hypotheses)
        )
        chunk.clear()

    for record in translation_records(files):
        if keep is not None and not keep(record):
            continue
        chunk.append(record)
        if len(chunk) == batch_size:
            flush()
    if chunk:
        flush()
    if not rows:
        raise ValueError(f"no records in {len(files)} shard file(s)")
    scores = translation_scores(
        *([row[key] for row in rows] for key in FIELDS), lowercase=lowercase
    )
    return scores, rows


def encoder_reliance(translator, batches):
    """Teacher-forced cross-entropy per target token with each item's own
    encoder input and with another item's: does the decoder read the encoder?

    In each batch the real rows' encoder inputs (speech or source text) are
    rotated by one row (row i gets row i + 1's, the last the first's); the
    decoder inputs and targets stay. A decoder that ignores the encoder has
    gap 0. No label smoothing, natural log, EOS counted as a token.

    Args:
        translator: a `SpeechTranslator`.
        batches: iterable of teacher-forced (x, y) of one modality
            (`split_translation_batch`); batches with < 2 real rows are skipped.
    Returns:
        {"own", "other": nats per target token, "gap": other - own,
        "items", "target_tokens"}.
    """
    totals = {"own": 0.0, "other": 0.0}
    items = tokens = 0
    for x, y in batches:
        x = {key: np.asarray(value) for key, value in x.items()}
        targets = np.asarray(y["target_ids"])
        mask = np.asarray(y["target_padding_mask"]) > 0
        real = np.flatnonzero(mask.any(axis=1))
        if len(real) < 2:
            continue
        other = dict(x)
        for key in encoder_keys(x):
            other[key] = x[key].copy()
            other[key][real] = x[key][np.roll(real, -1)]
        for name, inputs in (("own", x), ("other", other)):
            logits = translator(inputs, training=False)
            logits = logits["logits"] if isinstance(logits, dict) else logits
            logits = np.asarray(ops.convert_to_numpy(logits), "float64")
            peak = logits.max(axis=-1, keepdims=True)
            log_norm = peak[..., 0] + np.log(np.exp(logits - peak).sum(axis=-1))
            true = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
            totals[name] += float(np.sum((log_norm - true)[mask]))
        items += len(real)
        tokens += int(mask.sum())
    if not tokens:
        raise ValueError("no batch with >= 2 real rows")
    own, other = totals["own"] / tokens, totals["other"] / tokens
    return {"own": own, "other": other, "gap": other - own, "items": items, "target_tokens": tokens}


def constant_baseline(candidates, rows, metrics=("bleu", "chrf"), lowercase=False):
    """The scores a collapsed translator can reach: each distinct candidate
    sentence (e.g. the training translations) as the hypothesis of every row,
    scored once (BLEU and chrF together); the best per metric.

    Args:
        candidates: sentences to try.
        rows: dicts with "reference", "language", "target_language" (the
            `evaluate_translation` rows).
        metrics: names among "bleu", "chrf": the means over pairs that pick.
    Returns:
        {metric: (sentence, `TranslationScores`)} of the best candidate by
        that metric (the first of equals, in candidate order).
    """
    unknown = [metric for metric in metrics if metric not in ("bleu", "chrf")]
    if unknown or not metrics:
        raise ValueError(f"metrics must be among 'bleu', 'chrf', got {metrics!r}")
    if not rows:
        raise ValueError("no rows to score")
    references, languages, target_languages = (
        [row[key] for row in rows] for key in ("reference", "language", "target_language")
    )
    best = {}
    for sentence in dict.fromkeys(candidates):
        scores = translation_scores(
            references, [sentence] * len(rows), languages, target_languages, lowercase=lowercase
        )
        for metric in metrics:
            if metric not in best or getattr(scores, metric) > getattr(best[metric][1], metric):
                best[metric] = (sentence, scores)
    if not best:
        raise ValueError("no candidate sentences")
    return best


def write_evaluation(output, scores, rows, settings):
    """Writes `report.json` ({**settings, "scores": ...}), `translations.jsonl`
    (the rows) and per pair `<pair>.ref.txt` / `<pair>.hyp.txt` (one line per
    record, for `sacrebleu <pair>.ref.txt -i <pair>.hyp.txt -m bleu chrf`)
    into `output`. Returns the report dict."""
    os.makedirs(output, exist_ok=True)
    report = {**settings, "scores": scores.as_dict()}
    with open(os.path.join(output, "report.json"), "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2, ensure_ascii=False)
    with open(os.path.join(output, "translations.jsonl"), "w", encoding="utf-8") as file:
        file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    for pair in scores.pairs:
        pair_rows = [
            row for row in rows if pair_name(row["language"], row["target_language"]) == pair
        ]
        for kind, field in (("ref", "reference"), ("hyp", "hypothesis")):
            # One line per record: a newline inside a text would shift the rest.
            lines = (" ".join(row[field].split()) for row in pair_rows)
            with open(os.path.join(output, f"{pair}.{kind}.txt"), "w", encoding="utf-8") as file:
                file.writelines(line + "\n" for line in lines)
    return report
