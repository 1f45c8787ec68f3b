import jiwer
import pytest

from keras_slam.metrics.error_rates import (
    ErrorRateAccumulator,
    character_error_rate,
    error_counts,
    error_rates_by_language,
    normalize_transcript,
    word_error_rate,
)

REFERENCES = [
    "the cat sat on the mat",
    "Grüße aus München",
    "el niño come piña",
    "我们 今天 学习",
    "a b c d",
]
HYPOTHESES = [
    "the cat sit on mat",
    "grüsse aus münchen heute",
    "el nino come piña",
    "我们 明天 学习",
    "a x b c d",
]
LANGUAGES = ["en", "de", "es", "zh", "en"]


def test_hand_computed_edit_distances():
    # 1 substitution (sat->sit) + 1 deletion (the) over 6 words.
    counts = error_counts(["the cat sat on the mat"], ["the cat sit on mat"])
    assert (counts.substitutions, counts.deletions, counts.insertions) == (1, 1, 0)
    assert word_error_rate(["the cat sat on the mat"], ["the cat sit on mat"]) == pytest.approx(
        2 / 6
    )
    assert word_error_rate(["a b"], ["a x b"]) == pytest.approx(1 / 2)  # 1 insertion
    # kitten -> sitting: k->s, e->i, +g = 3 edits over 6 characters.
    assert character_error_rate(["kitten"], ["sitting"]) == pytest.approx(3 / 6)
    assert character_error_rate(["niño"], ["nino"]) == pytest.approx(1 / 4)
    # Corpus level: (2 + 1) edits over (6 + 2) words, not a mean of rates.
    both = word_error_rate(["the cat sat on the mat", "a b"], ["the cat sit on mat", "a x b"])
    assert both == pytest.approx(3 / 8)


def test_matches_jiwer():
    assert word_error_rate(REFERENCES, HYPOTHESES) == pytest.approx(
        jiwer.wer(REFERENCES, HYPOTHESES)
    )
    assert character_error_rate(REFERENCES, HYPOTHESES) == pytest.approx(
        jiwer.cer(REFERENCES, HYPOTHESES)
    )


def test_normalisation_options():
    assert normalize_transcript("  Hello,   World! ") == "Hello, World!"
    assert (
        normalize_transcript("Hello, World!", lowercase=True, remove_punctuation=True)
        == "hello world"
    )
    assert normalize_transcript("well,done") == "well,done"
    assert normalize_transcript("well,done", remove_punctuation=True) == "well done"
    # Decomposed ü equals composed ü.
    assert character_error_rate(["Grüße"], ["Gru\u0308ße"]) == 0.0
    assert word_error_rate(["Hello, World!"], ["hello world"]) == 1.0
    assert (
        word_error_rate(["Hello, World!"], ["hello world"], lowercase=True, remove_punctuation=True)
        == 0.0
    )
    assert (
        word_error_rate(["¿Qué tal?"], ["qué tal"], lowercase=True, remove_punctuation=True) == 0.0
    )


def test_empty_references_count_insertions():
    counts = error_counts(["", "a b"], ["x y", "a b"])
    assert (counts.insertions, counts.reference_length) == (2, 2)
    assert word_error_rate([""], [""]) == 0.0
    with pytest.raises(ValueError, match="hypotheses"):
        word_error_rate(["a"], [])


def test_by_language_and_streaming():
    results = error_rates_by_language(REFERENCES, HYPOTHESES, LANGUAGES, lowercase=True)
    assert set(results) == {"de", "en", "es", "zh", "all"}
    for language in ("de", "en", "es", "zh"):
        refs = [r for r, lang in zip(REFERENCES, LANGUAGES) if lang == language]
        hyps = [h for h, lang in zip(HYPOTHESES, LANGUAGES) if lang == language]
        lowered = ([r.lower() for r in refs], [h.lower() for h in hyps])
        assert results[language]["wer"] == pytest.approx(jiwer.wer(*lowered))
        assert results[language]["cer"] == pytest.approx(jiwer.cer(*lowered))
        assert results[language]["utterances"] == len(refs)
    assert results["all"]["wer"] == pytest.approx(
        word_error_rate(REFERENCES, HYPOTHESES, lowercase=True)
    )
    assert results["all"]["utterances"] == len(REFERENCES)
    assert results["de"]["wer"] == pytest.approx(2 / 3)  # grüße->grüsse, + heute
    # Streaming in two batches gives the same as one call.
    accumulator = ErrorRateAccumulator(lowercase=True)
    accumulator.update_state(REFERENCES[:2], HYPOTHESES[:2], LANGUAGES[:2])
    accumulator.update_state(REFERENCES[2:], HYPOTHESES[2:], LANGUAGES[2:])
    assert accumulator.result() == results  # integer counts: exact
    accumulator.reset_state()
    accumulator.update_state(["a b"], ["a c"])
    assert accumulator.result() == {
        "all": {"wer": 0.5, "cer": pytest.approx(1 / 3), "utterances": 1}
    }
