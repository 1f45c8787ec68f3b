"""End to end: the tiny w2v-BERT pre-training learns more than the code
frequencies (issue 11 item 5), with a codebook that stays in use."""

import numpy as np
import pytest

from recipes import slam


@pytest.mark.slow(backend="jax")
def test_w2v_bert_tiny_beats_the_code_marginal(tmp_path):
    """`w2v_mlm_gain` (masked-prediction cross-entropy below that of the
    running code marginal, in nats) is 0 for a model that has learned only
    the code frequencies; a collapsed codebook would make it trivial, so
    usage and the contrastive accuracy (chance 1 / 21) are checked too."""
    history = slam.pretrain("w2v_bert_tiny", str(tmp_path), steps=250)
    gain = np.asarray(history["w2v_mlm_gain"])
    summary = {k: np.round(history[k], 3).tolist() for k in ("w2v_mlm_gain", "codebook_usage")}
    assert gain[-3:].mean() > 0.1, summary
    assert history["codebook_usage"][-1] >= 0.5, summary
    chance = 1 / (slam.CONFIGS["w2v_bert_tiny"]["pretrainer"]["num_negatives"] + 1)
    assert np.mean(history["contrastive_accuracy"][-3:]) >= 3 * chance, summary
