"""A benchmark harness that cannot flatter: interleaved rounds, spreads, load.

Every round starts each contender's process once, in turn (A B C D A B C D
...), so slow drifts of the machine hit every contender alike. A round's
step time is the median of its timed steps (one garbage-collection pause
is not instability); per contender the harness reports the min and median
over rounds and the spread `(max - min) / median`. A ratio against the
reference (the first contender) is printed only when both spreads are
within `max_spread`, the 1-minute load average before the run was at
most `max_load_per_core * cores`, and during every round of the workload
other processes used at most that many cores (system CPU time from
/proc/stat minus the contender's own, over the round's wall time: a load
that starts mid-run is caught too); otherwise the cell says why not
("unstable: ..."). `allow_load` prints ratios under load anyway and marks
the table "UNDER LOAD".
"""

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RESULT_PREFIX = "@bench "


def summarize(round_seconds):
    """min, median and spread (max - min) / median of per-round step seconds."""
    median = statistics.median(round_seconds)
    return dict(
        min=min(round_seconds),
        median=median,
        spread=(max(round_seconds) - min(round_seconds)) / median,
    )


def busy_cpu_seconds():
    """CPU seconds the whole machine has been busy (not idle or waiting on
    I/O) since boot, from /proc/stat; None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as file:
            fields = [int(value) for value in file.readline().split()[1:]]
    except FileNotFoundError:
        return None
    idle, iowait = fields[3], fields[4]
    # user nice system idle iowait irq softirq steal (guest time is in user).
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measuring_others(run):
    """`run()`'s result dict plus "other_cores": the cores other processes
    kept busy on average while it ran (its own child processes excluded;
    None where the machine's busy time is unknown)."""
    busy, own, start = busy_cpu_seconds(), children_cpu_seconds(), time.monotonic()
    result = run()
    wall = time.monotonic() - start
    busy_after = busy_cpu_seconds()
    if busy is None or busy_after is None:
        return dict(result, other_cores=None)
    others = (busy_after - busy) - (children_cpu_seconds() - own)
    return dict(result, other_cores=max(others, 0.0) / wall)


@dataclasses.dataclass
class ProcessContender:
    """One contender of one workload, run by `benchmarks.workloads` in a
    fresh process per round with KERAS_BACKEND=`backend`."""

    workload: str
    contender: str
    backend: str
    warmup: int = 2
    steps: int = 5
    quick: bool = False

    @property
    def label(self):
        return f"{self.workload}/{self.contender}/{self.backend}"

    def run_round(self):
        """The child's result: name, seconds (per step), units_per_step, unit,
        peak_rss_mb, and other_cores (`run_measuring_others`)."""
        return run_measuring_others(self._run_child)

    def _run_child(self):
        command = [sys.executable, "-m", "benchmarks.workloads", "--workload", self.workload]
        command += ["--contender", self.contender, "--warmup", str(self.warmup)]
        command += ["--steps", str(self.steps)] + (["--quick"] if self.quick else [])
        pythonpath = os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))
        env = dict(
            os.environ, KERAS_BACKEND=self.backend, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1"
        )
        completed = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO_ROOT)
        lines = [
            line[len(_RESULT_PREFIX) :]
            for line in completed.stdout.splitlines()
            if line.startswith(_RESULT_PREFIX)
        ]
        if completed.returncode or not lines:
            raise RuntimeError(
                f"benchmark contender {self.label} failed (exit {completed.returncode}):\n"
                f"{completed.stderr[-3000:]}"
            )
        return json.loads(lines[-1])


def run_interleaved(contenders, rounds):
    """Runs `rounds` rounds of every contender in turn (A B C A B C ...).

    Returns one dict per contender: name, label, unit, units_per_step, the
    per-round step seconds (median of each round's steps), every step's
    seconds, the largest peak RSS (MB) of its rounds, the cores other
    processes used in each round, and `summarize`'s stats.
    """
    runs = {contender.label: [] for contender in contenders}
    for _ in range(rounds):
        for contender in contenders:
            runs[contender.label].append(contender.run_round())
    results = []
    for contender in contenders:
        outcomes = runs[contender.label]
        round_seconds = [statistics.median(outcome["seconds"]) for outcome in outcomes]
        results.append(
            dict(
                label=contender.label,
                name=outcomes[0]["name"],
                unit=outcomes[0]["unit"],
                units_per_step=outcomes[0]["units_per_step"],
                round_seconds=round_seconds,
                step_seconds=[outcome["seconds"] for outcome in outcomes],
                other_cores=[outcome["other_cores"] for outcome in outcomes],
                peak_rss_mb=max(outcome["peak_rss_mb"] for outcome in outcomes),
                **summarize(round_seconds),
            )
        )
    return results


