"""Speed and memory of keras-slam against Hugging Face, measured honestly.

    python -m benchmarks --output runs/benchmarks.json
    python -m benchmarks --quick --allow-load   # tiny shapes, a smoke run

Workloads (all by default): "train_8x250" and "train_4x750" (a training
step of 8 Conformer layers x 512 at batch 8 x 250 and 4 x 750 frames; HF
`Wav2Vec2BertModel` on torch against keras-slam on JAX, TensorFlow and
torch, see `benchmarks/train_step.py`) and "features" (TFRecord -> log-mel
batches against HF's feature extractor, `benchmarks/features.py`). Each
contender runs in its own process, interleaved over rounds; the table
gives min, median and spread per contender, peak RSS, the load average
before and after, the cores other processes used during the rounds, and a
ratio to HF only where the run was stable (`benchmarks/harness.py`). Quote only figures printed on an idle machine,
with the date and the machine.
"""

import argparse
import json
import os

from benchmarks import harness, workloads


def main(argv=None):
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per round")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--max-spread", type=float, default=0.10)
    parser.add_argument("--max-load-per-core", type=float, default=0.25)
    parser.add_argument(
        "--allow-load", action="store_true", help="print ratios under load (marked UNDER LOAD)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes (tests)")
    parser.add_argument("--output", help="JSON report path")
    args = parser.parse_args(argv)

    plan = {}
    for workload in args.workloads or workloads.WORKLOADS:
        plan[workload] = [
            harness.ProcessContender(
                workload, contender, backend, args.warmup, args.steps, args.quick
            )
            for contender, backend in workloads.contenders_of(workload)
            if contender == "hf" or workload == "features" or backend in args.backends
        ]
    report = harness.run_benchmark(
        plan,
        args.rounds,
        max_spread=args.max_spread,
        max_load_per_core=args.max_load_per_core,
        allow_load=args.allow_load,
        on_workload=lambda report: write_report(report, args.output),
    )
    print(harness.markdown_table(report))
    write_report(report, args.output)


def write_report(report, path):
    """The report as JSON at `path` (nothing without one)."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as file:
            json.dump(report, file, indent=1)


if __name__ == "__main__":
    main()
