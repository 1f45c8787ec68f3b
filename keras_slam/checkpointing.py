"""Checkpoints that resume a training run, and the long-run flags of the recipes.

`TrainingCheckpoint` (a `keras.callbacks.Callback`) writes, every
`every_steps` training steps, `<directory>/step-<N>/` holding
`model.weights.h5` (`model.save_weights`: weights, non-trainable variables
such as the objective weights, and the optimizer state: moments,
iterations, skipped-step counters, gradient accumulators), `rng.npz` (the
state of every `keras.random.SeedGenerator` in the model: masking, Gumbel
and dropout noise) and `state.json` (the step and the per-epoch history so
far). Each checkpoint is written into a temporary directory and renamed into
place (`os.replace`, atomic on POSIX), so a run killed while writing leaves
the previous checkpoints intact; the newest `keep` are kept.

`fit` is `model.fit` for a number of steps that restores the newest
checkpoint first and runs only the steps left. What else resumes:

- Data position: the input pipeline skips the batches already trained
  (`dataset.skip(step)`), so the resumed run reads the batches the
  uninterrupted run would have read (the pipelines are seeded and
  deterministic). The skipped batches are read and discarded: seconds for
  the sample corpus, a pipeline pass at paper scale.
- Step-driven callbacks take the resumed step: `ObjectiveSchedule(stages,
  initial_step=checkpoint.restore(model))`.
- The learning-rate schedule reads `optimizer.iterations`, which is restored.

With `checkpointer="orbax"` (JAX only; the default of a multi-host JAX run)
the same checkpoints are written by Orbax (`orbax-checkpoint`, extra
`keras-slam[orbax]`, the
library Keras' `OrbaxCheckpoint` uses) as `<directory>/<N>/`: each host
writes its own shards of every sharded array, asynchronously (training
goes on while the copy on the host is written), into a temporary directory
finalised only when complete; Orbax keeps the newest `keep`. They hold
what the h5 format holds, as a list of arrays (the model's variables, the
optimizer's) and the step and history as JSON; a restore loads each array
straight into its variable's sharding under the current `--mesh`.

Keras' `BackupAndRestore` was not enough: it overwrites one file in place
(not atomic), keeps at most two, restores only to an epoch start, and does
not save the seed generators' state.

A recipe adopts all of it in three lines:

    add_training_arguments(parser)            # the flags below
    checkpoint = checkpoint_from_args(args, output_dir)
    history = fit(model, dataset, steps, steps_per_epoch, checkpoint, callbacks)

and builds its optimizer with `**optimizer_arguments(args)` after
`apply_mixed_precision(args)`.

Flags (`add_training_arguments`): `--checkpoint-dir` (default
`<output>/checkpoints`), `--checkpoint-every-steps`, `--keep-checkpoints`,
`--checkpointer {auto,h5,orbax}` (auto: orbax on a multi-host JAX run, h5 else),
`--gradient-accumulation-steps`, `--clipnorm` (global norm),
`--mixed-precision {none,bf16}`, `--max-consecutive-skips` (non-finite steps
are skipped by `FiniteStepOptimizer` and counted as `skipped_steps` in the
logs by `TerminateOnSkippedSteps`; this many in a row stop the run).
"""

import argparse
import importlib.util
import json
import math
import os
import re
import shutil

import keras
import numpy as np

from keras_slam import distribution

_CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")
CHECKPOINTERS = ("h5", "orbax")
WEIGHTS_FILE = "model.weights.h5"
RNG_FILE = "rng.npz"
STATE_FILE = "state.json"


