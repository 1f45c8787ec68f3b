"""Corpus BLEU through sacrebleu, overall and per target language.

Argument order is (references, hypotheses), as in
`keras_slam.metrics.error_rates`. Scores are sacrebleu's (0-100).
Tokenization follows sacrebleu's names ("13a", "intl", "zh", "char", ...);
by default each language gets the one its evaluations use where it needs no
extra package: "zh" for Chinese, "char" for Japanese, Korean and Thai (the
CoVoST 2 convention for ja is "ja-mecab", which needs mecab-python3), and
"13a" otherwise.
"""

import collections

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
    if not len(references) == len(hypotheses) == len(languages):
        raise ValueError("references, hypotheses and languages must have the same length")
    grouped = collections.defaultdict(lambda: ([], []))
    for reference, hypothesis, language in zip(references, hypotheses, languages):
        grouped[language][0].append(reference)
        grouped[language][1].append(hypothesis)
    scores = {}
    for language in sorted(grouped):
        if isinstance(tokenize, str):
            language_tokenize = tokenize
        else:
            language_tokenize = (tokenize or {}).get(language, default_tokenize(language))
        refs, hyps = grouped[language]
        scores[language] = corpus_bleu(refs, hyps, language_tokenize, lowercase)
    scores["average"] = sum(scores.values()) / max(len(scores), 1)
    return scores
