"""Training callbacks: objective stages, and loud stops for broken runs.

- `ObjectiveSchedule`: assigns the `SLAMPretrainer`'s objective weights
  (non-trainable variables) when a stage begins, so the compiled train step
  never changes. Stages are (first_step, weights) pairs; a stage's weights
  hold until the next stage's first step. `SLAM_STAGES` (Bapna et al.
  2021): self-supervised speech (w2v-BERT) and text (SpanBERT) first, then
  TLM and STM added (paper: ~500k steps, then 250k-500k more).
  `MSLAM_STAGES` (Bapna et al. 2022): no stages; every batch mixes speech,
  text and paired data, all objectives on (TLM off, CTC on: mSLAM-CTC).
- `TerminateOnSkippedSteps`: stops `fit` after too many consecutive steps
  skipped by `keras_slam.optimizers.FiniteStepOptimizer`.
- `CodebookCollapseMonitor`: stops pre-training when a codebook-health
  metric (`keras_slam.metrics.codebook`) falls too low.
- `BlankOnlyGuard`: warns when a CTC `SpeechRecognizer` predicts only blanks.
"""

import logging
import warnings

import keras
import numpy as np
from keras import ops

from keras_slam.models.speech_recognizer import FEATURE_KEYS
from keras_slam.objectives.ctc import minimum_frames
from keras_slam.optimizers import find_finite_step_optimizer

logger = logging.getLogger(__name__)


SELF_SUPERVISED = {
    "contrastive": 1.0,
    "diversity": 0.1,
    "w2v_mlm": 1.0,
    "text_mlm": 1.0,
    "tlm": 0.0,
    "stm": 0.0,
    "ctc": 0.0,
}
SLAM_STAGES = ((0, SELF_SUPERVISED), (500_000, dict(SELF_SUPERVISED, tlm=1.0, stm=1.0)))
MSLAM_STAGES = ((0, dict(SELF_SUPERVISED, ctc=1.0)),)


def stage_weights(stages, step):
    """The weights in force at `step` (stages sorted by first step)."""
    current = stages[0][1]
    for first_step, weights in stages:
        if step >= first_step:
            current = weights
    return current


class ObjectiveSchedule(keras.callbacks.Callback):
    """Sets `model.set_objective_weights` at stage boundaries.

    Args:
        stages: ((first_step, {objective: weight}), ...), first step 0.
            Objectives the model does not compute are ignored.
        initial_step: global step of the first batch (resuming).

    The weights in force are logged as `weight/{objective}` in the epoch
    logs (so they appear in `history` and TensorBoard).
    """

    def __init__(self, stages, initial_step=0):
        super().__init__()
        stages = tuple(sorted(stages, key=lambda stage: stage[0]))
        if not stages or stages[0][0] != 0:
            raise ValueError("The first stage must start at step 0.")
        self.stages = stages
        self.step = initial_step
        self.current = None

    def on_train_batch_begin(self, batch, logs=None):
        weights = stage_weights(self.stages, self.step)
        if weights is not self.current:
            # Touching `self.model` syncs the JAX state, so the assignment
            # reaches the next compiled step; done only at stage changes.
            model = self.model
            model.set_objective_weights(
                {name: value for name, value in weights.items() if name in model.objective_weights}
            )
            self.current = weights
        self.step += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.current is not None:
            enabled = self.model.objective_weights
            for name, value in self.current.items():
                if name in enabled:
                    logs[f"weight/{name}"] = value


