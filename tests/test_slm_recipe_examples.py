"""recipes/slm.py's adapter examples: utterances over `max_seconds` and
responses over `response_length` tokens are skipped and counted (before,
a fixed `max_frames` of 1,024 feature frames raised mid-training on the
sample's 7.4 s training utterance), and the batch length is the longest
kept encoding."""

import numpy as np

from recipes import slm as slm_recipe
from tests.conftest import reset_seeds_and_policy
from tests.models.test_speech_language_model import make_slm


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
