"""The SLM trains on precomputed frozen encodings (`speech_encodings`) as
it does on features: the same outputs."""

import numpy as np

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
