"""Command-line options of the classify and st recipes that choose what
runs: `recipes.classify --runs` (rows of RUNS by name) and
`recipes.st --finetune-steps` (steps per setting)."""

import pytest

from recipes import classify, st


def test_select_runs_keeps_the_given_order():
    assert classify.select_runs(
        ["intent-text-pretrained-probe", "language_id-speech-random-probe"]
    ) == (("intent", "text", "pretrained", "probe"), ("language_id", "speech", "random", "probe"))


def test_an_unknown_run_is_named_before_any_data_is_built(tmp_path):
    with pytest.raises(ValueError, match=r"unknown \['intent-speech-pretrained-linear'\]"):
        classify.run(
            "classify_smoke",
            str(tmp_path),
            str(tmp_path / "data"),
            runs=["intent-speech-pretrained-linear"],
        )
    assert not (tmp_path / "data").exists()


def test_command_lines_pass_runs_and_finetune_steps(monkeypatch, tmp_path):
    calls = []
    record = lambda *args, **kwargs: calls.append(kwargs)  # noqa: E731
    monkeypatch.setattr(classify, "run", record)
    monkeypatch.setattr(st, "run", record)
    classify.main(["--output", str(tmp_path), "--runs", "intent-text-random-finetune"])
    st.main(["--output", str(tmp_path), "--finetune-steps", "7"])
    assert calls[0]["runs"] == ["intent-text-random-finetune"]
    assert calls[1]["finetune_steps"] == 7
