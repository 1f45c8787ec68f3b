"""recipes/slm.py (and the LM of recipes/lm.py) checkpoint every phase and
resume: the smoke config end to end, then a rerun after losing the adapter's
last checkpoint and the LM preset resumes each phase where it stopped and
ends where the uninterrupted run did."""

import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_slam import checkpointing
from keras_slam.models.speech_language_model import split_instruction_batch
from recipes import slm
from tests import test_case
from tests.conftest import reset_seeds_and_policy
from tests.models.test_speech_language_model import batch, make_slm


@pytest.mark.slow(backend="torch")
def test_smoke_config_checkpoints_every_phase_and_resumes(tmp_path, capsys):
    output = str(tmp_path)
    args = checkpointing.default_training_arguments()
    args.checkpoint_every_steps = 2
    speech = os.path.join(output, "speech")
    first = slm.run(output, "smoke", verbose=0, args=args, speech_cache=speech)
    steps = {
        "lm": slm.SMOKE["lm"]["steps"],
        "encoder": slm.SMOKE["asr_steps"],
        "adapter": slm.SMOKE["adapter_steps"],
    }
    for phase, last in steps.items():
        saved = checkpointing.TrainingCheckpoint(os.path.join(output, "checkpoints", phase))
        assert [step for step, _ in saved.checkpoints()][-1] == last, (phase, saved.checkpoints())
    capsys.readouterr()

    # Lose the adapter's last checkpoint (as a kill before it was written)
    # and the LM preset: the LM is restored from its checkpoint, the
    # encoder's finished phase restored, the adapter resumed at step 2.
    adapter = checkpointing.TrainingCheckpoint(os.path.join(output, "checkpoints", "adapter"))
    shutil.rmtree(adapter.checkpoints()[-1][1])
    shutil.rmtree(os.path.join(output, "lm", "preset"))
    second = slm.run(output, "smoke", verbose=0, args=args, speech_cache=speech)
    out = capsys.readouterr().out
    for phase in ("lm", "encoder"):
        assert f"resumed from step {steps[phase]} " in out, (phase, out[-2000:])
    assert f"resumed from step {steps['adapter'] - 2} " in out, out[-2000:]
    np.testing.assert_allclose(
        second["lm"]["held_out_perplexity"], first["lm"]["held_out_perplexity"], rtol=1e-5
    )
    np.testing.assert_allclose(second["ctc_cer"], first["ctc_cer"], rtol=1e-6)
    np.testing.assert_allclose(
        second["adapter_loss_first_last"], first["adapter_loss_first_last"], rtol=1e-5
    )


def test_slm_resumes_from_a_training_checkpoint(tmp_path):
    """Before: a freshly built SLM refused `load_weights` ("not yet been
    built"), so the recipe's adapter phase could not resume."""
    reset_seeds_and_policy()
    trained, fresh = make_slm(), make_slm()
    x, y = split_instruction_batch(batch(trained))
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    for model in (trained, fresh):
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
    checkpointing.fit(
        trained, dataset, 1, 1, checkpointing.TrainingCheckpoint(str(tmp_path)), verbose=0
    )
    assert checkpointing.TrainingCheckpoint(str(tmp_path)).restore(fresh) == 1
    for a, b in zip(trained.weights, fresh.weights):
        np.testing.assert_array_equal(test_case.to_numpy(a), test_case.to_numpy(b), err_msg=a.path)
