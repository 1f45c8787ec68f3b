import json
import os
import subprocess
import sys
import time

import keras
import pytest

from benchmarks import __main__ as benchmarks_main
from benchmarks import harness, train_step, workloads
from keras_slam.layers.conformer import ConformerEncoder
from tests import test_case

RUN_1 = os.path.join(harness.REPO_ROOT, "benchmarks/results/cpu_2core_2026-12-01_run1.json")


class FakeContender:
    """Returns preset per-step seconds and other processes' cores, one entry
    per round, and logs its turns."""

    def __init__(self, label, rounds_of_seconds, log, other_cores=None):
        self.label, self.rounds_of_seconds, self.log = label, list(rounds_of_seconds), log
        self.other_cores = list(other_cores or [0.0] * len(self.rounds_of_seconds))

    def run_round(self):
        self.log.append(self.label)
        return dict(
            name=f"{self.label} model",
            seconds=self.rounds_of_seconds.pop(0),
            units_per_step=100,
            unit="frames",
            peak_rss_mb=1000.0 + len(self.log),
            build_rss_mb=500.0 + len(self.log),
            wall_seconds=10.0,
            other_cores=self.other_cores.pop(0),
        )


def run_pair(reference_rounds, own_rounds, own_others=None, load=0.0, **rules):
    """The report of one workload: "hf" with `reference_rounds` against "ours"
    with `own_rounds` (s/step, one step a round), on 2 cores at `load`."""
    workload = [
        FakeContender("hf", [[seconds] for seconds in reference_rounds], []),
        FakeContender("ours", [[seconds] for seconds in own_rounds], [], own_others),
    ]
    return harness.run_benchmark(
        {"train": workload},
        {"train": len(reference_rounds)},
        load_average=lambda: (load, load, load),
        cores=2,
        **rules,
    )


def test_summarize_min_median_max_spread():
    stats = harness.summarize([1.2, 1.0, 1.1])
    assert stats == pytest.approx(dict(min=1.0, median=1.1, max=1.2, spread=0.2 / 1.1))


def test_median_interval_covers_the_median_at_90_percent():
    # 4 values: even [min, max] covers the median with 1 - 2 / 2**4 = 87.5% only.
    assert harness.median_interval([3.0, 1.0, 2.0, 4.0]) is None
    assert harness.MIN_ROUNDS == 5
    # 5 to 7 values: [min, max] (93.8% at 5); from 8, the second smallest and
    # largest (1 - 2 * (1 + 8) / 2**8 = 93.0%).
    assert harness.median_interval([5.0, 1.0, 3.0, 2.0, 4.0]) == (1.0, 5.0)
    assert harness.median_interval([9.0, 1.0, 3.0, 2.0, 4.0, 5.0, 6.0, 7.0]) == (2.0, 7.0)


def test_rounds_interleave_contenders_and_take_each_rounds_median():
    log = []
    contenders = [
        FakeContender("hf", [[2.0, 9.0, 2.1]] * 3, log),
        FakeContender("ours", [[1.0, 1.0, 5.0]] * 3, log),
        FakeContender("third", [[3.0]] * 3, log),
    ]
    results = harness.run_interleaved(contenders, rounds=3)
    assert log == ["hf", "ours", "third"] * 3
    # One slow step in a round does not move the round's median.
    assert [r["round_seconds"] for r in results] == [[2.1] * 3, [1.0] * 3, [3.0] * 3]
    assert results[0]["step_seconds"][0] == [2.0, 9.0, 2.1]
    assert results[0]["round_wall_seconds"] == [10.0] * 3
    assert results[0]["peak_rss_mb"] == 1007.0  # the largest of its rounds (turns 1, 4, 7)
    assert results[0]["build_rss_mb"] == 507.0