def seed_generator_states(model):
    """The state variables of every `SeedGenerator` of `model` (not in its weights)."""
    weights = {id(variable) for variable in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


class TrainingCheckpoint(keras.callbacks.Callback):
    """Periodic, atomic, keep-last-N checkpoints of a `fit`, and their restore.

    Args:
        directory: where the `step-<N>/` (orbax: `<N>/`) checkpoints go.
        every_steps: training steps between checkpoints (the last step of a
            run is always saved).
        keep: the newest checkpoints kept; older ones are deleted.
        checkpointer: "h5" (module docstring) or "orbax" (JAX only).
    """

    def __init__(self, directory, every_steps=100, keep=3, checkpointer="h5"):
        super().__init__()
        if every_steps < 1 or keep < 1:
            raise ValueError(f"every_steps and keep must be >= 1; got {every_steps}, {keep}")
        if checkpointer not in CHECKPOINTERS:
            raise ValueError(f"checkpointer must be one of {CHECKPOINTERS}; got {checkpointer!r}")
        if checkpointer == "orbax" and keras.backend.backend() != "jax":
            raise ValueError(
                f"--checkpointer orbax writes sharded JAX arrays; the {keras.backend.backend()} "
                "backend uses --checkpointer h5"
            )
        if checkpointer == "orbax" and importlib.util.find_spec("orbax") is None:
            raise ImportError(
                "--checkpointer orbax needs the orbax-checkpoint package: "
                "pip install 'keras-slam[orbax]'"
            )
        self.directory = directory
        self.every_steps = every_steps
        self.keep = keep
        self.orbax = _OrbaxCheckpoints(directory, keep) if checkpointer == "orbax" else None
        self.step = 0
        self.history = {}
        self.restored = False
        self.total_steps = None
        self.save_due = False

    def checkpoints(self):
        """[(step, path)] of the complete checkpoints, oldest first."""
        if self.orbax is not None:
            return self.orbax.checkpoints()
        if not os.path.isdir(self.directory):
            return []
        found = []
        for name in os.listdir(self.directory):
            match = _CHECKPOINT_NAME.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(self.directory, name)))
        return sorted(found)

    def restore(self, model):
        """Loads the newest checkpoint into `model` (compiled); returns its step (0: none).

        Idempotent: a second call returns the same step without reloading.
        """
        if self.restored:
            return self.step
        self.restored = True
        checkpoints = self.checkpoints()
        if not checkpoints:
            return 0
        step, path = checkpoints[-1]
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            if self.orbax is not None:
                state = self.orbax.restore(model, step)
            else:
                state = _restore_h5(model, path)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"Cannot resume from checkpoint {path}: {error}. It was written by a "
                "different model or configuration, or is damaged; delete it (or pass "
                "another --checkpoint-dir) to start afresh."
            ) from error
        self.step, self.history = state["step"], state["history"]
        print(f"resumed from step {self.step} ({path})", flush=True)
        return self.step

    def save(self):
        """Writes `step-<step>/` atomically, then deletes all but the newest `keep`."""
        if self.orbax is not None:
            self.orbax.save(self.model, {"step": self.step, "history": self.history})
            return
        os.makedirs(self.directory, exist_ok=True)
        final = os.path.join(self.directory, f"step-{self.step:09d}")
        temporary = os.path.join(self.directory, f".step-{self.step:09d}.tmp-{os.getpid()}")
        shutil.rmtree(temporary, ignore_errors=True)
        os.makedirs(temporary)
        self.model.save_weights(os.path.join(temporary, WEIGHTS_FILE))
        states = seed_generator_states(self.model)
        np.savez(
            os.path.join(temporary, RNG_FILE),
            **{str(i): keras.ops.convert_to_numpy(v) for i, v in enumerate(states)},
        )
        with open(os.path.join(temporary, STATE_FILE), "w", encoding="utf-8") as file:
            json.dump({"step": self.step, "history": self.history}, file)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(temporary, final)
        for _, path in self.checkpoints()[: -self.keep]:
            shutil.rmtree(path)
        # Leftovers of writes that were killed before their rename.
        for name in os.listdir(self.directory):
            if name.startswith(".step-") and name != os.path.basename(temporary):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.save_due = self.step % self.every_steps == 0
        if self.total_steps is not None and self.step >= self.total_steps:
            self.model.stop_training = True  # saved by on_train_end
            self.save_due = False
        elif self.save_due and batch + 1 < self.params.get("steps", batch + 2):
            self.save()  # mid-epoch; at an epoch's end, on_epoch_end saves with its logs
            self.save_due = False

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        if self.save_due:
            self.save()
            self.save_due = False

    def on_train_end(self, logs=None):
        if not self.checkpoints() or self.checkpoints()[-1][0] != self.step:
            self.save()
        if self.orbax is not None:
            self.orbax.wait()


def _restore_h5(model, path):
    """Loads `path` (a `step-<N>/` of the h5 format) into `model`; returns its state.json."""
    model.load_weights(os.path.join(path, WEIGHTS_FILE))
    with np.load(os.path.join(path, RNG_FILE)) as rng:
        states = seed_generator_states(model)
        if len(rng.files) != len(states):
            raise ValueError(
                f"{len(rng.files)} seed generator states saved, the model has {len(states)}"
            )
        for index, variable in enumerate(states):
            variable.assign(rng[str(index)])
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as file:
        return json.load(file)


class _OrbaxCheckpoints:
    """`<directory>/<step>/` Orbax checkpoints of a model's state tree and a
    JSON state (module docstring); the Orbax checkpointer opens on first use."""

    def __init__(self, directory, keep):
        self.directory = directory
        self.keep = keep
        self._checkpointer = None

    def checkpointer(self):
        if self._checkpointer is None:
            from orbax.checkpoint import v1 as ocp

            self._checkpointer = ocp.training.Checkpointer(
                self.directory,
                preservation_policy=ocp.training.preservation_policies.LatestN(self.keep),
                save_decision_policy=ocp.training.save_decision_policies.FixedIntervalPolicy(1),
                cleanup_tmp_directories=True,  # writes that a kill cut short
            )
        return self._checkpointer

    def checkpoints(self):
        if not os.path.isdir(self.directory):
            return []
        return [
            (c.step, os.path.join(self.directory, str(c.step)))
            for c in self.checkpointer().checkpoints
        ]

    def save(self, model, state):
        arrays = [variable.value for variable in _checkpointed_variables(model)]
        self.checkpointer().save_checkpointables_async(
            state["step"], {"variables": arrays, "state": {"json": json.dumps(state)}}
        )

    def restore(self, model, step):
        import jax

        variables = _checkpointed_variables(model)
        abstract = [
            jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.value.sharding) for v in variables
        ]
        loaded = self.checkpointer().load_checkpointables(
            step, {"variables": abstract, "state": None}
        )
        for variable, value in zip(variables, loaded["variables"]):
            variable.assign(value)
        return json.loads(loaded["state"]["json"])

    def wait(self):
        self.checkpointer().wait()


