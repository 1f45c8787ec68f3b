import math

import pytest
import sacrebleu

from keras_slam.metrics.bleu import bleu_by_language, corpus_bleu, default_tokenize

REFERENCES = [
    "The cat is on the mat.",
    "There is a cat on the mat.",
    "Die Katze sitzt auf der Matte.",
    "猫在垫子上。",
    "我们今天学习语音识别。",
]
HYPOTHESES = [
    "The cat sat on the mat.",
    "A cat is on the mat.",
    "Die Katze sitzt auf einer Matte.",
    "猫坐在垫子上。",
    "我们今天学习识别。",
]
LANGUAGES = ["en", "en", "de", "zh", "zh"]


def test_hand_checkable_brevity_penalty():
    # Every n-gram of the hypothesis matches (precisions 4/4, 3/3, 2/2, 1/1);
    # it is 4 words for a 6-word reference: BP = exp(1 - 6/4).
    score = corpus_bleu(["the cat is on the mat"], ["the cat is on"])
    assert score == pytest.approx(100 * math.exp(1 - 6 / 4), abs=1e-6)
    assert corpus_bleu(["the cat is on the mat"], ["the cat is on the mat"]) == pytest.approx(100.0)


@pytest.mark.parametrize("tokenize", ["13a", "intl", "char"])
def test_matches_sacrebleu(tokenize):
    expected = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES], tokenize=tokenize).score
    assert corpus_bleu(REFERENCES, HYPOTHESES, tokenize=tokenize) == pytest.approx(expected)
    lowered = sacrebleu.corpus_bleu(
        HYPOTHESES, [REFERENCES], tokenize=tokenize, lowercase=True
    ).score
    assert corpus_bleu(REFERENCES, HYPOTHESES, tokenize=tokenize, lowercase=True) == pytest.approx(
        lowered
    )


def test_multiple_references():
    second = [
        "A cat is on the mat.",
        "A cat is on the mat.",
        "Die Katze ist auf der Matte.",
        "猫在垫子上面。",
        "我们今天学习识别。",
    ]
    expected = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES, second]).score
    assert corpus_bleu(list(zip(REFERENCES, second)), HYPOTHESES) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same number"):
        corpus_bleu([["a"], ["b", "c"]], ["a", "b"])


def test_by_language_uses_language_tokenizers():
    assert default_tokenize("zh-CN") == "zh" and default_tokenize("ja") == "char"
    assert default_tokenize("de") == "13a"
    scores = bleu_by_language(REFERENCES, HYPOTHESES, LANGUAGES)
    expected = {
        "en": sacrebleu.corpus_bleu(HYPOTHESES[:2], [REFERENCES[:2]]).score,
        "de": sacrebleu.corpus_bleu(HYPOTHESES[2:3], [REFERENCES[2:3]]).score,
        "zh": sacrebleu.corpus_bleu(HYPOTHESES[3:], [REFERENCES[3:]], tokenize="zh").score,
    }
    for language, value in expected.items():
        assert scores[language] == pytest.approx(value)
    assert scores["average"] == pytest.approx(sum(expected.values()) / 3)
    # Chinese without its tokenizer scores differently (whole sentences as words).
    assert bleu_by_language(REFERENCES, HYPOTHESES, LANGUAGES, tokenize="13a")[
        "zh"
    ] != pytest.approx(expected["zh"])
    overridden = bleu_by_language(REFERENCES, HYPOTHESES, LANGUAGES, tokenize={"zh": "char"})
    assert overridden["zh"] == pytest.approx(
        sacrebleu.corpus_bleu(HYPOTHESES[3:], [REFERENCES[3:]], tokenize="char").score
    )
    assert overridden["en"] == pytest.approx(expected["en"])
