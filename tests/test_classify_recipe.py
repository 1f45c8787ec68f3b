"""recipes/classify.py end to end on its smoke config: data, brief pre-training,
a speech-trained head and a text-trained head scored zero-shot on speech;
then a rerun after losing the last checkpoint resumes and ends where the
uninterrupted run did."""

import json
import os
import shutil

import numpy as np
import pytest

from keras_slam import checkpointing
from keras_slam.data.tokenizers import SentencePieceTokenizer
from keras_slam.models.speech_classifier import SpeechClassifier
from keras_slam.models.text_classifier import TextClassifier
from recipes import classify

TEXT_RUN = "intent-text-random-finetune"


def preset_weights(path):
    return [np.asarray(w) for w in TextClassifier.from_preset(path).get_weights()]


def test_softmax_regression_separates_and_predicts_held_out_points():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 3
    labels = np.arange(90) % 3
    points = centres[labels] + rng.normal(size=(90, 5))
    weights, bias = classify.fit_softmax_regression(points[:60], labels[:60], 3)
    assert weights.shape == (5, 3) and bias.shape == (3,)
    accuracy = ((points[60:] @ weights + bias).argmax(axis=1) == labels[60:]).mean()
    assert accuracy > 0.9, accuracy
    # No signal in the features: the bias learns the class prior only.
    weights, bias = classify.fit_softmax_regression(np.zeros((4, 2)), np.array([0, 0, 0, 1]), 2)
    np.testing.assert_allclose(weights, 0.0)
    assert bias[0] > bias[1]


def test_ngram_counts_counts_runs_of_tokens_and_drops_unseen_ones():
    counts, index = classify.ngram_counts([[3, 4, 3], [4]], order=2)
    assert sorted(index) == [(3,), (3, 4), (4,), (4, 3)]
    expected = {(3,): [2, 0], (4,): [1, 1], (3, 4): [1, 0], (4, 3): [1, 0]}
    for gram, column in expected.items():
        np.testing.assert_array_equal(counts[:, index[gram]], column)
    # Another split is counted on the training n-grams: (5,) and (4, 4) are dropped.
    counts, _ = classify.ngram_counts([[4, 4, 5], []], order=2, index=index)
    assert counts.shape == (2, 4)
    np.testing.assert_array_equal(counts[:, index[(4,)]], [2, 0])
    assert counts.sum() == 2


@pytest.mark.slow(backend="tensorflow")
def test_smoke_config_trains_scores_saves_and_resumes(tmp_path, capsys):
    pytest.importorskip("espeakng_loader")
    output, data = str(tmp_path / "out"), str(tmp_path / "data")
    args = checkpointing.default_training_arguments()
    args.checkpoint_every_steps = 1
    rows = classify.run("classify_smoke", output, data, args=args)
    assert [(r["train"], r["test"], r["init"]) for r in rows[:3]] == [
        ("speech", "speech", "log-mel"),
        ("text", "text", "3-gram BoW"),
        ("text", "text", "piece BoW"),
    ]
    assert [(r["train"], r["test"]) for r in rows[3:]] == [
        ("speech", "speech"),
        ("text", "text"),
        ("text", "speech (zero-shot)"),
    ]
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["chance"] == 0.5 and row["utterances"] == 4
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["rows"] == rows
    assert os.listdir(data) == ["intent"]  # no language ID run: its corpus is not built
    presets = os.path.join(output, "presets")
    assert sorted(os.listdir(presets)) == ["intent-speech-pretrained-probe", TEXT_RUN]
    speech = SpeechClassifier.from_preset(os.path.join(presets, "intent-speech-pretrained-probe"))
    assert speech.feature_statistics and not speech.preprocessor.audio_converter.normalize_per_bin
    text = TextClassifier.from_preset(os.path.join(presets, TEXT_RUN))
    assert text.pool_encoder_input and isinstance(
        text.preprocessor.tokenizer, SentencePieceTokenizer
    )
    assert text.backbone.vocabulary_size == text.preprocessor.tokenizer.vocabulary_size()
    pngs = [name for name in os.listdir(output) if name.endswith(".png")]
    assert len(pngs) == 6  # 3 references, 2 runs, 1 zero-shot
    table = classify.format_table(rows)
    assert "speech (zero-shot)" in table and "macro-F1" in table

    # A kill after the text run's first step: its last checkpoint and its
    # preset are gone; the rerun trains only that step and ends the same.
    finished = preset_weights(os.path.join(presets, TEXT_RUN))
    checkpoint = checkpointing.TrainingCheckpoint(os.path.join(output, "checkpoints", TEXT_RUN))
    assert [step for step, _ in checkpoint.checkpoints()] == [1, 2]
    shutil.rmtree(checkpoint.checkpoints()[-1][1])
    shutil.rmtree(os.path.join(presets, TEXT_RUN))
    capsys.readouterr()
    rerun = classify.run("classify_smoke", output, data, args=args)
    resumed = [line for line in capsys.readouterr().out.splitlines() if "resumed" in line]
    assert [line.split(" (")[0] for line in resumed] == [
        "resumed from step 2",  # pre-training: finished, not repeated
        "resumed from step 2",  # the speech run: finished
        "resumed from step 1",  # the text run: one step left
    ]
    for expected, actual in zip(finished, preset_weights(os.path.join(presets, TEXT_RUN))):
        np.testing.assert_allclose(actual, expected, atol=1e-6)
    assert [r["accuracy"] for r in rerun] == [r["accuracy"] for r in rows]