def test_noise_common_to_a_round_cancels_in_the_paired_ratio():
    # Both contenders 1.0-1.5x slower together from round to round: each
    # one's own spread is (3.0 - 2.0) / 2.2 = 45%, but ours is 1.5x faster
    # in every round.
    reference = [2.0, 2.6, 2.2, 3.0, 2.1]
    report = run_pair(reference, [seconds / 1.5 for seconds in reference])
    hf, ours = report["workloads"]["train"]
    assert hf["ratio"] == "reference" and ours["spread"] == pytest.approx(1.0 / 2.2)
    assert ours["ratio"] == "1.50x (1.50-1.50)"
    assert ours["ratio_spread"] == pytest.approx(0.0, abs=1e-12)
    assert ours["throughput"] == pytest.approx(100 / (2.2 / 1.5))
    table = harness.markdown_table(report)
    assert "UNDER LOAD" not in table and "| train | ours model |" in table
    # The largest peak RSS at the end and after the build: its 5th round's 1005 and 505 MB.
    assert table.splitlines()[-1].endswith("| 0.98 GB | 0.49 GB |")
    assert "train: 5 of 5 rounds kept" in table


def test_a_contender_slower_in_every_round_has_a_ratio_below_one():
    reference = [2.0, 2.5, 2.1, 2.8, 2.2]
    jitter = [0.0, 0.01, -0.01, 0.02, 0.0]
    ours = [1.25 * seconds * (1 + noise) for seconds, noise in zip(reference, jitter)]
    result = run_pair(reference, ours)["workloads"]["train"][1]
    # Per-round ratios 1 / (1.25 (1 + jitter)): 0.800, 0.792, 0.808, 0.784, 0.800.
    assert result["ratio_median"] == pytest.approx(0.8)
    assert (result["ratio_low"], result["ratio_high"]) == pytest.approx((0.8 / 1.02, 0.8 / 0.99))
    assert result["ratio"] == "0.80x (0.78-0.81)"


def test_rounds_that_disagree_are_refused():
    # Noise that hits one contender of a round does not cancel: ratios 2.00,
    # 1.54, 1.82, 2.11, 1.67, median 1.82, interval spread 0.57 / 1.82 = 31%.
    reference, ours = [2.0] * 5, [1.0, 1.3, 1.1, 0.95, 1.2]
    assert run_pair(reference, ours)["workloads"]["train"][1]["ratio"] == (
        "unstable: ratio spread 31% > 10%"
    )
    # A looser threshold prints the same rounds.
    loose = run_pair(reference, ours, max_spread=0.35)["workloads"]["train"][1]
    assert loose["ratio"] == "1.82x (1.54-2.11)"


def test_fewer_than_five_rounds_give_no_ratio():
    result = run_pair([2.0] * 3, [1.0] * 3)["workloads"]["train"][1]
    assert result["ratio"] == "unstable: 3 of 3 rounds kept, < 5 for a 90% interval"
    assert result["round_ratios"] == [2.0] * 3 and result["ratio_median"] is None


def test_a_round_with_other_processes_busy_is_discarded():
    # In round 3 another process used 0.5 cores while ours ran, and ours was slow.
    reference, ours = [2.0] * 6, [1.0, 1.0, 1.5, 1.0, 1.0, 1.0]
    others = [0.0, 0.05, 0.5, 0.0, 0.0, 0.0]
    report = run_pair(reference, ours, others)
    assert report["rounds"]["train"]["kept"] == [0, 1, 3, 4, 5]
    assert report["workloads"]["train"][1]["ratio"] == "2.00x (2.00-2.00)"
    table = harness.markdown_table(report)
    assert report["under_load"] and not table.startswith("UNDER LOAD")
    assert "train: 5 of 6 rounds kept; other processes' cores per round: 0.00, 0.05, 0.50" in table
    # With 5 rounds, 4 are left: no ratio.
    report = run_pair(reference[:5], ours[:5], others[:5])
    assert report["workloads"]["train"][1]["ratio"] == (
        "unstable: 4 of 5 rounds kept, < 5 for a 90% interval; others > 0.10 cores in round 3 (0.50)"
    )
    # allow_load keeps the round: its slow ratio is in, the table says UNDER LOAD.
    report = run_pair(reference, ours, others, allow_load=True, max_spread=0.5)
    assert report["workloads"]["train"][1]["ratio"] == "2.00x (1.33-2.00)"
    assert harness.markdown_table(report).startswith("UNDER LOAD: 2 cores")