class TerminateOnSkippedSteps(keras.callbacks.Callback):
    """Adds `skipped_steps` to the logs and stops `fit` with an error naming
    the step and the loss after `max_consecutive_skips` skipped steps in a row.

    One skipped step is a bad batch; the weights are unchanged, so the next
    batch trains normally. Skips in a row mean the model or the data stream
    is broken, and skipping cannot mend it.

    Args:
        max_consecutive_skips: skipped steps in a row that stop training.
    """

    def __init__(self, max_consecutive_skips=10):
        super().__init__()
        self.max_consecutive_skips = max_consecutive_skips

    def _counters(self):
        """(optimizer, skipped_steps, consecutive_skips) of the model now."""
        optimizer = find_finite_step_optimizer(self.model.optimizer)
        if optimizer is None:
            raise ValueError(
                "TerminateOnSkippedSteps needs a model compiled with a "
                f"FiniteStepOptimizer; got {type(self.model.optimizer).__name__}"
            )
        return (
            optimizer,
            int(ops.convert_to_numpy(optimizer.skipped_steps)),
            int(ops.convert_to_numpy(optimizer.consecutive_skips)),
        )

    def on_epoch_end(self, epoch, logs=None):
        logs["skipped_steps"] = self._counters()[1]

    def on_train_batch_end(self, batch, logs=None):
        optimizer, skipped_steps, consecutive_skips = self._counters()
        logs["skipped_steps"] = skipped_steps
        if consecutive_skips >= self.max_consecutive_skips:
            step = int(ops.convert_to_numpy(optimizer.iterations)) + skipped_steps
            loss = logs.get("loss")
            raise RuntimeError(
                f"{consecutive_skips} training steps in a row, up to step {step} "
                f"(batch {batch} of this epoch), had a non-finite loss or gradient "
                f"(loss: {loss}); none was applied. Check the data and the learning rate."
            )


# The log key of the masked frames behind "codebook_usage" (`SLAMPretrainer`).
FRAMES_KEY = "codebook_usage_frames"


class CodebookCollapseError(RuntimeError):
    """Raised by `CodebookCollapseMonitor` when a codebook metric collapses."""


class CodebookCollapseMonitor(keras.callbacks.Callback):
    """Stops training loudly when a codebook-health metric falls too low.

    Every `check_every_n_batches` training steps (counted across epochs)
    reads each `logs[name]` of `thresholds`; a value below its threshold at
    `patience` checks in a row raises `CodebookCollapseError` naming the
    metric, its value, the threshold and the step (or, with
    `on_collapse="warn"`, warns and goes on).

    Metrics (`SLAMPretrainer`): "codebook_usage" (fraction of codes used as
    targets over a window of steps), "w2v_mlm_gain" (nats by which masked
    prediction beats the code marginal: <= 0 when the targets are
    unpredictable noise or a collapsed code), "valid_negatives" (negatives
    that differ from the target). Usage is judged only once its window
    holds `min_frames` masked frames (`logs["codebook_usage_frames"]`): 10
    frames show at most 10 codes, however healthy the codebook.

    Args:
        thresholds: {log key: minimum}; default {"codebook_usage": 0.1}.
        check_every_n_batches: how often to look.
        patience: consecutive low checks of one metric before acting.
        start_step: steps before which nothing is checked (a gain needs
            some training before it can be positive).
        on_collapse: "raise" or "warn".
        min_frames: masked frames below which usage is not judged; 256 is 4
            per code of the tiny recipes' 64 (0: judge every check).
    """

    def __init__(
        self,
        thresholds=None,
        check_every_n_batches=100,
        patience=1,
        start_step=0,
        on_collapse="raise",
        min_frames=256,
    ):
        super().__init__()
        if on_collapse not in ("raise", "warn"):
            raise ValueError(f"on_collapse must be 'raise' or 'warn', got {on_collapse!r}")
        self.thresholds = dict({"codebook_usage": 0.1} if thresholds is None else thresholds)
        self.check_every_n_batches = check_every_n_batches
        self.patience = patience
        self.start_step = start_step
        self.on_collapse = on_collapse
        self.min_frames = min_frames
        self.step = 0
        self.low_checks = {name: 0 for name in self.thresholds}
        self.history = []

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.check_every_n_batches or self.step < self.start_step or not logs:
            return
        judged = dict(self.thresholds)
        needed = set(judged)
        if self.min_frames and "codebook_usage" in judged:
            needed.add(FRAMES_KEY)
        missing = sorted(needed - set(logs))
        if missing:
            raise KeyError(
                f"CodebookCollapseMonitor: no {missing} in the training logs "
                f"(have {sorted(logs)}); the model must report them."
            )
        values = {name: float(logs[name]) for name in sorted(needed)}
        self.history.append((self.step, values))
        if values.get(FRAMES_KEY, self.min_frames) < self.min_frames:
            del judged["codebook_usage"]
        for name, threshold in judged.items():
            self.low_checks[name] = self.low_checks[name] + 1 if values[name] < threshold else 0
            if self.low_checks[name] < self.patience:
                continue
            message = (
                f"Codebook collapse: {name} = {values[name]:.4f} < threshold {threshold} "
                f"at step {self.step} ({self.low_checks[name]} check(s) in a row, "
                f"every {self.check_every_n_batches} steps)."
            )
            if self.on_collapse == "raise":
                raise CodebookCollapseError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            logger.warning(message)