def ratio_cell(result, reference, max_spread, load_refusal):
    """`reference` median / `result` median as "1.23x" (speed-up over the
    reference), or "unstable: ..." when a spread or the load forbids it."""
    if load_refusal:
        return f"unstable: {load_refusal}"
    for measured in (reference, result):
        if measured["spread"] > max_spread:
            return (
                f"unstable: spread {measured['spread']:.0%} > {max_spread:.0%} ({measured['name']})"
            )
    return f"{reference['median'] / result['median']:.2f}x"


def load_refusal(load_before, cores, max_load_per_core, allow_load):
    """Why the load before the run forbids ratios ("" when it does not)."""
    limit = cores * max_load_per_core
    if load_before <= limit or allow_load:
        return ""
    return f"load {load_before:.2f} > {limit:.2f} ({cores} cores x {max_load_per_core})"


def others_refusal(results, limit):
    """Why other processes during a workload's rounds forbid its ratios ("" when they do not)."""
    others = [cores for result in results for cores in result["other_cores"]]
    if None in others:
        return "other processes' CPU unmeasured (no /proc/stat)"
    if max(others) > limit:
        return f"other processes used {max(others):.2f} cores in a round > {limit:.2f}"
    return ""


def run_benchmark(
    workloads,
    rounds,
    max_spread=0.10,
    max_load_per_core=0.25,
    allow_load=False,
    load_average=os.getloadavg,
    cores=None,
    on_workload=None,
):
    """Runs every workload's contenders interleaved; returns the report dict.

    Args:
        workloads: {workload name: [contenders]}, the first one the reference.
        rounds: rounds per workload.
        max_spread: largest spread of a contender whose ratio is printed.
        max_load_per_core: largest 1-minute load average per core before
            the run for which ratios are printed.
        allow_load: print ratios under load, marking the report.
        load_average: () -> (1, 5, 15-minute load averages).
        cores: CPU count (default `os.cpu_count()`).
        on_workload: called with the report so far after each workload
            (`python -m benchmarks` writes it, so a stopped run keeps them).
    """
    cores = cores or os.cpu_count()
    load_before = load_average()[0]
    refusal = load_refusal(load_before, cores, max_load_per_core, allow_load)
    report = dict(
        cores=cores,
        load_before=load_before,
        max_spread=max_spread,
        max_load=cores * max_load_per_core,
        under_load=load_before > cores * max_load_per_core,
        rounds=rounds,
        workloads={},
    )
    for workload, contenders in workloads.items():
        results = run_interleaved(contenders, rounds)
        reference = results[0]
        busy = others_refusal(results, report["max_load"])
        report["under_load"] = report["under_load"] or bool(busy)
        workload_refusal = refusal or ("" if allow_load else busy)
        for result in results:
            result["throughput"] = result["units_per_step"] / result["median"]
            result["ratio"] = (
                "reference"
                if result is reference
                else ratio_cell(result, reference, max_spread, workload_refusal)
            )
        report["workloads"][workload] = results
        if on_workload:
            on_workload(dict(report, load_after=load_average()[0]))
    report["load_after"] = load_average()[0]
    return report


def markdown_table(report):
    """The report as a markdown table, one row per (workload, contender)."""
    title = "UNDER LOAD: " if report["under_load"] else ""
    lines = [
        f"{title}load average {report['load_before']:.2f} before, "
        f"{report['load_after']:.2f} after ({report['cores']} cores, ratios need <= "
        f"{report['max_load']:.2f} and spread <= {report['max_spread']:.0%}); "
        f"{report['rounds']} interleaved rounds",
        "",
        "| workload | contender | median s/step | min s/step | spread | throughput "
        "| vs reference | peak RSS | others (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, results in report["workloads"].items():
        for result in results:
            lines.append(
                f"| {workload} | {result['name']} | {result['median']:.4f} | "
                f"{result['min']:.4f} | {result['spread']:.0%} | "
                f"{result['throughput']:.0f} {result['unit']}/s | {result['ratio']} | "
                f"{result['peak_rss_mb'] / 1024:.2f} GB | {_most_cores(result)} |"
            )
    return "\n".join(lines)


def _most_cores(result):
    """The most cores other processes used in one of `result`'s rounds, as text."""
    others = result["other_cores"]
    return "unmeasured" if None in others else f"{max(others):.2f}"
