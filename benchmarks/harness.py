"""A benchmark harness that cannot flatter: interleaved rounds, paired ratios, others' load.

Every round starts each contender's process once, in turn (A B C D A B C D
...). A round's step time is the median of its timed steps (one
garbage-collection pause is not instability). Per contender the table gives
the min and median over all rounds and their spread `(max - min) / median`
(information). The ratio against the reference (the first contender) is
paired: per round, the reference's step time over the contender's in the
same round, so that noise common to a round cancels; the table prints the
median of these per-round ratios over the kept rounds.

Rules (`analyse`):
- A round is discarded when, while any contender of it ran, other
  processes kept more than `max_other_cores` cores busy (system CPU time
  from /proc/stat minus the contender's own, over its wall time; the
  default 0.1 core can slow a contender that uses both cores of a 2-core
  machine by at most 5%, half the default `max_spread`). `allow_load`
  keeps such rounds and marks the table "UNDER LOAD".
- A ratio is printed only when the kept rounds give a distribution-free
  `CONFIDENCE` (90%) interval for the median ratio (order statistics; it
  needs at least 5 rounds, and for 5-7 rounds it is the min-max range;
  from 8 rounds on it leaves out the most extreme round(s) at each end) and
  that interval's width is at most `max_spread` of the median; otherwise
  the cell says why not ("unstable: ...").
- The 1-minute load averages before and after the run are reported as
  information only: they hold the past (an install that just ended), not
  the run.

`analyse` works on the raw per-round times alone, so a saved JSON report
can be re-analysed (`python -m benchmarks --from-json FILE`).
"""

import dataclasses
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RESULT_PREFIX = "@bench "
CONFIDENCE = 0.9
# What a contender's measurements are made of; everything else in a report is derived.
RAW_FIELDS = (
    "label",
    "name",
    "unit",
    "units_per_step",
    "round_seconds",
    "step_seconds",
    "round_wall_seconds",
    "other_cores",
    "peak_rss_mb",
    "build_rss_mb",
)


def summarize(values):
    """min, median, max and spread (max - min) / median of `values`."""
    median = statistics.median(values)
    return dict(
        min=min(values), median=median, max=max(values), spread=(max(values) - min(values)) / median
    )


