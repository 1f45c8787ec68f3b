"""Speed and memory of keras-slam against Hugging Face, measured honestly.

    python -m benchmarks --output runs/benchmarks.json
    python -m benchmarks --quick --allow-load   # tiny shapes, a smoke run
    python -m benchmarks --from-json benchmarks/results/cpu_2core_2026-12-01_run2.json

Workloads (all by default): "train_8x250" and "train_4x750" (a training
step of 8 Conformer layers x 512 at batch 8 x 250 and 4 x 750 frames; HF
`Wav2Vec2BertModel` on torch against keras-slam on JAX, TensorFlow and
torch, see `benchmarks/train_step.py`) and "features" (TFRecord -> log-mel
batches against HF's feature extractor, `benchmarks/features.py`). Each
contender runs in its own process, interleaved over rounds (6, 5 and 9 by
default, `benchmarks.workloads.ROUNDS`); the table gives min, median and
spread per contender, peak RSS (at the end and after the imports and the
model's build), and the median of the per-round ratios to
HF with its 90% interval, only where the interval is within --max-spread
and enough rounds were free of other processes' load
(`benchmarks/harness.py` has the rules). --remat on|both runs the train
workloads with each block rematerialised (HF: gradient checkpointing)
instead of or beside without. --from-json re-analyses a saved
report under the current rules. Quote only figures printed on an idle
machine, with the date and the machine.
"""

import argparse
import json
import os

from benchmarks import harness, workloads


def parse_args(argv=None):
    """The command line's flags (`argv`, default sys.argv)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", nargs="+", choices=workloads.WORKLOADS)
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=("jax", "tensorflow", "torch"),
        default=("jax", "tensorflow", "torch"),
        help="keras-slam's backends in the train-step workloads",
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds of every workload (default: workloads.ROUNDS)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per round")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument(
        "--max-spread",
        type=float,
        default=0.10,
        help="widest 90%% interval of the median per-round ratio, relative to it, that is printed",
    )
    parser.add_argument(
        "--max-other-cores",
        type=float,
        default=0.1,
        help="rounds in which other processes used more cores are discarded",
    )
    parser.add_argument(
        "--allow-load",
        action="store_true",
        help="keep rounds with other processes' load (the table is marked UNDER LOAD)",
    )
    parser.add_argument(
        "--remat",
        choices=("off", "on", "both"),
        default="off",
        help="train workloads: keras-slam with ConformerConfig(remat=True) and HF with "
        "gradient checkpointing (on), or each contender without and with it (both)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes (tests)")
    parser.add_argument("--output", help="JSON report path")
    parser.add_argument("--from-json", help="re-analyse this saved report instead of running")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rules = dict(
        max_spread=args.max_spread,
        max_other_cores=args.max_other_cores,
        allow_load=args.allow_load,
    )
    if args.from_json:
        with open(args.from_json) as file:
            report = harness.analyse_report(json.load(file), **rules)
    else:
        report = run(args, rules)
    print(harness.markdown_table(report))
    write_report(report, args.output)


def run(args, rules):
    """Runs the workloads `args` name; returns the report."""
    plan = {}
    remats = {"off": (False,), "on": (True,), "both": (False, True)}[args.remat]
    for workload in args.workloads or workloads.WORKLOADS:
        plan[workload] = [
            harness.ProcessContender(
                workload, contender, backend, args.warmup, args.steps, args.quick, remat
            )
            for contender, backend in workloads.contenders_of(workload)
            if contender == "hf" or workload == "features" or backend in args.backends
            for remat in (remats if workload in workloads.TRAIN_WORKLOADS else (False,))
        ]
    rounds = {workload: args.rounds or workloads.ROUNDS[workload] for workload in plan}
    return harness.run_benchmark(
        plan, rounds, on_round=lambda report: write_report(report, args.output), **rules
    )


def write_report(report, path):
    """The report as JSON at `path` (nothing without one)."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as file:
            json.dump(report, file, indent=1)


if __name__ == "__main__":
    main()
