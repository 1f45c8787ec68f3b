"""Codebook health: perplexity, code usage, a collapse monitor and a plot.

A quantizer collapses when few of its codes stay in use; the contrastive
task then becomes trivial. `codebook_perplexity` is the differentiable view
(what the diversity loss pushes up), `CodebookUsage` the hard count over a
window of steps, and `keras_slam.callbacks.CodebookCollapseMonitor` acts on
it during `fit`.
"""

import keras
from keras import ops

from keras_slam.layers.padding import masked_mean


def _entropy(probs):
    """-sum p log p over the last axis, with 0 log 0 = 0 (never log(0))."""
    safe = ops.where(probs > 0, probs, ops.ones_like(probs))
    return -ops.sum(probs * ops.log(safe), axis=-1)


def _mean_over_frames(values, mask):
    """(B, T, ...) values averaged over the (B, T) frames where `mask` is 1
    (every frame when None); zeros when no frame is selected."""
    if mask is None:
        mask = ops.ones(ops.shape(values)[:2], values.dtype)
    return masked_mean(values, mask, axis=(0, 1))


def perplexity_of_marginals(marginals):
    """Sum over groups of exp(entropy) of each group's code distribution.

    Args:
        marginals: (G, V) float, each row a distribution over V codes
            (a row of zeros counts as perplexity 1).
    Returns:
        Scalar float32 in [G, G * V].
    """
    return ops.sum(ops.exp(_entropy(ops.cast(marginals, "float32"))))


def codebook_perplexity(probs, mask=None):
    """Perplexity of the average code distribution over the masked frames.

    As `Wav2Vec2GumbelVectorQuantizer._compute_perplexity`: frames where
    `mask` is 0 are left out of the average; with no frame selected the
    marginals are zero and the result is G (never NaN).

    Args:
        probs: (B, T, G, V) per-frame code distributions (soft or one-hot).
        mask: optional (B, T), 1 = frame counted.
    Returns:
        Scalar float32.
    """
    return perplexity_of_marginals(_mean_over_frames(ops.cast(probs, "float32"), mask))


def frame_perplexity(probs, mask=None):
    """How many codes each frame hesitates between: exp(mean frame entropy).

    Per group, exp of the code entropy of each frame averaged over the
    masked frames; summed over groups like `codebook_perplexity`. Near G
    (1 per group) every frame commits to one code; when it approaches
    `codebook_perplexity` the code hardly depends on the frame (the marginal
    is no more spread than each frame's own distribution), the flat state a
    diversity loss can drive a quantizer into. exp(log marginal perplexity -
    log frame perplexity) is exp(mutual information) between frame and code.

    Args:
        probs: (B, T, G, V) per-frame code distributions.
        mask: optional (B, T), 1 = frame counted.
    Returns:
        Scalar float32 in [G, G * V]; G when no frame is counted.
    """
    entropy = _entropy(ops.cast(probs, "float32"))
    return ops.sum(ops.exp(_mean_over_frames(entropy, mask)))


def code_counts(code_ids, num_codes, mask=None):
    """How often each code is chosen over the masked frames.

    Args:
        code_ids: (B, T) or (B, T, G) integer code ids.
        num_codes: V, codes per group.
        mask: optional (B, T), 1 = frame counted.
    Returns:
        (G, V) float32 counts.
    """
    code_ids = ops.cast(code_ids, "int32")
    if len(code_ids.shape) == 2:
        code_ids = code_ids[:, :, None]
    num_groups = code_ids.shape[-1]
    if mask is None:
        mask = ops.ones(ops.shape(code_ids)[:2], "float32")
    weights = ops.broadcast_to(ops.cast(mask, "float32")[:, :, None], ops.shape(code_ids))
    # One segment per (group, code): a scatter-add, no (B, T, G, V) one-hot.
    segments = code_ids + ops.arange(num_groups, dtype="int32") * num_codes
    counts = ops.segment_sum(
        ops.reshape(weights, (-1,)),
        ops.reshape(segments, (-1,)),
        num_segments=num_groups * num_codes,
    )
    return ops.reshape(counts, (num_groups, num_codes))


