"""Corpus BLEU and chrF through sacrebleu, overall, per target language
and per language pair.

Argument order is (references, hypotheses), as in
`keras_slam.metrics.error_rates`. Scores are sacrebleu's (0-100), the same
numbers as its command line (`sacrebleu REF -i HYP -m bleu chrf`).
BLEU tokenization follows sacrebleu's names ("13a", "intl", "zh", "char",
...); by default each language gets the one its evaluations use where it
needs no extra package: "zh" for Chinese, "char" for Japanese, Korean and
Thai (the CoVoST 2 convention for ja is "ja-mecab", which needs
mecab-python3), and "13a" otherwise. chrF (character 6-grams, beta 2)
needs no tokenization.

    scores = translation_scores(references, hypotheses, sources, targets)
    print(scores.table())  # BLEU and chrF per pair ("de-en") and their mean
"""

import collections
import dataclasses

import sacrebleu

LANGUAGE_TOKENIZE = {"zh": "zh", "ja": "char", "ko": "char", "th": "char"}
DEFAULT_TOKENIZE = "13a"


def default_tokenize(language):
    """sacrebleu tokenizer for a language code such as "de" or "zh-CN"."""
    return LANGUAGE_TOKENIZE.get(language.split("-")[0].split("_")[0].lower(), DEFAULT_TOKENIZE)


def _reference_streams(references):
    """Per-hypothesis references (str or list of str) -> sacrebleu streams."""
    per_hypothesis = [[r] if isinstance(r, str) else list(r) for r in references]
    counts = {len(r) for r in per_hypothesis}
    if len(counts) > 1:
        raise ValueError(
            f"every hypothesis needs the same number of references, got {sorted(counts)}"
        )
    return [list(stream) for stream in zip(*per_hypothesis)]


