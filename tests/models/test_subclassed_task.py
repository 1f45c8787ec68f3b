"""Functional and subclassed Tasks built in any order keep working
(keras-hub shares and rewrites `PipelineModel.__bases__`)."""

import numpy as np

from keras_slam.models.speech_language_model import split_instruction_batch
from keras_slam.models.speech_recognizer import SpeechRecognizer
from tests import test_case
from tests.models.test_speech_language_model import (
    FEATURE_DIM,
    batch,
    make_slm,
    make_speech_encoder,
)


def make_recognizer():
    return SpeechRecognizer(make_speech_encoder(), vocabulary_size=8, spec_augment=None)


def test_functional_and_subclassed_tasks_in_any_order(seeded):
    features = {
        "speech_features": np.random.default_rng(0).normal(size=(2, 12, FEATURE_DIM)),
        "speech_padding_mask": np.ones((2, 12), "float32"),
    }
    built_before = make_recognizer()
    expected = test_case.to_numpy(built_before(features)["logits"])
    slm = make_slm()
    # Before the fix: "Model SpeechRecognizer does not have a `call()` method".
    after = built_before.predict(features, verbose=0)["logits"]
    np.testing.assert_allclose(after, expected, atol=1e-6)

    make_recognizer()
    # Before the fix: the SLM got Functional's `call` ("no attribute '_inputs'").
    x, y = split_instruction_batch(batch(slm))
    loss = test_case.to_numpy(slm.compute_loss(x, y, slm(x)))
    assert np.isfinite(loss)
