"""Word and character error rates (jiwer), overall and per language.

Rates are corpus-level: total edits (substitutions + deletions + insertions)
over total reference units, not a mean of per-utterance rates. Both texts go
through `normalize_transcript` first:

- always: Unicode NFC, whitespace runs collapsed to one space, ends stripped;
- `lowercase=True`: `str.lower()`;
- `remove_punctuation=True`: every character whose Unicode category is
  punctuation (P*) becomes a space (so "well,done" reads as two words).

Words are whitespace-separated, so WER means little for languages written
without spaces (zh, ja, th); report CER there. CER counts the single spaces
between words as characters. An utterance with an empty reference counts
its hypothesis units as insertions; a rate over zero reference units is the
number of errors (denominator clamped to 1).
"""

import collections
import dataclasses
import unicodedata

import jiwer


def normalize_transcript(text, lowercase=False, remove_punctuation=False):
    """Normalises one transcript as described in the module docstring."""
    text = unicodedata.normalize("NFC", text)
    if lowercase:
        text = text.lower()
    if remove_punctuation:
        text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


@dataclasses.dataclass
class ErrorCounts:
    """Edit operations summed over utterances; `rate` is the error rate."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0

    @property
    def errors(self):
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self):
        return self.errors / max(self.reference_length, 1)

    def __add__(self, other):
        return ErrorCounts(
            *(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other)))
        )


def error_counts(references, hypotheses, unit="word", lowercase=False, remove_punctuation=False):
    """Edit counts between parallel lists of strings.

    Args:
        references, hypotheses: lists of str, same length.
        unit: "word" or "character".
    Returns:
        ErrorCounts.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if unit not in ("word", "character"):
        raise ValueError(f"unit must be 'word' or 'character', got {unit!r}")
    counts = ErrorCounts()
    if not references:
        return counts
    references = [normalize_transcript(t, lowercase, remove_punctuation) for t in references]
    hypotheses = [normalize_transcript(t, lowercase, remove_punctuation) for t in hypotheses]
    # jiwer rejects an empty reference list entry only when all are empty;
    # count empty references directly so any mix works.
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r]
    for r, h in zip(references, hypotheses):
        if not r:
            counts.insertions += len(h.split()) if unit == "word" else len(h)
    if pairs:
        process = jiwer.process_words if unit == "word" else jiwer.process_characters
        output = process([r for r, _ in pairs], [h for _, h in pairs])
        counts += ErrorCounts(
            output.substitutions,
            output.deletions,
            output.insertions,
            output.substitutions + output.deletions + output.hits,
        )
    return counts


def word_error_rate(references, hypotheses, lowercase=False, remove_punctuation=False):
    """Corpus WER (a fraction, not a percentage)."""
    return error_counts(references, hypotheses, "word", lowercase, remove_punctuation).rate


def character_error_rate(references, hypotheses, lowercase=False, remove_punctuation=False):
    """Corpus CER (a fraction, not a percentage)."""
    return error_counts(references, hypotheses, "character", lowercase, remove_punctuation).rate


class ErrorRateAccumulator:
    """Streams (reference, hypothesis, language) batches into WER/CER.

    Mirrors the `keras.metrics.Metric` interface (`update_state`, `result`,
    `reset_state`) for strings, which Keras metrics cannot hold.
    """

    def __init__(self, lowercase=False, remove_punctuation=False):
        self.lowercase = lowercase
        self.remove_punctuation = remove_punctuation
        self.reset_state()

    def reset_state(self):
        self._words = collections.defaultdict(ErrorCounts)
        self._characters = collections.defaultdict(ErrorCounts)
        self._utterances = collections.Counter()

    def update_state(self, references, hypotheses, languages=None):
        """Adds a batch; `languages` (list of str) defaults to "all"."""
        references, hypotheses = list(references), list(hypotheses)
        languages = list(languages) if languages is not None else ["all"] * len(references)
        if not len(references) == len(hypotheses) == len(languages):
            raise ValueError(
                f"lengths differ: {len(references)} references, {len(hypotheses)} "
                f"hypotheses, {len(languages)} languages"
            )
        by_language = collections.defaultdict(lambda: ([], []))
        for reference, hypothesis, language in zip(references, hypotheses, languages):
            by_language[language][0].append(reference)
            by_language[language][1].append(hypothesis)
        for language, (refs, hyps) in by_language.items():
            options = (self.lowercase, self.remove_punctuation)
            self._words[language] += error_counts(refs, hyps, "word", *options)
            self._characters[language] += error_counts(refs, hyps, "character", *options)
            self._utterances[language] += len(refs)

    def result(self):
        """{language: {"wer", "cer", "utterances"}} plus "all" over every one."""
        results = {}
        for language in sorted(self._utterances):
            results[language] = self._summary(
                self._words[language],
                self._characters[language],
                self._utterances[language],
            )
        if "all" not in results:
            results["all"] = self._summary(
                sum(self._words.values(), ErrorCounts()),
                sum(self._characters.values(), ErrorCounts()),
                sum(self._utterances.values()),
            )
        return results

    @staticmethod
    def _summary(words, characters, utterances):
        return {"wer": words.rate, "cer": characters.rate, "utterances": utterances}


def error_rates_by_language(
    references, hypotheses, languages, lowercase=False, remove_punctuation=False
):
    """WER and CER per language and overall.

    Returns:
        {language: {"wer": float, "cer": float, "utterances": int}, ...,
         "all": the same over every utterance}.
    """
    accumulator = ErrorRateAccumulator(lowercase, remove_punctuation)
    accumulator.update_state(references, hypotheses, languages)
    return accumulator.result()