def corpus_bleu(references, hypotheses, tokenize=DEFAULT_TOKENIZE, lowercase=False):
    """Corpus BLEU.

    Args:
        references: list of str (one per hypothesis) or list of lists of str
            (several references per hypothesis, the same count for each).
        hypotheses: list of str.
        tokenize: a sacrebleu tokenizer name.
        lowercase: compare lowercased text.
    Returns:
        float BLEU in [0, 100].
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    result = sacrebleu.corpus_bleu(
        list(hypotheses),
        _reference_streams(references),
        tokenize=tokenize,
        lowercase=lowercase,
    )
    return float(result.score)


def corpus_chrf(references, hypotheses, lowercase=False, word_order=0):
    """Corpus chrF (sacrebleu's CHRF: character 6-grams, beta 2).

    Args:
        references, hypotheses: as for `corpus_bleu`.
        lowercase: compare lowercased text.
        word_order: 0 for chrF, 2 for chrF++ (adds word 1- and 2-grams).
    Returns:
        float chrF in [0, 100].
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    metric = sacrebleu.metrics.CHRF(lowercase=lowercase, word_order=word_order)
    return float(metric.corpus_score(list(hypotheses), _reference_streams(references)).score)


def _grouped(references, hypotheses, keys):
    """{key: (references, hypotheses)} in sorted key order."""
    if not len(references) == len(hypotheses) == len(keys):
        raise ValueError(
            f"lengths differ: {len(references)} references, {len(hypotheses)} hypotheses, "
            f"{len(keys)} languages"
        )
    grouped = collections.defaultdict(lambda: ([], []))
    for reference, hypothesis, key in zip(references, hypotheses, keys):
        grouped[key][0].append(reference)
        grouped[key][1].append(hypothesis)
    return {key: grouped[key] for key in sorted(grouped)}


def _language_tokenize(language, tokenize):
    """`tokenize` as `bleu_by_language` takes it -> the name for `language`."""
    if isinstance(tokenize, str):
        return tokenize
    return (tokenize or {}).get(language, default_tokenize(language))


def _with_average(scores):
    return {**scores, "average": sum(scores.values()) / max(len(scores), 1)}


def bleu_by_language(references, hypotheses, languages, tokenize=None, lowercase=False):
    """Corpus BLEU per target language and their unweighted mean.

    Args:
        languages: list of target-language codes, one per hypothesis.
        tokenize: None (per-language default, see module docstring), a
            sacrebleu tokenizer name for all, or a dict {language: name}
            falling back to the default.
    Returns:
        {language: BLEU, ..., "average": mean over languages}.
    """
    return _with_average(
        {
            language: corpus_bleu(refs, hyps, _language_tokenize(language, tokenize), lowercase)
            for language, (refs, hyps) in _grouped(references, hypotheses, languages).items()
        }
    )


def chrf_by_language(references, hypotheses, languages, lowercase=False):
    """Corpus chrF per target language and their unweighted mean.

    Returns:
        {language: chrF, ..., "average": mean over languages}.
    """
    return _with_average(
        {
            language: corpus_chrf(refs, hyps, lowercase)
            for language, (refs, hyps) in _grouped(references, hypotheses, languages).items()
        }
    )


def pair_name(source_language, target_language):
    """ "de", "en" -> "de-en"."""
    return f"{source_language}-{target_language}"


@dataclasses.dataclass(frozen=True)
class PairScore:
    """Corpus BLEU and chrF of one language pair, with sacrebleu's signatures."""

    bleu: float
    chrf: float
    sentences: int
    bleu_signature: str
    chrf_signature: str


@dataclasses.dataclass(frozen=True)
class TranslationScores:
    """BLEU and chrF per language pair ("de-en") and their unweighted means."""

    pairs: dict

    @property
    def bleu(self):
        """Mean BLEU over the pairs."""
        return sum(score.bleu for score in self.pairs.values()) / len(self.pairs)

    @property
    def chrf(self):
        """Mean chrF over the pairs."""
        return sum(score.chrf for score in self.pairs.values()) / len(self.pairs)

    def as_dict(self):
        """JSON-ready: {"pairs": {pair: {...}}, "average": {"bleu", "chrf", "sentences"}}."""
        return {
            "pairs": {pair: dataclasses.asdict(score) for pair, score in self.pairs.items()},
            "average": {
                "bleu": self.bleu,
                "chrf": self.chrf,
                "sentences": sum(score.sentences for score in self.pairs.values()),
            },
        }

    def table(self):
        """One line per pair and one for the mean: pair, BLEU, chrF, sentences."""
        average = self.as_dict()["average"]
        rows = [(pair, s.bleu, s.chrf, s.sentences) for pair, s in self.pairs.items()]
        rows.append(("average", average["bleu"], average["chrf"], average["sentences"]))
        lines = [f"{'pair':<10} {'BLEU':>6} {'chrF':>6} {'sentences':>9}"]
        lines += [f"{row[0]:<10} {row[1]:6.2f} {row[2]:6.2f} {row[3]:9d}" for row in rows]
        return "\n".join(lines)


def translation_scores(
    references, hypotheses, source_languages, target_languages, tokenize=None, lowercase=False
):
    """Corpus BLEU and chrF per language pair.

    Args:
        references, hypotheses: as for `corpus_bleu`.
        source_languages, target_languages: language codes, one each per
            hypothesis; a pair is named "<source>-<target>".
        tokenize: BLEU tokenization, chosen by the target language as in
            `bleu_by_language`.
        lowercase: compare lowercased text (BLEU and chrF).
    Returns:
        `TranslationScores`.
    """
    if not hypotheses:
        raise ValueError("no hypotheses to score")
    if not len(source_languages) == len(target_languages) == len(hypotheses):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(source_languages)} source and "
            f"{len(target_languages)} target languages"
        )
    pairs = list(zip(source_languages, target_languages))
    scores = {}
    for (source, target), (refs, hyps) in _grouped(references, hypotheses, pairs).items():
        streams = _reference_streams(refs)
        bleu = sacrebleu.metrics.BLEU(
            tokenize=_language_tokenize(target, tokenize), lowercase=lowercase
        )
        chrf = sacrebleu.metrics.CHRF(lowercase=lowercase)
        scores[pair_name(source, target)] = PairScore(
            bleu=float(bleu.corpus_score(hyps, streams).score),
            chrf=float(chrf.corpus_score(hyps, streams).score),
            sentences=len(hyps),
            bleu_signature=str(bleu.get_signature()),
            chrf_signature=str(chrf.get_signature()),
        )
    return TranslationScores(scores)