def test_unmeasured_other_processes_discard_the_round():
    others = [0.0, None, 0.0, 0.0, 0.0]
    report = run_pair([2.0] * 5, [1.0] * 5, others)
    assert report["workloads"]["train"][1]["ratio"].endswith("in round 2 (unmeasured)")


def test_the_load_average_is_information_only():
    # A load average of 1.9 on 2 cores (an install that just ended) with
    # quiet rounds does not refuse the ratio.
    report = run_pair([2.0] * 5, [1.0] * 5, load=1.9)
    assert report["workloads"]["train"][1]["ratio"] == "2.00x (2.00-2.00)"
    assert (report["load_before"], report["load_after"], report["under_load"]) == (1.9, 1.9, False)
    assert harness.markdown_table(report).startswith(
        "2 cores; load average 1.90 before, 1.90 after (information only)"
    )


def test_from_json_reanalyses_a_saved_report(tmp_path, capsys):
    output = tmp_path / "report.json"
    benchmarks_main.main(["--from-json", RUN_1, "--output", str(output)])
    table = capsys.readouterr().out
    # Run 1 (3 rounds, the first with 0.13 cores of a pip install's tail).
    assert (
        "train_8x250: 2 of 3 rounds kept; other processes' cores per round: 0.13, 0.03, 0.03"
        in (table)
    )
    assert (
        "| train_8x250 | HF Wav2Vec2Bert (torch, sdpa) | 4.4414 | 4.3589 | 3% | 450 frames/s |"
        in (table)
    )
    report = json.loads(output.read_text())
    jax = report["workloads"]["train_8x250"][1]
    assert jax["round_ratios"] == pytest.approx(
        [4.4868 / 5.7463, 4.4414 / 5.2490, 4.3589 / 5.3374], rel=1e-4
    )
    assert jax["ratio"] == (
        "unstable: 2 of 3 rounds kept, < 5 for a 90% interval; others > 0.10 cores in round 1 (0.13)"
    )
    # The raw measurements are kept, so a re-analysed report re-analyses to itself.
    assert harness.analyse_report(report) == report
    with open(RUN_1) as file:
        saved = json.load(file)["workloads"]["train_8x250"][1]
    assert jax["step_seconds"] == saved["step_seconds"]


def test_remat_both_runs_each_train_contender_without_and_with_remat(monkeypatch):
    plans = []
    monkeypatch.setattr(harness, "run_benchmark", lambda plan, rounds, **_: plans.append(plan))
    args = ["--workloads", "train_4x750", "features", "--remat", "both", "--backends", "jax"]
    benchmarks_main.run(benchmarks_main.parse_args(args), {})
    train, features = plans[0]["train_4x750"], plans[0]["features"]
    assert [contender.label for contender in train] == [
        "train_4x750/hf/torch",
        "train_4x750/hf/torch/remat",
        "train_4x750/keras/jax",
        "train_4x750/keras/jax/remat",
    ]
    assert [contender.remat for contender in features] == [False, False]


def test_remat_workload_option_builds_rematerialised_blocks(capsys, monkeypatch):
    shape = workloads.TRAIN_WORKLOADS["train_4x750"][True]
    for remat in (False, True):
        model = train_step.build_keras_model(shape, remat)
        (encoder,) = [layer for layer in model.layers if isinstance(layer, ConformerEncoder)]
        assert encoder.conformer.remat == remat
        assert encoder.conformer.attention_query_chunk == (
            train_step.REMAT_QUERY_CHUNK if remat and keras.backend.backend() == "torch" else None
        )
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_thunk_runtime=true")
    child = ["--workload", "train_4x750", "--contender", "keras", "--quick", "--remat"]
    workloads.main(child + ["--warmup", "0", "--steps", "1"])
    flags = os.environ["XLA_FLAGS"].split()
    assert flags[0] == "--xla_cpu_use_thunk_runtime=true"
    assert (workloads.JAX_REMAT_XLA_FLAG in flags) == (keras.backend.backend() == "jax")
    result = json.loads(capsys.readouterr().out.split(harness._RESULT_PREFIX)[-1])
    assert result["name"] == f"keras-slam ({keras.backend.backend()}, remat)"
    assert result["units_per_step"] == 120 and len(result["seconds"]) == 1
    assert 100 < result["build_rss_mb"] <= result["peak_rss_mb"]