def median_interval(values, confidence=CONFIDENCE):
    """(low, high): the narrowest interval [x_(k), x_(n+1-k)] of the sorted
    `values` that covers the median of their distribution with probability
    >= `confidence` whatever the distribution (the binomial sign-test
    interval); None when even [min, max] covers less (fewer than 5 values
    at 90%)."""
    ordered, n = sorted(values), len(values)
    interval = None
    for k in range(1, n // 2 + 1):
        coverage = 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n
        if coverage < confidence:
            break
        interval = (ordered[k - 1], ordered[n - k])
    return interval


# The fewest rounds that give a ratio: their [min, max] covers the median at CONFIDENCE.
MIN_ROUNDS = next(n for n in range(1, 64) if median_interval(range(n)) is not None)


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
    """`run()`'s result dict plus "wall_seconds" and "other_cores": the
    cores other processes kept busy on average while it ran (its own child
    processes excluded; None where the machine's busy time is unknown)."""
    busy, own, start = busy_cpu_seconds(), children_cpu_seconds(), time.monotonic()
    result = run()
    wall = time.monotonic() - start
    busy_after = busy_cpu_seconds()
    if busy is None or busy_after is None:
        return dict(result, wall_seconds=wall, other_cores=None)
    others = (busy_after - busy) - (children_cpu_seconds() - own)
    return dict(result, wall_seconds=wall, other_cores=max(others, 0.0) / wall)


@dataclasses.dataclass
class ProcessContender:
    """One contender of one workload, run by `benchmarks.workloads` in a
    fresh process per round with KERAS_BACKEND=`backend` (`remat`: its
    `--remat`)."""

    workload: str
    contender: str
    backend: str
    warmup: int = 2
    steps: int = 5
    quick: bool = False
    remat: bool = False

    @property
    def label(self):
        return f"{self.workload}/{self.contender}/{self.backend}" + ("/remat" if self.remat else "")

    def run_round(self):
        """The child's result: name, seconds (per step), units_per_step, unit,
        peak_rss_mb, wall_seconds and other_cores (`run_measuring_others`)."""
        return run_measuring_others(self._run_child)

    def _run_child(self):
        command = [sys.executable, "-m", "benchmarks.workloads", "--workload", self.workload]
        command += ["--contender", self.contender, "--warmup", str(self.warmup)]
        command += ["--steps", str(self.steps)] + (["--quick"] if self.quick else [])
        command += ["--remat"] if self.remat else []
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


def run_interleaved(contenders, rounds, on_round=None):
    """Runs `rounds` rounds of every contender in turn (A B C A B C ...).

    Returns one dict of `RAW_FIELDS` per contender: the per-round step
    seconds (median of each round's steps), every step's seconds, each
    round's wall seconds and the cores other processes used in it, and the
    largest peak RSS (MB) of its rounds, at the end and after the build.
    `on_round`, if given, is called with that list after every round (the
    rounds so far).
    """
    runs = {contender.label: [] for contender in contenders}
    for _ in range(rounds):
        for contender in contenders:
            runs[contender.label].append(contender.run_round())
        if on_round:
            on_round(raw_results(contenders, runs))
    return raw_results(contenders, runs)


def raw_results(contenders, runs):
    """`run_interleaved`'s list from {label: [each round's outcome]}."""
    results = []
    for contender in contenders:
        outcomes = runs[contender.label]
        results.append(
            dict(
                label=contender.label,
                name=outcomes[0]["name"],
                unit=outcomes[0]["unit"],
                units_per_step=outcomes[0]["units_per_step"],
                round_seconds=[statistics.median(outcome["seconds"]) for outcome in outcomes],
                step_seconds=[outcome["seconds"] for outcome in outcomes],
                round_wall_seconds=[outcome["wall_seconds"] for outcome in outcomes],
                other_cores=[outcome["other_cores"] for outcome in outcomes],
                peak_rss_mb=max(outcome["peak_rss_mb"] for outcome in outcomes),
                build_rss_mb=max(outcome["build_rss_mb"] for outcome in outcomes),
            )
        )
    return results


def round_other_cores(results):
    """Per round, the most cores other processes used while one of its
    contenders ran (None where unmeasured)."""
    rounds = zip(*(result["other_cores"] for result in results))
    return [None if None in cores else max(cores) for cores in rounds]


def rounds_refusal(others, kept, max_other_cores):
    """Why the `kept` of the rounds whose other processes used `others`
    cores cannot give a ratio ("" when they can)."""
    if len(kept) >= MIN_ROUNDS:
        return ""
    reason = (
        f"{len(kept)} of {len(others)} rounds kept, < {MIN_ROUNDS} for a {CONFIDENCE:.0%} interval"
    )
    dropped = [
        f"{index + 1} ({'unmeasured' if cores is None else f'{cores:.2f}'})"
        for index, cores in enumerate(others)
        if index not in kept
    ]
    if dropped:
        reason += f"; others > {max_other_cores:.2f} cores in round {', '.join(dropped)}"
    return reason


def ratio_stats(ratios, max_spread, refusal):
    """ratio_median, ratio_low, ratio_high (`median_interval`) and
    ratio_spread of the kept rounds' `ratios` (None when `refusal` says
    they are too few), and the table's cell, ratio."""
    if refusal:
        return dict(
            ratio_median=None,
            ratio_low=None,
            ratio_high=None,
            ratio_spread=None,
            ratio=f"unstable: {refusal}",
        )
    median, (low, high) = statistics.median(ratios), median_interval(ratios)
    spread = (high - low) / median
    if spread > max_spread:
        cell = f"unstable: ratio spread {spread:.0%} > {max_spread:.0%}"
    else:
        cell = f"{median:.2f}x ({low:.2f}-{high:.2f})"
    return dict(
        ratio_median=median, ratio_low=low, ratio_high=high, ratio_spread=spread, ratio=cell
    )


def analyse(results, max_spread=0.10, max_other_cores=0.1, allow_load=False):
    """A workload's raw `results` (first = the reference) with statistics.

    Returns (results, rounds). Each result holds its `RAW_FIELDS`,
    `summarize`'s stats over all rounds, throughput (units per second at
    that median) and, but for the reference's, round_ratios (per round, the
    reference's step seconds over its own) and `ratio_stats` of the kept
    rounds' ratios. rounds: others_cores (per round, `round_other_cores`),
    kept (0-based indices) and loaded (whether some round's other
    processes were above `max_other_cores` or unmeasured).
    """
    others = round_other_cores(results)
    quiet = [
        index
        for index, cores in enumerate(others)
        if cores is not None and cores <= max_other_cores
    ]
    kept = list(range(len(others))) if allow_load else quiet
    refusal = rounds_refusal(others, kept, max_other_cores)
    reference = results[0]["round_seconds"]
    analysed = []
    for result in results:
        result = {field: result[field] for field in RAW_FIELDS if field in result}
        result.update(summarize(result["round_seconds"]))
        result["throughput"] = result["units_per_step"] / result["median"]
        if analysed:
            ratios = [ref / own for ref, own in zip(reference, result["round_seconds"])]
            kept_ratios = [ratios[index] for index in kept]
            result.update(round_ratios=ratios, **ratio_stats(kept_ratios, max_spread, refusal))
        else:
            result["ratio"] = "reference"
        analysed.append(result)
    return analysed, dict(others_cores=others, kept=kept, loaded=len(quiet) < len(others))


def analyse_report(raw, max_spread=0.10, max_other_cores=0.1, allow_load=False):
    """A report (`run_benchmark`'s or a saved JSON one) analysed under these
    rules: its cores, load averages and raw measurements, the rules, and per
    workload `analyse`'s results (workloads) and rounds (rounds)."""
    report = dict(
        cores=raw["cores"],
        load_before=raw["load_before"],
        load_after=raw["load_after"],
        confidence=CONFIDENCE,
        max_spread=max_spread,
        max_other_cores=max_other_cores,
        allow_load=allow_load,
        workloads={},
        rounds={},
    )
    for workload, results in raw["workloads"].items():
        report["workloads"][workload], report["rounds"][workload] = analyse(
            results, max_spread, max_other_cores, allow_load
        )
    report["under_load"] = any(rounds["loaded"] for rounds in report["rounds"].values())
    return report


def run_benchmark(
    workloads,
    rounds,
    max_spread=0.10,
    max_other_cores=0.1,
    allow_load=False,
    load_average=os.getloadavg,
    cores=None,
    on_round=None,
):
    """Runs every workload's contenders interleaved; returns `analyse_report`'s report.

    Args:
        workloads: {workload name: [contenders]}, the first one the reference.
        rounds: {workload name: rounds}.
        max_spread, max_other_cores, allow_load: `analyse`'s rules.
        load_average: () -> (1, 5, 15-minute load averages), reported only.
        cores: CPU count (default `os.cpu_count()`), reported only.
        on_round: called with the report so far after every round of every
            workload (`python -m benchmarks` writes it, so a stopped or
            failed run keeps the rounds it finished).
    """
    raw = dict(cores=cores or os.cpu_count(), load_before=load_average()[0], workloads={})
    report = None
    for workload, contenders in workloads.items():

        def analyse_round(results, workload=workload):
            nonlocal report
            raw["workloads"][workload] = results
            raw["load_after"] = load_average()[0]
            report = analyse_report(raw, max_spread, max_other_cores, allow_load)
            if on_round:
                on_round(report)

        run_interleaved(contenders, rounds[workload], on_round=analyse_round)
    return report


def markdown_table(report):
    """The report's rules and rounds, then a markdown table, one row per (workload, contender)."""
    title = "UNDER LOAD: " if report["allow_load"] and report["under_load"] else ""
    fate = "kept (allow_load)" if report["allow_load"] else "discarded"
    lines = [
        f"{title}{report['cores']} cores; load average {report['load_before']:.2f} before, "
        f"{report['load_after']:.2f} after (information only)",
        f"vs reference: median over the kept rounds of (reference s/step / contender s/step) "
        f"in the same round, with its {report['confidence']:.0%} interval, printed when that "
        f"is within {report['max_spread']:.0%} of the median; rounds in which other processes "
        f"used > {report['max_other_cores']:.2f} cores are {fate}",
    ]
    for workload, rounds in report["rounds"].items():
        others = ", ".join(
            "unmeasured" if c is None else f"{c:.2f}" for c in rounds["others_cores"]
        )
        lines.append(
            f"{workload}: {len(rounds['kept'])} of {len(rounds['others_cores'])} rounds kept; "
            f"other processes' cores per round: {others}"
        )
    lines += [
        "",
        "| workload | contender | median s/step | min s/step | spread | throughput "
        "| vs reference | peak RSS | RSS after build |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, results in report["workloads"].items():
        for result in results:
            # Reports saved before the build's RSS was measured lack it.
            build = result.get("build_rss_mb")
            build = "-" if build is None else f"{build / 1024:.2f} GB"
            lines.append(
                f"| {workload} | {result['name']} | {result['median']:.4f} | "
                f"{result['min']:.4f} | {result['spread']:.0%} | "
                f"{result['throughput']:.0f} {result['unit']}/s | {result['ratio']} | "
                f"{result['peak_rss_mb'] / 1024:.2f} GB | {build} |"
            )
    return "\n".join(lines)
