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
from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_language_model import SpeechLanguageModel, split_instruction_batch
from keras_slam.models.speech_recognizer import SpeechRecognizer
from recipes import asr, slm
from tests import test_case
from tests.conftest import reset_seeds_and_policy
from tests.models.test_speech_language_model import batch, make_slm


def no_generation(*args, **kwargs):
    """Stands in for `slm.evaluate` (greedy generation, ~9 CPU s of the smoke
    run on torch) in a rerun whose SLM scores no assertion reads."""
    return {}, {}


@pytest.mark.slow(backend="torch")
def test_smoke_config_checkpoints_every_phase_and_resumes(tmp_path, capsys, monkeypatch):
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
    monkeypatch.setattr(slm, "evaluate", no_generation)  # the first run evaluated
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


def tiny_backbone(tokenizer):
    """A one-layer SLAM backbone over the recipe's character vocabulary."""
    return SLAMBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        hidden_dim=16,
        num_speech_layers=1,
        num_shared_layers=1,
        subsampling_filters=4,
        conformer=ConformerConfig(num_heads=2, ffn_dim=32, conv_norm_groups=4),
    )


@pytest.mark.slow(backend="jax")
def test_encoder_preset_is_the_frozen_encoder_and_no_encoder_is_trained(tmp_path, monkeypatch):
    """`--encoder-preset`: the SLM's frozen encoder is the preset's backbone,
    weight for weight, reading the layer the preset's CTC head reads (here
    the speech tower of a SLAM backbone, not its shared encoder); the
    encoder phase trains nothing."""
    tokenizer = asr.build_tokenizer()
    backbone = tiny_backbone(tokenizer)
    preprocessor = SpeechRecognizerPreprocessor(
        audio_converter=asr.make_front_end(), tokenizer=tokenizer
    )
    recognizer = SpeechRecognizer(backbone, preprocessor=preprocessor, use_shared_encoder=False)
    preset = str(tmp_path / "recognizer")
    recognizer.save_to_preset(preset)

    def no_encoder_training(*args, **kwargs):
        raise AssertionError("--encoder-preset must skip training an encoder")

    monkeypatch.setattr(slm, "train_encoder", no_encoder_training)
    # No speech-translation row (an empty `st_directions`): no assertion
    # reads it, and its translator's fine-tuning and greedy scoring were
    # 23% of this test's CPU on JAX (the torch smoke test trains that row).
    monkeypatch.setitem(slm.CONFIGS, "smoke", dict(slm.SMOKE, st_directions=()))
    output = tmp_path / "run"
    argv = ["--config", "smoke", "--output", str(output), "--encoder-preset", preset]
    assert slm.main([*argv, "--speech-cache", str(tmp_path / "speech")]) == 0

    assert not (output / "checkpoints" / "encoder").exists()
    trained = SpeechLanguageModel.from_preset(str(output / "slm_preset"))
    assert not trained.use_shared_encoder
    assert len(trained.speech_encoder.weights) == len(backbone.weights)
    for weight, preset_weight in zip(trained.speech_encoder.weights, backbone.weights):
        np.testing.assert_array_equal(
            test_case.to_numpy(weight), test_case.to_numpy(preset_weight), err_msg=weight.path
        )


def test_encoder_preset_must_be_a_recognizer_task(tmp_path):
    """A backbone-only preset (no recognizer head or front end) or a missing
    directory is refused before anything trains, naming the preset."""
    tokenizer = asr.build_tokenizer()
    backbone = tiny_backbone(tokenizer)
    preset = str(tmp_path / "backbone")
    tokenizer.save_to_preset(preset)
    backbone.save_to_preset(preset)
    output = tmp_path / "run"
    with pytest.raises(ValueError, match="backbone.*is not a SpeechRecognizer task preset"):
        slm.run(str(output), config_name="smoke", encoder_preset=preset)
    with pytest.raises(ValueError, match="missing.*no such directory"):
        slm.run(str(output), config_name="smoke", encoder_preset=str(tmp_path / "missing"))
    assert not output.exists()


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
