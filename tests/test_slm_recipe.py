"""recipes/slm.py (and the LM of recipes/lm.py) checkpoint every phase and
resume: the smoke config end to end, then a rerun after losing the adapter's
last checkpoint and the LM preset resumes each phase where it stopped and
ends where the uninterrupted run did."""

import os
import shutil

import numpy as np
import pytest

from keras_slam import checkpointing
from recipes import slm


@pytest.mark.slow(backend="torch")
def test_smoke_config_checkpoints_every_phase_and_resumes(tmp_path, capsys):
    output = str(tmp_path)
    args = checkpointing.default_training_arguments()
    args.checkpoint_every_steps = 2
    first = slm.run(output, "smoke", verbose=0, args=args)
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
    second = slm.run(output, "smoke", verbose=0, args=args)
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