def test_train_child_imports_no_keras_until_it_builds_ours():
    """HF's child process must not carry keras, keras-hub and TensorFlow (~0.9 GB of RSS)."""
    code = "import sys, benchmarks.workloads; print(sorted({'keras', 'tensorflow'} & set(sys.modules)))"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=harness.REPO_ROOT
    )
    assert completed.stdout.strip() == "[]", completed.stderr


def test_other_cores_exclude_the_contenders_own_cpu(monkeypatch):
    # The machine was busy for 3 CPU-s over 2 s of wall time; 2 of them were
    # the contender's own child process, so others used 0.5 cores.
    busy, own, clock = iter([100.0, 103.0]), iter([10.0, 12.0]), iter([50.0, 52.0])
    monkeypatch.setattr(harness, "busy_cpu_seconds", lambda: next(busy))
    monkeypatch.setattr(harness, "children_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(harness.time, "monotonic", lambda: next(clock))
    assert harness.run_measuring_others(lambda: {"seconds": [1.0]}) == {
        "seconds": [1.0],
        "wall_seconds": 2.0,
        "other_cores": pytest.approx(0.5),
    }


def test_a_busy_sibling_process_counts_as_other_cores():
    busy_loop = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"
    sibling = subprocess.Popen([sys.executable, "-c", busy_loop])
    try:
        outcome = harness.run_measuring_others(lambda: time.sleep(1.0) or {})
    finally:
        sibling.wait()
    assert outcome["other_cores"] >= 0.6


def test_failing_contender_names_itself():
    contender = harness.ProcessContender("train_8x250", "keras", "no_such_backend", quick=True)
    with pytest.raises(RuntimeError, match="train_8x250/keras/no_such_backend failed"):
        contender.run_round()


def test_every_finished_round_is_reported_before_a_later_round_fails():
    class FailsInRound3(FakeContender):
        def run_round(self):
            if len(self.log) == 5:
                raise RuntimeError("ours failed")
            return super().run_round()

    log, reports = [], []
    workload = [
        FakeContender("hf", [[2.0]] * 3, log),
        FailsInRound3("ours", [[1.0]] * 3, log),
    ]
    with pytest.raises(RuntimeError, match="ours failed"):
        harness.run_benchmark({"train": workload}, {"train": 3}, on_round=reports.append)
    # Rounds 1 and 2 were reported as they ended; round 3 died in "ours" turn.
    assert log == ["hf", "ours", "hf", "ours", "hf"]
    assert [report["workloads"]["train"][1]["round_seconds"] for report in reports] == [
        [1.0],
        [1.0, 1.0],
    ]
    assert reports[-1]["workloads"]["train"][1]["ratio"].startswith("unstable: 2 of 2 rounds")


@pytest.mark.slow(backend="torch")
def test_quick_run_end_to_end(tmp_path):
    # One round: interleaving and the statistics are tested above with fake
    # contenders; this test runs the processes, the JSON and the table.
    output = tmp_path / "report.json"
    command = [sys.executable, "-m", "benchmarks", "--quick", "--allow-load", "--rounds", "1"]
    command += ["--warmup", "1", "--steps", "2", "--backends", "torch", "--output", str(output)]
    command += ["--workloads", "train_8x250", "features"]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=harness.REPO_ROOT,
        timeout=test_case.SUBPROCESS_TIMEOUT_S,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(output.read_text())
    train, features = report["workloads"]["train_8x250"], report["workloads"]["features"]
    assert [r["label"] for r in train] == ["train_8x250/hf/torch", "train_8x250/keras/torch"]
    assert [r["label"] for r in features] == ["features/hf/tensorflow", "features/keras/tensorflow"]
    for result in train + features:
        assert len(result["round_seconds"]) == len(result["round_wall_seconds"]) == 1
        assert result["min"] > 0
        assert result["peak_rss_mb"] > 100
    assert train[1]["units_per_step"] == 2 * 40
    assert train[1]["ratio"] == "unstable: 1 of 1 rounds kept, < 5 for a 90% interval"
    assert "| train_8x250 | keras-slam (torch) |" in completed.stdout
