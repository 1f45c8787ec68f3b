"""recipes/classify.py end to end on its smoke config: data, brief pre-training,
a speech-trained head and a text-trained head scored zero-shot on speech."""

import json
import os

import pytest

from recipes import classify


@pytest.mark.slow(backend="tensorflow")
def test_smoke_config_trains_scores_and_saves_every_classifier(tmp_path):
    pytest.importorskip("espeakng_loader")
    rows = classify.run("classify_smoke", str(tmp_path / "out"), str(tmp_path / "data"))
    assert [(r["train"], r["test"]) for r in rows] == [
        ("speech", "speech"),
        ("text", "text"),
        ("text", "speech (zero-shot)"),
    ]
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["chance"] == 0.5 and row["utterances"] == 4
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["rows"] == rows
    saved = sorted(os.listdir(tmp_path / "out" / "presets"))
    assert saved == ["intent-speech-pretrained-probe", "intent-text-random-finetune"]
    pngs = [name for name in os.listdir(tmp_path / "out") if name.endswith(".png")]
    assert len(pngs) == 3
    table = classify.format_table(rows)
    assert "speech (zero-shot)" in table and "macro-F1" in table
