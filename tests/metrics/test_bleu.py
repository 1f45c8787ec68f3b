import json
import math
import subprocess
import sys

import pytest
import sacrebleu

from keras_slam.metrics.bleu import (
    bleu_by_language,
    chrf_by_language,
    corpus_bleu,
    corpus_chrf,
    default_tokenize,
    translation_scores,
)

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


def sacrebleu_cli(tmp_path, references, hypotheses, *options):
    """[BLEU, chrF] from `python -m sacrebleu` on files holding the sentences."""
    ref_file, hyp_file = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref_file.write_text("\n".join(references) + "\n", encoding="utf-8")
    hyp_file.write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "sacrebleu", str(ref_file), "-i", str(hyp_file)]
    command += ["-m", "bleu", "chrf", "--score-only", "--width", "10", *options]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


# "intl" splits the Unicode punctuation that 13a keeps inside words ("»x«").
TRANSLATION_REFERENCES = [
    "Could not write the index file.",
    "The option »--force« is not allowed here.",
    "Unknown error (code 7).",
    "Das Verzeichnis ist leer.",
    "Datei »a.txt« nicht gefunden.",
]
TRANSLATION_HYPOTHESES = [
    "Could not write index file.",
    "The option »--force« is not allowed.",
    "Unknown failure (code 7).",
    "Das Verzeichnis ist nicht leer.",
    "Datei »a.txt« wurde nicht gefunden.",
]


@pytest.mark.parametrize("tokenize, lowercase", [("13a", False), ("intl", False), ("char", True)])
def test_bleu_and_chrf_equal_the_sacrebleu_command_line(tmp_path, tokenize, lowercase):
    refs, hyps = TRANSLATION_REFERENCES, TRANSLATION_HYPOTHESES
    case = ["--lowercase", "--chrf-lowercase"] if lowercase else []
    bleu, chrf = sacrebleu_cli(tmp_path, refs, hyps, "--tokenize", tokenize, *case)
    assert corpus_bleu(refs, hyps, tokenize, lowercase) == pytest.approx(bleu, abs=1e-8)
    assert corpus_chrf(refs, hyps, lowercase) == pytest.approx(chrf, abs=1e-8)
    # One pair holding every sentence scores the same.
    scores = translation_scores(refs, hyps, ["x"] * 5, ["y"] * 5, tokenize, lowercase)
    assert scores.pairs["x-y"].bleu == pytest.approx(bleu, abs=1e-8)
    assert scores.pairs["x-y"].chrf == pytest.approx(chrf, abs=1e-8)
    assert f"tok:{tokenize}" in scores.pairs["x-y"].bleu_signature


def test_chrf_plus_plus_equals_the_command_line(tmp_path):
    refs, hyps = TRANSLATION_REFERENCES, TRANSLATION_HYPOTHESES
    _, chrf_plus_plus = sacrebleu_cli(tmp_path, refs, hyps, "--chrf-word-order", "2")
    assert corpus_chrf(refs, hyps, word_order=2) == pytest.approx(chrf_plus_plus, abs=1e-8)
    assert corpus_chrf(refs, hyps) != pytest.approx(chrf_plus_plus)


def test_scores_per_language_pair_equal_the_command_line_on_each_pair(tmp_path):
    sources = ["de", "de", "fr", "en", "en"]
    targets = ["en", "en", "en", "de", "de"]
    refs, hyps = TRANSLATION_REFERENCES, TRANSLATION_HYPOTHESES
    scores = translation_scores(refs, hyps, sources, targets)
    assert list(scores.pairs) == ["de-en", "en-de", "fr-en"]
    expected = {
        "de-en": sacrebleu_cli(tmp_path, refs[:2], hyps[:2]),
        "fr-en": sacrebleu_cli(tmp_path, refs[2:3], hyps[2:3]),
        "en-de": sacrebleu_cli(tmp_path, refs[3:], hyps[3:]),
    }
    for pair, (bleu, chrf) in expected.items():
        assert scores.pairs[pair].bleu == pytest.approx(bleu, abs=1e-8), pair
        assert scores.pairs[pair].chrf == pytest.approx(chrf, abs=1e-8), pair
        assert scores.pairs[pair].sentences == {"de-en": 2, "fr-en": 1, "en-de": 2}[pair]
    assert scores.bleu == pytest.approx(sum(b for b, _ in expected.values()) / 3)
    assert scores.chrf == pytest.approx(sum(c for _, c in expected.values()) / 3)
    report = json.loads(json.dumps(scores.as_dict()))
    assert report["average"]["sentences"] == 5
    assert report["pairs"]["fr-en"]["chrf"] == pytest.approx(expected["fr-en"][1], abs=1e-8)
    lines = scores.table().splitlines()
    assert lines[0].split() == ["pair", "BLEU", "chrF", "sentences"]
    assert lines[1].split() == [
        "de-en",
        f"{expected['de-en'][0]:.2f}",
        f"{expected['de-en'][1]:.2f}",
        "2",
    ]
    assert lines[-1].split()[0] == "average" and lines[-1].split()[-1] == "5"
    # chrF per target language groups de-en with fr-en.
    by_target = chrf_by_language(refs, hyps, targets)
    assert by_target["en"] == pytest.approx(corpus_chrf(refs[:3], hyps[:3]))


def test_translation_scores_name_bad_input():
    with pytest.raises(ValueError, match="no hypotheses"):
        translation_scores([], [], [], [])
    with pytest.raises(ValueError, match="2 hypotheses but 1 source and 2 target"):
        translation_scores(["a", "b"], ["a", "b"], ["de"], ["en", "en"])
    with pytest.raises(ValueError, match="3 references, 2 hypotheses"):
        translation_scores(["a", "b", "c"], ["a", "b"], ["de"] * 2, ["en"] * 2)