BLANK_ONLY_CAUSES = """\
Usual causes:
  - learning rate too high (the loss plateaus or jumps) or too low;
  - too few steps: CTC models emit only blanks for a while before the
    first characters appear; train longer before judging;
  - label / blank mismatch: the labels use the blank id ({blank}) or the head
    size differs from the tokenizer's vocabulary ({vocabulary});
  - frames shorter than labels: {infeasible} of {items} checked utterances
    have fewer encoder frames than their labels need (subsampling too
    aggressive for the transcript length), so they contribute no loss."""


class BlankOnlyGuard(keras.callbacks.Callback):
    """Warns when, after `check_after_steps` steps, the model emits only blanks.

    The classic CTC trap: WER stays at 1.0 because every frame's best class
    is the blank. The check runs the model on `batch` (a pipeline batch with
    features and labels) and looks at the best class of every real frame.

    Args:
        batch: dict with "speech_features", "speech_padding_mask" and, for
            the frames-versus-labels check, "token_ids" / "token_padding_mask".
        check_after_steps: training step after which to check (once).
        blank_fraction: warn when at least this share of real frames is blank.
        stop_training: also stop `fit`.
    """

    def __init__(self, batch, check_after_steps=200, blank_fraction=0.999, stop_training=False):
        super().__init__()
        self.batch = {k: np.asarray(v) for k, v in batch.items()}
        self.check_after_steps = check_after_steps
        self.blank_fraction = blank_fraction
        self.stop_training = stop_training
        self.steps = 0
        self.message = None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.check_after_steps:
            self.check()

    def check(self):
        """Runs the check now; returns the warning message or None."""
        model = self.model
        inputs = {k: self.batch[k] for k in FEATURE_KEYS}
        outputs = model.predict_on_batch(inputs)
        best = np.argmax(np.asarray(outputs["logits"], "float32"), axis=-1)
        real = np.asarray(outputs["padding_mask"]) > 0
        share = float(np.mean(best[real] == model.blank_index)) if real.any() else 1.0
        if share < self.blank_fraction:
            return None
        infeasible, items = 0, 0
        if "token_ids" in self.batch:
            labels = self.batch["token_ids"]
            label_mask = self.batch["token_padding_mask"] > 0
            needed = np.asarray(minimum_frames(labels, label_mask))
            frames = real.sum(axis=1)
            present = frames > 0
            items = int(present.sum())
            infeasible = int(np.sum(present & (frames < needed)))
        self.message = (
            f"BlankOnlyGuard: after {self.steps} steps the model predicts the CTC blank "
            f"on {share:.1%} of the real frames, so every transcript is empty and "
            "WER = 1.0.\n"
            + BLANK_ONLY_CAUSES.format(
                blank=model.blank_index,
                vocabulary=model.vocabulary_size,
                infeasible=infeasible,
                items=items,
            )
        )
        warnings.warn(self.message, stacklevel=2)
        if self.stop_training:
            model.stop_training = True
        return self.message
