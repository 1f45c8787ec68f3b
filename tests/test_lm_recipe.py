"""recipes/lm.py's copying signal: `with_repeats` writes the drawn fraction
of the sentences twice, and `copy_losses` scores each sentence's first and
second occurrence in "s s" (eos left out, sentences that do not fit twice
skipped). Its text instructions: the SLM's layout (`SpeechLanguageModel`
prompt ids + content + response ids), loss on the response only, and the
held-out greedy scores."""

import types

import keras
import numpy as np
import pytest

from keras_slam.data import instructions
from keras_slam.data.tokenizers import train_sentencepiece
from recipes import lm
from tests.models.test_speech_language_model import make_slm

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


def test_instruction_candidates_are_the_trained_families_with_known_answers():
    sentences = [("Hallo Welt", "de"), ("hello", "en")]
    candidates = lm.instruction_candidates(sentences, [("Hola mundo", "Hello world")])
    assert candidates == {
        "transcribe": [("Hallo Welt", "Hallo Welt"), ("hello", "hello")],
        "translate": [("Hola mundo", "Hello world")],
        "language": [("Hallo Welt", "German"), ("hello", "English")],
    }
    assert not set(candidates) & set(instructions.HELD_OUT)


def test_instruction_rows_are_the_slm_layout_with_loss_on_the_response_only():
    slm = make_slm()
    causal_lm = slm.language_model
    causal_lm.preprocessor.sequence_length = 64
    tokenizer = causal_lm.preprocessor.tokenizer
    content = "a cat sat"
    (ids, weights), too_long = lm.instruction_rows(
        causal_lm, [("transcribe", content, content), ("transcribe", "hello world" * 4, "x")]
    )
    prompt = slm.prompt_ids(instructions.INSTRUCTIONS["transcribe"])
    speech = [int(i) for i in keras.ops.convert_to_numpy(tokenizer(content))]
    response = slm.response_ids(content)
    assert prompt[0] == tokenizer.start_token_id and response[-1] == tokenizer.end_token_id
    assert ids == prompt + speech + response
    assert weights == [0] * (len(prompt) + len(speech)) + [1] * len(response)
    assert too_long is None  # 68 character tokens > sequence_length 64 + 1


def test_pack_rows_shifts_targets_and_weights_by_one():
    x, y, weights = lm.pack_rows([([2, 5, 6, 1], [0, 0, 1, 1]), ([2, 7, 1], [0, 1, 1])], 4, 0)
    np.testing.assert_array_equal(x["token_ids"], [[2, 5, 6, 1], [2, 7, 1, 0]])
    np.testing.assert_array_equal(x["padding_mask"], [[1, 1, 1, 1], [1, 1, 1, 0]])
    np.testing.assert_array_equal(y, [[5, 6, 1, 0], [7, 1, 0, 0]])
    np.testing.assert_array_equal(weights, [[0, 1, 1, 0], [1, 1, 0, 0]])


def test_draw_instructions_draws_families_uniformly_among_those_with_items():
    rows = {"transcribe": ["t"], "translate": [], "language": ["l1", "l2"]}
    drawn = lm.draw_instructions(3000, rows, np.random.default_rng(0))
    assert set(drawn) == {"t", "l1", "l2"}
    assert 0.45 < drawn.count("t") / 3000 < 0.55


class _CountingLM:
    """A stand-in causal LM whose greedy next token is the last one + 1,
    and eos (1) after token 9."""

    def __init__(self, sequence_length=8):
        self.preprocessor = types.SimpleNamespace(
            tokenizer=types.SimpleNamespace(end_token_id=1, pad_token_id=0),
            sequence_length=sequence_length,
        )

    def __call__(self, inputs, training=False):
        ids = np.asarray(inputs["token_ids"])
        following = np.where(ids >= 9, 1, ids + 1)
        return np.eye(12, dtype="float32")[following]


def test_greedy_responses_stop_at_eos_max_new_tokens_and_the_sequence_length():
    prefixes = [[2, 7], [2, 3], [2, 3, 4, 5, 6, 7, 8]]  # sequence_length 8
    assert lm.greedy_responses(_CountingLM(), prefixes, 3) == [[8, 9], [4, 5, 6], [9]]
    assert lm.greedy_responses(_CountingLM(), prefixes, 3, batch_size=1)[1] == [4, 5, 6]


def test_instruction_report_scores_greedy_answers_against_the_references(monkeypatch):
    texts = SENTENCES + list(instructions.INSTRUCTIONS.values()) + ["English", "German"]
    proto = train_sentencepiece(
        texts, vocab_size=80, model_type="char", control_symbols=[], **lm.GEMMA_PIECES
    )
    causal_lm = lm.build_causal_lm(proto, dict(lm.SMOKE, sequence_length=64))
    tokenizer = causal_lm.preprocessor.tokenizer
    seen = []

    def always_english(model, prefixes, max_new_tokens):
        seen.extend(prefixes)
        return [[int(i) for i in keras.ops.convert_to_numpy(tokenizer("English"))]] * len(prefixes)

    monkeypatch.setattr(lm, "greedy_responses", always_english)
    sentences = [("the cat", "en"), ("a dog", "de"), ("the sun is hot today" * 3, "en")]
    report = lm.instruction_report(causal_lm, sentences, [("we read", "English")], 5, 4)
    # The third sentence does not fit 64 tokens twice: left out.
    assert [report[f]["items"] for f in ("transcribe", "language", "translate")] == [2, 2, 1]
    assert report["language"]["accuracy"] == 0.5  # "English" right, "German" wrong
    expected_cer = lm.character_error_rate(["the cat", "a dog"], ["English", "English"])
    assert report["transcribe"]["cer"] == pytest.approx(expected_cer)
    assert report["translate"]["chrf"] == pytest.approx(100.0)
    start = [tokenizer.start_token_id]
    ids = lm.tokenize_texts(tokenizer, [instructions.INSTRUCTIONS["language"], "a dog"])
    assert start + ids[0] + ids[1] in seen  # the prompt and content, no response
    for result in report.values():
        assert result["nats_per_token"] > 0
