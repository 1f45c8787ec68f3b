"""The main job (recipes/main.py) runs in its tiny form and reports what it must,
with a held-out CER curve per fine-tuning arm (`--evaluate-every`)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests import test_case

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow(backend="tensorflow")
def test_main_job_tiny(tmp_path):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recipes.main",
            "--tiny",
            "--compare-random-init",
            "--evaluate-every",
            "4",
            "--output",
            str(tmp_path),
            "--synth-cache",
            str(tmp_path / "synth_cache"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=test_case.SUBPROCESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for text in (
        "ctc_loss",
        "contrastive_loss",
        "tlm_loss",
        "en   CER",
        "WER",
        "pre-trained preset",
        "random init",
        "held-out cross-modal prediction",
        "held-out CER during fine-tuning",
    ):
        assert text in result.stdout, text
    with open(tmp_path / "results.json") as file:
        results = json.load(file)
    for name in ("pretrained", "random_init"):
        first, last = results[name]["ctc_loss"]
        assert np.isfinite([first, last]).all() and last < first, (name, first, last)
        rates = results[name]["error_rates"]
        assert rates["en"]["cer"] >= 0.0 and rates["en"]["utterances"] == 20, rates
        assert rates["en gettext"]["cer"] >= 0.0 and rates["en gettext"]["utterances"] == 4, rates
    # Pre-trained vs random init, per test set and language, at equal fine-tuning steps.
    assert set(results["comparison"]) == set(results["pretrained"]["error_rates"])
    for name, row in results["comparison"].items():
        assert row["pretrained"] == results["pretrained"]["error_rates"][name]["cer"], name
        assert row["random_init"] == results["random_init"]["error_rates"][name]["cer"], name
    assert results["pretrained"]["steps"] == results["random_init"]["steps"] == 8
    # The CER curve: held out at step 4, then the final error rates at step 8.
    for name in ("pretrained", "random_init"):
        curve, rates = results[name]["cer_curve"], results[name]["error_rates"]
        assert curve["steps"] == [4, 8], curve
        assert set(curve["cer"]) == {"en", "all", "en gettext", "all gettext"} == set(rates)
        for test_set, values in curve["cer"].items():
            assert len(values) == 2 and all(0.0 <= v <= 2.0 for v in values), (test_set, values)
            assert values[-1] == rates[test_set]["cer"], test_set
    # The synth corpora (unlabelled speech, labelled minutes) were built in the cache.
    summaries = sorted((tmp_path / "synth_cache").glob("en_*h_seed*/summary.json"))
    assert len(summaries) == 2, summaries
    # A few pre-training steps need not lower the total loss; each must be finite.
    for name, (first, last) in results["pretraining"].items():
        assert np.isfinite([first, last]).all(), (name, first, last)
    assert {
        "contrastive_loss",
        "w2v_mlm_loss",
        "text_mlm_loss",
        "tlm_loss",
        "stm_loss",
        "ctc_loss",
    } <= set(results["pretraining"])
    # Masked prediction alone / with the own pair / with another pair, held out.
    for side in ("text", "speech"):
        assert results["pretraining"][f"held_out_cross_modal_{side}_count"][0] > 0, side
        assert f"held_out_cross_modal_{side}_gain_other" in results["pretraining"], side
    # STM's length-only baseline on the same held-out pairs (>= 0.5 by construction).
    assert results["pretraining"]["held_out_stm_length_baseline_pairs"][0] > 0
    assert 0.5 <= results["pretraining"]["held_out_stm_length_baseline_accuracy"][0] <= 1.0
    for name in (
        "pretraining_losses.png",
        "finetuning_losses.png",
        "finetuning_cer.png",
        "pretrained/config.json",
        "pretrained/tokenizer.json",
        "recognizer_pretrained/task.json",
        "recognizer_random_init/task.json",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
