"""Command-line options of the classify and st recipes that choose what
runs: `recipes.classify --runs` (rows of RUNS by name) and
`recipes.st --finetune-steps` (steps per setting), `--inits` and the configs'
settings (`st.settings`: ST only per encoder init, joint ST + MT per
`joint_inits`)."""

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
    st.main(["--output", str(tmp_path), "--inits", "random_init"])
    assert calls[0]["runs"] == ["intent-text-random-finetune"]
    assert calls[1]["finetune_steps"] == 7 and calls[1]["inits"] == st.ENCODER_INITS
    assert calls[2]["inits"] == ("random_init",)
    with pytest.raises(SystemExit):
        st.main(["--output", str(tmp_path), "--inits", "pre-trained"])


def test_st_settings_are_st_per_init_then_joint_per_joint_init():
    assert st.settings(st.CONFIGS["st_tiny"]) == [
        ("st_pretrained", "pretrained", False),
        ("st_random_init", "random_init", False),
        ("st_mt_pretrained", "pretrained", True),
    ]
    # st_templated: joint ST + MT from the init that translates after the CTC phase.
    templated = st.CONFIGS["st_templated"]
    assert [name for name, _, _ in st.settings(templated)] == [
        "st_pretrained",
        "st_random_init",
        "st_mt_random_init",
    ]
    assert st.settings(templated, inits=("random_init",)) == [
        ("st_random_init", "random_init", False),
        ("st_mt_random_init", "random_init", True),
    ]
    assert st.settings(dict(templated, joint_inits=()), inits=("pretrained",)) == [
        ("st_pretrained", "pretrained", False)
    ]
