"""recipes/slm.py's adapter examples: utterances over `max_seconds` and
responses over `response_length` tokens are skipped and counted (before,
a fixed `max_frames` of 1,024 feature frames raised mid-training on the
sample's 7.4 s training utterance), and the batch length is the longest
kept encoding; `instruction_dataset` gathers each example's speech."""

import numpy as np
import pytest

from keras_slam.data import instructions
from recipes import slm as slm_recipe
from tests.conftest import reset_seeds_and_policy
from tests.models.test_speech_language_model import FEATURE_DIM, make_slm


def test_training_examples_skip_and_count_what_is_too_long():
    reset_seeds_and_policy()
    slm = make_slm()
    rate = slm_recipe.SAMPLE_RATE

    def record(seconds, transcript):
        waveform = np.zeros(int(seconds * rate), "float32")
        return {"waveform": waveform, "transcript": transcript, "language": "en"}

    records = [record(1.0, "hello"), record(3.0, "good day"), record(1.5, "a cat sat on the mat")]
    encodings = [np.zeros((n, 4), "float32") for n in (5, 15, 7)]
    config = dict(slm_recipe.TINY, max_seconds=2.0, response_length=12)
    examples, skipped, max_frames = slm_recipe.training_examples(slm, records, encodings, config)
    # Record 1 is too long (both its families); record 2's transcript has
    # 20 + 1 response tokens (character pieces), its language name 7 + 1.
    assert skipped == {"too_long_speech": 2, "too_long_response": 1}
    assert [(index, family) for index, family, *_ in examples] == [
        (0, "transcribe"),
        (0, "language"),
        (2, "language"),
    ]
    assert max_frames == 7


RECORDS = [
    {"transcript": "Guten Tag", "language": "de", "translation": "Good day",
     "target_language": "en"},
    {"transcript": "hello there world", "language": "en"},
]  # fmt: skip


def _dataset(features, **kwargs):
    examples = instructions.instruction_examples(RECORDS)
    # Response ids: the answer's length (unique here), so a row names its example.
    dataset = slm_recipe.instruction_dataset(
        examples,
        features,
        lambda text: [2] + [4] * len(text.split()),
        lambda text: [len(text), 1],
        batch_size=len(examples),
        max_frames=8,
        prompt_length=12,
        response_length=3,
        **kwargs,
    )
    return examples, dataset


def test_instruction_dataset_batches_gather_each_examples_speech():
    features = [np.full((5, 3), 1.0, "float32"), np.full((7, 3), 2.0, "float32")]
    keys = ("speech_encodings", "speech_encodings_padding_mask")
    examples, dataset = _dataset(features, speech_keys=keys)
    record_of = {len(answer): index for index, *_, answer in examples}
    epochs = [next(iter(dataset.skip(i).take(1))) for i in range(2)]
    for batch in epochs:
        batch = {k: v.numpy() for k, v in batch.items()}
        assert "speech_features" not in batch
        assert batch[keys[0]].shape == (5, 8, 3)
        assert batch["prompt_token_ids"].shape == (5, 12)
        records = [record_of[int(ids[0])] for ids in batch["response_token_ids"]]
        assert sorted(records) == sorted(index for index, *_ in examples)
        np.testing.assert_array_equal(batch[keys[0]][:, 0, 0], [i + 1.0 for i in records])
        np.testing.assert_array_equal(batch[keys[1]].sum(axis=1), [(5, 7)[i] for i in records])
    # Repeats, reshuffled: each epoch is the examples once, in another order.
    assert not np.array_equal(
        epochs[0]["response_token_ids"].numpy(), epochs[1]["response_token_ids"].numpy()
    )


def test_instruction_dataset_names_the_record_or_example_too_long():
    with pytest.raises(ValueError, match="record 1: 9 speech frames > 8"):
        _dataset([np.ones((5, 3), "float32"), np.ones((9, 3), "float32")])


def test_word_recall_counts_listed_words_in_their_own_hypothesis():
    listed = [["Candelas", "entra"], ["Genuß"]]
    hypotheses = ["candelas, y sol", "Der Genuß."]
    assert slm_recipe.word_recall(listed, hypotheses) == 2 / 3
    assert slm_recipe.word_recall(listed, hypotheses[::-1]) == 0.0


def test_evaluate_compares_biasing_with_plain_transcription_in_any_order():
    reset_seeds_and_policy()
    slm = make_slm()
    rng = np.random.default_rng(0)
    records = [
        {"transcript": "hello there world", "language": "en"},
        {"transcript": "Guten Tag", "language": "de"},
        {"transcript": "good day", "language": "en"},
    ]
    features = [rng.normal(size=(n, FEATURE_DIM)).astype("float32") for n in (9, 12, 7)]
    # The held-out family first: it is scored after every family has responded.
    families = ("contextual_biasing", "transcribe")
    # 3 utterances in batches of 2: the last batch has a filler row.
    results, examples = slm_recipe.evaluate(slm, records, features, families, 3, batch_size=2)
    biasing = results["contextual_biasing"]
    assert biasing["items"] == results["transcribe"]["items"] == 3
    assert biasing["transcribe_cer"] == results["transcribe"]["cer"]
    plain = [hypothesis for _, hypothesis in examples["transcribe"]]
    listed = [instructions.biasing_words(r["transcript"]) for r in records]
    assert biasing["transcribe_word_recall"] == slm_recipe.word_recall(listed, plain)
    assert 0.0 <= biasing["word_recall"] <= 1.0


def test_evaluate_biasing_without_transcribe_is_a_clear_error():
    records = [{"transcript": "hello there world", "language": "en"}]
    features = [np.zeros((9, FEATURE_DIM), "float32")]
    with pytest.raises(ValueError, match="add 'transcribe' to families"):
        slm_recipe.evaluate(None, records, features, ("contextual_biasing",), 3)
