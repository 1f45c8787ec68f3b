"""Objective schedules: which pre-training losses count, step by step.

`ObjectiveSchedule` is a callback that assigns the `SLAMPretrainer`'s
objective weights (non-trainable variables) when a stage begins, so the
compiled train step never changes. Stages are (first_step, weights) pairs;
a stage's weights hold until the next stage's first step.

- `SLAM_STAGES` (Bapna et al. 2021): self-supervised speech (w2v-BERT) and
  text (SpanBERT) first, then TLM and STM added (paper: ~500k steps, then
  250k-500k more).
- `MSLAM_STAGES` (Bapna et al. 2022): no stages; every batch mixes speech,
  text and paired data, all objectives on (TLM off, CTC on: mSLAM-CTC).
"""

import keras

SELF_SUPERVISED = {
    "contrastive": 1.0, "diversity": 0.1, "w2v_mlm": 1.0, "text_mlm": 1.0, "tlm": 0.0, "stm": 0.0, "ctc": 0.0
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
