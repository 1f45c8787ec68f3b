"""CTC decoding: logits + padding mask -> token ids -> strings.

Greedy decoding through `keras.ops.ctc_decode`; beam search (prefix beam
search, the algorithm of `keras.ops.ctc_decode(strategy="beam_search")`) in
numpy on the host: the JAX kernel is traced and compiled anew on every call,
which made beam transcription ~25x slower than greedy; host decoding is
the same on every backend. Repeated classes are merged, blanks dropped,
padded frames ignored. Blank conventions are those of `keras_slam.objectives.ctc`
(class 0 = blank = the tokenizers' pad id).
"""

import numpy as np
from keras import ops

STRATEGIES = ("greedy", "beam_search")


def ctc_decode(logits, padding_mask, strategy="greedy", beam_width=16, blank_index=0):
    """Best CTC labelling of each sequence.

    Args:
        logits: float (B, T, C) unnormalised scores.
        padding_mask: (B, T) 1 = real frame, 0 = pad.
        strategy: "greedy" (best path) or "beam_search" (prefix beam search,
            which sums over alignments and can beat the best path).
        beam_width: beams kept per step for "beam_search".
        blank_index: the blank class.

    Returns (numpy arrays: decoding feeds host code, the detokenizer):
        token_ids: int32 (B, T), each row's labels first, then -1.
        log_probs: float32 (B,), log-probability of the returned best path
            (greedy) or of the labelling summed over its alignments as far
            as the beam kept them (beam search).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "beam_search":
        return _beam_search(logits, padding_mask, beam_width, blank_index)
    # Log-probabilities in float32 make the score a log-probability.
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=1)
    token_ids, scores = ops.ctc_decode(
        log_probs, lengths, strategy="greedy", mask_index=blank_index
    )
    # keras returns the greedy path's negated score.
    token_ids, scores = ops.convert_to_numpy(token_ids[0]), ops.convert_to_numpy(scores[:, 0])
    return np.asarray(token_ids, "int32"), -np.asarray(scores, "float32")


def _beam_search(logits, padding_mask, beam_width, blank_index):
    """`ctc_decode(strategy="beam_search")` in numpy, one row at a time."""
    logits = np.asarray(ops.convert_to_numpy(logits), "float64")
    lengths = np.asarray(ops.convert_to_numpy(padding_mask)).sum(axis=1).astype(int)
    log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    token_ids = np.full(logits.shape[:2], -1, "int32")
    scores = np.zeros(len(logits), "float32")
    for row, (frames, length) in enumerate(zip(log_probs, lengths)):
        labels, scores[row] = prefix_beam_search(frames[:length], beam_width, blank_index)
        token_ids[row, : len(labels)] = labels
    return token_ids, scores


def prefix_beam_search(log_probs, beam_width, blank_index=0):
    """CTC prefix beam search over one utterance.

    Each beam is a label prefix with two log-probabilities: of the frames so
    far ending in a blank, and ending in the prefix's last label (a repeat
    of that label extends the prefix only after a blank). After every frame
    the `beam_width` prefixes with the largest total are kept.

    Args:
        log_probs: float (T, C) log-probabilities of the real frames.
        beam_width: prefixes kept per frame.
        blank_index: the blank class.
    Returns:
        (labels: list of int, log-probability of that labelling summed over
        the alignments the beam kept).
    """
    beams = {(): (0.0, -np.inf)}  # prefix -> (log p ends in blank, in label)
    for frame in log_probs:
        prefixes = list(beams)
        ends_blank, ends_label = (np.array(s) for s in zip(*beams.values()))
        totals = np.logaddexp(ends_blank, ends_label)
        last = np.array([prefix[-1] if prefix else -1 for prefix in prefixes])
        has_last = last >= 0
        # The prefix itself: a blank, or its last label repeated (merged).
        stay_blank = totals + frame[blank_index]
        stay_label = np.where(has_last, ends_label + frame[last], -np.inf)
        # prefix + c: after anything, except that c == last needs a blank.
        extend = totals[:, None] + frame[None, :]
        extend[has_last, last[has_last]] = ends_blank[has_last] + frame[last[has_last]]
        extend[:, blank_index] = -np.inf
        # An extension that is itself a kept prefix merges into it.
        index = {prefix: i for i, prefix in enumerate(prefixes)}
        for i, prefix in enumerate(prefixes):
            parent = index.get(prefix[:-1]) if prefix else None
            if parent is not None:
                stay_label[i] = np.logaddexp(stay_label[i], extend[parent, prefix[-1]])
                extend[parent, prefix[-1]] = -np.inf
        candidates = np.concatenate([np.logaddexp(stay_blank, stay_label), extend.ravel()])
        keep = min(beam_width, int(np.isfinite(candidates).sum()))
        best = np.argpartition(-candidates, keep - 1)[:keep]
        beams = {}
        for k in best[np.argsort(-candidates[best], kind="stable")]:
            if k < len(prefixes):
                beams[prefixes[k]] = (stay_blank[k], stay_label[k])
            else:
                parent, label = divmod(k - len(prefixes), frame.shape[0])
                beams[prefixes[parent] + (label,)] = (-np.inf, extend[parent, label])
    prefix, (ends_blank, ends_label) = next(iter(beams.items()))
    return list(prefix), float(np.logaddexp(ends_blank, ends_label))


def token_id_lists(token_ids):
    """(B, T) ids padded with -1 (as `ctc_decode` returns) -> list of lists."""
    token_ids = np.asarray(ops.convert_to_numpy(token_ids))
    return [[int(i) for i in row if i >= 0] for row in token_ids]
