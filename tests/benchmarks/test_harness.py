import json
import subprocess
import sys
import time

import pytest

from benchmarks import harness


class FakeContender:
    """Returns preset per-step seconds, one list per round, and logs its turns."""

    def __init__(self, label, rounds_of_seconds, log, other_cores=0.0):
        self.label, self.rounds_of_seconds, self.log = label, list(rounds_of_seconds), log
        self.other_cores = other_cores

    def run_round(self):
        self.log.append(self.label)
        return dict(
            name=f"{self.label} model",
            seconds=self.rounds_of_seconds.pop(0),
            units_per_step=100,
            unit="frames",
            peak_rss_mb=1000.0 + len(self.log),
            other_cores=self.other_cores,
        )


def fake_workload(log, reference_rounds, other_rounds):
    return [FakeContender("hf", reference_rounds, log), FakeContender("ours", other_rounds, log)]


def steady_load(value):
    return lambda: (value, value, value)


def test_summarize_min_median_spread():
    stats = harness.summarize([1.2, 1.0, 1.1])
    assert stats == pytest.approx(dict(min=1.0, median=1.1, spread=0.2 / 1.1))


def test_rounds_interleave_contenders_and_take_each_rounds_median():
    log = []
    contenders = fake_workload(log, [[2.0, 9.0, 2.1]] * 3, [[1.0, 1.0, 5.0]] * 3)
    contenders.append(FakeContender("third", [[3.0]] * 3, log))
    results = harness.run_interleaved(contenders, rounds=3)
    assert log == ["hf", "ours", "third"] * 3
    # One slow step in a round does not move the round's median.
    assert [r["round_seconds"] for r in results] == [[2.1] * 3, [1.0] * 3, [3.0] * 3]
    assert results[0]["step_seconds"][0] == [2.0, 9.0, 2.1]
    assert results[0]["peak_rss_mb"] == 1007.0  # the largest of its rounds (turns 1, 4, 7)


def test_ratio_printed_when_stable_and_idle():
    log = []
    workload = fake_workload(log, [[2.0], [2.1], [2.05]], [[1.0], [1.02], [1.01]])
    report = harness.run_benchmark(
        {"train": workload}, rounds=3, load_average=steady_load(0.1), cores=2
    )
    reference, ours = report["workloads"]["train"]
    assert reference["ratio"] == "reference"
    assert ours["ratio"] == f"{2.05 / 1.01:.2f}x"
    assert ours["throughput"] == pytest.approx(100 / 1.01)
    assert not report["under_load"]
    table = harness.markdown_table(report)
    assert "UNDER LOAD" not in table and "| train | ours model |" in table


def test_ratio_refused_when_a_spread_exceeds_the_threshold():
    workload = fake_workload([], [[2.0], [2.0], [2.0]], [[1.0], [1.3], [1.1]])
    report = harness.run_benchmark(
        {"train": workload}, rounds=3, load_average=steady_load(0.0), cores=2
    )
    assert report["workloads"]["train"][1]["ratio"] == "unstable: spread 27% > 10% (ours model)"
    # A looser threshold accepts the same rounds.
    workload = fake_workload([], [[2.0], [2.0], [2.0]], [[1.0], [1.3], [1.1]])
    report = harness.run_benchmark(
        {"train": workload}, rounds=3, max_spread=0.3, load_average=steady_load(0.0), cores=2
    )
    assert report["workloads"]["train"][1]["ratio"] == f"{2.0 / 1.1:.2f}x"


def test_ratio_refused_under_load_unless_allowed():
    loads = iter([(1.5, 0, 0), (3.0, 0, 0)])
    workload = fake_workload([], [[2.0]] * 2, [[1.0]] * 2)
    report = harness.run_benchmark(
        {"train": workload}, rounds=2, load_average=lambda: next(loads), cores=4
    )
    assert report["workloads"]["train"][1]["ratio"] == "unstable: load 1.50 > 1.00 (4 cores x 0.25)"
    assert (report["load_before"], report["load_after"]) == (1.5, 3.0)

    workload = fake_workload([], [[2.0]] * 2, [[1.0]] * 2)
    report = harness.run_benchmark(
        {"train": workload},
        rounds=2,
        allow_load=True,
        load_average=steady_load(1.5),
        cores=4,
    )
    assert report["workloads"]["train"][1]["ratio"] == "2.00x"
    assert harness.markdown_table(report).startswith("UNDER LOAD: load average 1.50 before")


def test_ratio_refused_when_other_processes_start_during_the_rounds():
    # Idle before the run, but another process used 1.2 cores in one round.
    workload = fake_workload([], [[2.0]] * 2, [[1.0]] * 2)
    workload[1].other_cores = 1.2
    report = harness.run_benchmark(
        {"train": workload}, rounds=2, load_average=steady_load(0.0), cores=2
    )
    ratio = report["workloads"]["train"][1]["ratio"]
    assert ratio == "unstable: other processes used 1.20 cores in a round > 0.50"
    assert report["under_load"]
    assert "| 1.20 |" in harness.markdown_table(report)


def test_other_cores_exclude_the_contenders_own_cpu(monkeypatch):
    # The machine was busy for 3 CPU-s over 2 s of wall time; 2 of them were
    # the contender's own child process, so others used 0.5 cores.
    busy, own, clock = iter([100.0, 103.0]), iter([10.0, 12.0]), iter([50.0, 52.0])
    monkeypatch.setattr(harness, "busy_cpu_seconds", lambda: next(busy))
    monkeypatch.setattr(harness, "children_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(harness.time, "monotonic", lambda: next(clock))
    assert harness.run_measuring_others(lambda: {"seconds": [1.0]}) == {
        "seconds": [1.0],
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


@pytest.mark.slow(backend="torch")
def test_quick_run_end_to_end(tmp_path):
    output = tmp_path / "report.json"
    command = [sys.executable, "-m", "benchmarks", "--quick", "--allow-load", "--rounds", "2"]
    command += ["--warmup", "1", "--steps", "2", "--backends", "torch", "--output", str(output)]
    command += ["--workloads", "train_8x250", "features"]
    completed = subprocess.run(
        command, capture_output=True, text=True, cwd=harness.REPO_ROOT, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(output.read_text())
    train, features = report["workloads"]["train_8x250"], report["workloads"]["features"]
    assert [r["label"] for r in train] == ["train_8x250/hf/torch", "train_8x250/keras/torch"]
    assert [r["label"] for r in features] == ["features/hf/tensorflow", "features/keras/tensorflow"]
    for result in train + features:
        assert len(result["round_seconds"]) == 2 and result["min"] > 0
        assert result["peak_rss_mb"] > 100
    assert train[1]["units_per_step"] == 2 * 40
    assert "| train_8x250 | keras-slam (torch) |" in completed.stdout
