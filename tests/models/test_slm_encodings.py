"""The SLM trains on precomputed frozen encodings (`speech_encodings`) as
it does on features: same outputs, and the recipe's batches carry them."""

import numpy as np

from keras_slam.data import instructions
from tests import test_case
from tests.conftest import reset_seeds_and_policy
from tests.models.test_speech_language_model import batch, make_slm


def test_precomputed_encodings_give_the_outputs_of_features():
    reset_seeds_and_policy()
    slm = make_slm()
    inputs = batch(slm)
    encodings, encodings_mask = slm.frozen_encodings(
        inputs["speech_features"], inputs["speech_padding_mask"]
    )
    from_encodings = {
        k: v for k, v in inputs.items() if k not in ("speech_features", "speech_padding_mask")
    }
    from_encodings["speech_encodings"] = encodings
    from_encodings["speech_encodings_padding_mask"] = encodings_mask
    expected, actual = slm(inputs), slm(from_encodings)
    mask = test_case.to_numpy(expected["padding_mask"])[..., None] > 0
    np.testing.assert_allclose(
        test_case.to_numpy(actual["logits"]) * mask,
        test_case.to_numpy(expected["logits"]) * mask,
        atol=1e-5,
    )


def test_instruction_batches_name_their_speech_keys():
    rng = np.random.default_rng(0)
    encodings = [rng.normal(size=(n, 6)).astype("float32") for n in (3, 5)]
    examples = [(0, "transcribe", "Transcribe.", "ab"), (1, "language", "Which?", "c")]
    keys = ("speech_encodings", "speech_encodings_padding_mask")
    (out,) = instructions.instruction_batches(
        examples, encodings, lambda t: [1] * len(t), lambda t: [2] * len(t), 2, 7, 12, 4,
        speech_keys=keys,
    )  # fmt: skip
    assert "speech_features" not in out
    assert out[keys[0]].shape == (2, 7, 6)
    np.testing.assert_array_equal(out[keys[1]].sum(axis=1), [3, 5])
    np.testing.assert_array_equal(out[keys[0]][1, :5], encodings[1])