def marginal_cross_entropy(code_ids, marginal_counts, mask=None):
    """Cross-entropy (nats) of the masked frames' codes under a code marginal.

    With the marginal of many steps' codes (`SLAMPretrainer`'s running
    counts) this is what a predictor that ignores its input and knows the
    code frequencies scores, the baseline of `w2v_mlm_gain`. The batch's
    own marginal is no such baseline: its entropy is biased low by about
    (V - 1) / 2N for N independent frames, and much more for span-masked
    frames, whose codes repeat (-0.49 vs -0.05 nats on the same model, see
    `SLAMPretrainer`). Per group, averaged over groups (as
    `masked_prediction_loss` averages).

    Args:
        code_ids: (B, T) or (B, T, G) integer code ids.
        marginal_counts: (G, V) code counts (any scale) that include every
            code chosen at a counted frame (so no log(0)).
        mask: optional (B, T), 1 = frame counted.
    Returns:
        Scalar float32; 0 when no frame is counted.
    """
    marginal_counts = ops.cast(marginal_counts, "float32")
    counts = code_counts(code_ids, marginal_counts.shape[-1], mask)
    frequencies = counts / ops.maximum(ops.sum(counts, axis=-1, keepdims=True), 1.0)
    marginals = marginal_counts / ops.maximum(
        ops.sum(marginal_counts, axis=-1, keepdims=True), 1e-12
    )
    # Codes absent from the batch have frequency 0: their log is not used.
    log_marginals = ops.log(ops.where(counts > 0, marginals, ops.ones_like(marginals)))
    return ops.mean(-ops.sum(frequencies * log_marginals, axis=-1))


@keras.saving.register_keras_serializable(package="keras_slam")
class CodebookUsage(keras.metrics.Metric):
    """Fraction of codes chosen at least once over the last `window_steps`.

    Keeps one (G, V) count table per step in a ring buffer (fixed shapes, so
    `update_state` works inside a jitted `compute_loss`). The window outlives
    `reset_state`: keras resets metrics at every epoch, which would cut it
    to one epoch's steps (one batch of ~10 masked frames in a smoke run,
    where few codes in use is no collapse). `window_steps=None` accumulates
    since the last reset. The result is averaged over groups; `frames()`
    says how many frames it rests on.

    Args:
        num_codes: V, codes per group.
        num_groups: G.
        window_steps: number of most recent `update_state` calls counted,
            or None for all since the last reset.
    """

    def __init__(self, num_codes, num_groups=1, window_steps=None, name="codebook_usage", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_codes = num_codes
        self.num_groups = num_groups
        self.window_steps = window_steps
        slots = window_steps or 1
        self.counts = self.add_variable(
            shape=(slots, num_groups, num_codes), initializer="zeros", name="counts"
        )
        self.updates = self.add_variable(
            shape=(), initializer="zeros", dtype="int32", name="updates"
        )

    def update_state(self, code_ids, mask=None):
        """code_ids (B, T[, G]) integers; mask (B, T), 1 = counted."""
        step_counts = code_counts(code_ids, self.num_codes, mask)[None]
        if self.window_steps is None:
            self.counts.assign(self.counts + step_counts)
        else:
            slot = ops.one_hot(self.updates % self.window_steps, self.window_steps)
            slot = ops.cast(slot, "float32")[:, None, None]
            self.counts.assign(self.counts * (1.0 - slot) + step_counts * slot)
        self.updates.assign(self.updates + 1)

    def total_counts(self):
        """(G, V) counts over the window."""
        return ops.sum(self.counts, axis=0)

    def frames(self):
        """Scalar float32: frames counted over the window (per group)."""
        return ops.sum(self.counts) / self.num_groups

    def result(self):
        used = ops.cast(self.total_counts() > 0, "float32")
        return ops.mean(used)

    def reset_state(self):
        if self.window_steps is None:
            self.counts.assign(ops.zeros(self.counts.shape))
            self.updates.assign(0)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_codes=self.num_codes,
            num_groups=self.num_groups,
            window_steps=self.window_steps,
        )
        return config


def save_codebook_usage_plot(counts, path, title="Codebook usage"):
    """Saves a PNG of code counts, each group sorted from most to least used.

    Args:
        counts: (V,) or (G, V) array of counts (e.g. `CodebookUsage.total_counts()`).
        path: output .png path.
        title: figure title.
    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.atleast_2d(np.asarray(keras.ops.convert_to_numpy(counts), dtype="float64"))
    figure, axes = plt.subplots(len(counts), 1, figsize=(8, 2.5 * len(counts)), squeeze=False)
    for group, (axis, group_counts) in enumerate(zip(axes[:, 0], counts)):
        ordered = np.sort(group_counts)[::-1]
        used = int(np.sum(group_counts > 0))
        axis.bar(np.arange(len(ordered)), ordered, width=1.0)
        axis.set_yscale("symlog")
        axis.set_xlabel("code rank")
        axis.set_ylabel("count")
        axis.set_title(f"group {group}: {used}/{len(ordered)} codes used")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
    return path
