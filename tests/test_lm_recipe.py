"""recipes/lm.py's copying signal: `with_repeats` writes the drawn fraction
of the sentences twice, and `copy_losses` scores each sentence's first and
second occurrence in "s s" (eos left out, sentences that do not fit twice
skipped)."""

import numpy as np
import pytest

from keras_slam.data.tokenizers import train_sentencepiece
from recipes import lm

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the sun is hot today",
    "we read a good book",
] * 4


def test_with_repeats_writes_the_drawn_fraction_twice():
    sentences = [f"sentence {i}" for i in range(200)]
    assert lm.with_repeats(sentences, 0.0, np.random.default_rng(0)) == sentences
    doubled = lm.with_repeats(sentences, 1.0, np.random.default_rng(0))
    assert doubled == [f"{s} {s}" for s in sentences]
    mixed = lm.with_repeats(sentences, 0.9, np.random.default_rng(1))
    drawn = np.random.default_rng(1).random(len(sentences)) < 0.9
    assert [m != s for m, s in zip(mixed, sentences)] == list(drawn)
    assert 0.8 < np.mean(drawn) < 1.0


def _causal_lm(sequence_length):
    proto = train_sentencepiece(
        SENTENCES, vocab_size=40, model_type="char", control_symbols=[], **lm.GEMMA_PIECES
    )
    config = dict(lm.SMOKE, sequence_length=sequence_length)
    return lm.build_causal_lm(proto, config)


def test_copy_losses_splits_each_text_at_its_repeat_and_drops_eos(monkeypatch):
    causal_lm = _causal_lm(sequence_length=32)
    tokenizer = causal_lm.preprocessor.tokenizer
    sentences = ["the cat sat", "a dog ran in the park", "we read"]  # the 2nd: 21 chars
    seen = []

    def known_log_likelihoods(model, texts):
        # Per text: -1 on the first copy's tokens, -3 on the repeat's, -100 on eos.
        seen.extend(texts)
        values = []
        for text in texts:
            first = len(tokenizer(text[: len(text) // 2]))
            total = len(tokenizer(text))
            values += [-1.0] * first + [-3.0] * (total - first) + [-100.0]
        return np.array(values)

    monkeypatch.setattr(lm, "token_log_likelihoods", known_log_likelihoods)
    assert lm.copy_losses(causal_lm, sentences) == (1.0, 3.0)
    # Character pieces: 22 tokens twice (+ eos) do not fit 32 tokens: left out.
    assert seen == ["the cat sat the cat sat", "we read we read"]


def test_copy_losses_without_a_sentence_that_fits_twice_is_a_clear_error():
    causal_lm = _causal_lm(sequence_length=16)
    with pytest.raises(ValueError, match="none of the 1 sentences fits twice"):
        lm.copy_losses(causal_lm, ["a dog ran in the park"])