def _checkpointed_variables(model):
    """What an Orbax checkpoint holds, in order (by position, as `save_weights`:
    layer names that Keras numbers per process need not match): the model's
    variables (weights and seed generator states) and the optimizer's."""
    optimizer = model.optimizer.variables if model.optimizer is not None else []
    return list(model.variables) + list(optimizer)


def fit(model, dataset, steps, steps_per_epoch, checkpoint=None, callbacks=(), verbose=2):
    """`model.fit` for `steps` steps in epochs of `steps_per_epoch` steps.

    With a `TrainingCheckpoint`, restores its newest checkpoint first, skips
    the batches already trained, runs the steps left (none if the run had
    finished) and saves periodically and at the end. Put step-driven
    callbacks on `initial_step=checkpoint.restore(model)`.

    Returns: {log name: [value at each epoch end]}, the epochs before a
    resume included (the epoch that was cut short by the kill is not).
    """
    callbacks = list(callbacks)
    start = 0
    if checkpoint is not None:
        start = checkpoint.restore(model)
        checkpoint.total_steps = steps
        callbacks.append(checkpoint)  # last: it records the logs the others add
    if start >= steps:
        return checkpoint.history
    initial_epoch = start // steps_per_epoch
    history = model.fit(
        dataset.skip(start) if start else dataset,
        steps_per_epoch=steps_per_epoch,
        initial_epoch=initial_epoch,
        epochs=initial_epoch + math.ceil((steps - start) / steps_per_epoch),
        callbacks=callbacks,
        verbose=verbose,
    )
    return checkpoint.history if checkpoint is not None else history.history


def add_training_arguments(parser, checkpoint_every_steps=100):
    """Adds the checkpoint and long-run flags (module docstring) to an argparse parser."""
    group = parser.add_argument_group("checkpoints and long runs")
    group.add_argument(
        "--checkpoint-dir", help="checkpoint directory (default: <output>/checkpoints)"
    )
    group.add_argument("--checkpoint-every-steps", type=int, default=checkpoint_every_steps)
    group.add_argument("--keep-checkpoints", type=int, default=3)
    group.add_argument(
        "--checkpointer",
        choices=("auto",) + CHECKPOINTERS,
        default="auto",
        help="checkpoint format; auto: orbax on a multi-host JAX run, h5 else",
    )
    group.add_argument("--gradient-accumulation-steps", type=int, default=None)
    group.add_argument("--clipnorm", type=float, default=None, help="global gradient norm clip")
    group.add_argument("--mixed-precision", choices=("none", "bf16"), default="none")
    group.add_argument(
        "--max-consecutive-skips",
        type=int,
        default=10,
        help="non-finite steps in a row (each skipped) that stop the run",
    )


def default_training_arguments():
    """The flags' defaults, for a recipe called as a function."""
    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    return parser.parse_args([])


def checkpoint_from_args(args, output_dir, name=None):
    """The `TrainingCheckpoint` the flags ask for; `name` is a subdirectory
    (for a job with several training phases)."""
    directory = args.checkpoint_dir or os.path.join(output_dir, "checkpoints")
    checkpointer = args.checkpointer
    if checkpointer == "auto":
        checkpointer = "orbax" if distribution.processes()[0] > 1 else "h5"
    return TrainingCheckpoint(
        os.path.join(directory, name) if name else directory,
        every_steps=args.checkpoint_every_steps,
        keep=args.keep_checkpoints,
        checkpointer=checkpointer,
    )


def optimizer_arguments(args, **defaults):
    """Keras optimizer keyword arguments of the flags, over the recipe's `defaults`."""
    arguments = dict(defaults)
    if args.clipnorm is not None:
        arguments["global_clipnorm"] = args.clipnorm
    if args.gradient_accumulation_steps and args.gradient_accumulation_steps > 1:
        arguments["gradient_accumulation_steps"] = args.gradient_accumulation_steps
    return arguments


def apply_mixed_precision(args):
    """Sets the global dtype policy to mixed_bfloat16 for `--mixed-precision bf16`
    (call before building models); "none" leaves the policy as it is."""
    if args.mixed_precision == "bf16":
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
