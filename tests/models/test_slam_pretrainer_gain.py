"""`w2v_mlm_gain`: masked prediction against the running code marginal."""

import numpy as np

from keras_slam.models.slam_pretrainer import CODE_COUNT_DECAY
from tests import test_case
from tests.models.test_slam_pretrainer import TASK, build_pretrainer, numpy_tree, sub_batch


def masked_codes(outputs):
    return outputs["speech_code_ids"][..., 0][outputs["speech_code_mask"] > 0].astype("int64")


def test_gain_is_the_running_marginal_ce_minus_the_loss(seeded):
    pretrainer = build_pretrainer(num_codes=64, objectives=("contrastive", "w2v_mlm"))
    first = numpy_tree(pretrainer({"speech": sub_batch(seeded, 4, frames=48)}, training=True))
    counts = np.bincount(masked_codes(first), minlength=64).astype("float32")
    np.testing.assert_allclose(test_case.to_numpy(pretrainer.running_code_counts)[0], counts)

    second = numpy_tree(pretrainer({"speech": sub_batch(seeded, 4, frames=48)}, training=True))
    codes = masked_codes(second)
    running = CODE_COUNT_DECAY * counts + np.bincount(codes, minlength=64)
    baseline = -np.mean(np.log(running[codes] / running.sum()))
    np.testing.assert_allclose(
        second["w2v_mlm_gain"], baseline - second["w2v_mlm_loss"], rtol=1e-5, atol=1e-5
    )
    assert 0 < second["valid_negatives"] <= TASK["num_negatives"]
    # Evaluation reads the counts without moving them.
    pretrainer({"speech": sub_batch(seeded, 4, frames=48)}, training=False)
    np.testing.assert_allclose(test_case.to_numpy(pretrainer.running_code_counts)[0], running)


def test_a_predictor_of_the_code_frequencies_gains_nothing(seeded):
    """Uniform predictions of codes that are uniform in the long run score
    gain 0. The batch's own code entropy (the old baseline) is biased low
    and made the same predictor look worse than chance."""
    pretrainer = build_pretrainer(num_codes=64, objectives=("contrastive", "w2v_mlm"))
    for variable in pretrainer.speech_code_head.weights:
        variable.assign(np.zeros(variable.shape, "float32"))
    pretrainer.running_code_counts.assign(np.full((1, 64), 1e6, "float32"))
    outputs = numpy_tree(pretrainer({"speech": sub_batch(seeded, 2, frames=48)}, training=True))
    np.testing.assert_allclose(outputs["w2v_mlm_loss"], np.log(64), rtol=1e-6)
    assert abs(outputs["w2v_mlm_gain"]) < 1e-3
    frequencies = np.unique(masked_codes(outputs), return_counts=True)[1]
    frequencies = frequencies / frequencies.sum()
    batch_entropy = -np.sum(frequencies * np.log(frequencies))
    assert batch_entropy - outputs["w2v_mlm_loss"] < -0.5
