"""The benchmark workloads and the child process that times one contender.

    python -m benchmarks.workloads --workload train_8x250 --contender keras \
        --warmup 2 --steps 5

runs, in this process (KERAS_BACKEND chosen by the caller), `warmup`
untimed and `steps` timed steps of one contender and prints one line
`@bench {json}`: name, per-step seconds, units per step, peak RSS (MB,
`resource.getrusage` of this process) at the end and after the imports and
the model's build (before the first step: the rest is the step's
activations, gradients, optimizer slots and compilation). `--remat`
(train workloads) recomputes each Conformer block in the backward pass
(`train_step`); on JAX it also adds `JAX_REMAT_XLA_FLAG` to XLA_FLAGS, as
JAX users of `ConformerConfig(remat=True)` on CPU should (README): XLA's
default CPU scheduler keeps the forward buffers that remat means to free.
"""

import argparse
import json
import os
import resource
import sys
import tempfile

import numpy as np

from benchmarks import train_step

# Workload -> (shape, quick shape). Train steps count frames; the feature
# pipeline counts audio seconds per pass over its corpus.
TRAIN_WORKLOADS = {
    "train_8x250": (
        train_step.TrainShape(batch=8, frames=250),
        train_step.TrainShape(batch=2, frames=40, layers=1, hidden=32, heads=2, ffn=64),
    ),
    "train_4x750": (
        train_step.TrainShape(batch=4, frames=750),
        train_step.TrainShape(batch=1, frames=120, layers=1, hidden=32, heads=2, ffn=64),
    ),
}
FEATURE_SECONDS = {False: 3000.0, True: 20.0}
# XLA's CPU scheduler that realises remat's savings (set before JAX starts).
JAX_REMAT_XLA_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
WORKLOADS = (*TRAIN_WORKLOADS, "features")
# Default rounds: 5 is the fewest whose per-round ratios give a 90% interval
# of the median ratio (`harness.MIN_ROUNDS`). train_8x250 (about 4 contenders
# x 1 min a round on the idle 2-core VM, estimated from its 4.5-5.5 s steps)
# gets one more, so that one round discarded for other processes' load still
# leaves 5; train_4x750 (steps of 10-15 s, about 7 min a round) keeps the
# minimum; features (about 1.2 min a round) gets 9, from which the interval
# leaves out the most extreme round at each end.
ROUNDS = {"train_8x250": 6, "train_4x750": 5, "features": 9}
# The contenders of every workload: (contender, KERAS_BACKEND of its process).
CONTENDERS = {
    "train": (("hf", "torch"), ("keras", "jax"), ("keras", "tensorflow"), ("keras", "torch")),
    "features": (("hf", "tensorflow"), ("keras", "tensorflow")),
}


def contenders_of(workload):
    return CONTENDERS["features" if workload == "features" else "train"]


def make_step(workload, contender, quick, folder, remat=False):
    """(name, function running one step, units per step, unit)."""
    if workload == "features":
        # Imported here: it imports keras_slam (keras, keras-hub, TensorFlow,
        # ~0.9 GB of RSS) that HF's train step does not need.
        from benchmarks import features

        waveforms = features.make_corpus(folder, FEATURE_SECONDS[quick], np.random.default_rng(0))
        audio_seconds = sum(map(len, waveforms)) / features.schema.SAMPLE_RATE
        if contender == "hf":
            name, step = features.make_huggingface_pass(waveforms)
        else:
            name, step = features.make_pipeline_pass(folder)
        return name, step, audio_seconds, "audio-s"
    shape = TRAIN_WORKLOADS[workload][quick]
    make = train_step.make_hugging_face_step if contender == "hf" else train_step.make_keras_step
    name, step = make(shape, remat=remat)
    return name, step, shape.batch * shape.frames, "frames"


def peak_rss_mb():
    """This process's peak resident set size so far, MB."""
    # ru_maxrss is in kB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=WORKLOADS, required=True)
    parser.add_argument("--contender", choices=("hf", "keras"), required=True)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny shapes")
    parser.add_argument(
        "--remat", action="store_true", help="rematerialise each block (train workloads)"
    )
    args = parser.parse_args(argv)
    if args.remat and args.workload not in TRAIN_WORKLOADS:
        parser.error(f"--remat applies to the train workloads, not {args.workload}")
    if args.remat and os.environ.get("KERAS_BACKEND") == "jax":
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {JAX_REMAT_XLA_FLAG}".strip()
    with tempfile.TemporaryDirectory() as folder:
        name, step, units, unit = make_step(
            args.workload, args.contender, args.quick, folder, args.remat
        )
        build_rss_mb = peak_rss_mb()
        seconds = train_step.time_steps(step, args.warmup, args.steps)
    result = dict(
        name=name,
        seconds=seconds,
        units_per_step=units,
        unit=unit,
        peak_rss_mb=peak_rss_mb(),
        build_rss_mb=build_rss_mb,
        pid=os.getpid(),
    )
    print("@bench " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
