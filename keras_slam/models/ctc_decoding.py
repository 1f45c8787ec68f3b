"""CTC decoding: logits + padding mask -> token ids -> strings.

Greedy and beam-search decoding through `keras.ops.ctc_decode` (the same
kernels on JAX, TensorFlow and PyTorch): repeated classes are merged, blanks
dropped, padded frames ignored. Blank conventions are those of
`keras_slam.losses.ctc` (class 0 = blank = the tokenizers' pad id).
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

    Returns:
        token_ids: int32 (B, T), each row's labels first, then -1.
        log_probs: float32 (B,), log-probability of the returned best path
            (greedy) or of the labelling summed over its alignments as far
            as the beam kept them (beam search).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    # Log-probabilities in float32 make both strategies' scores log-probs.
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=1)
    token_ids, scores = ops.ctc_decode(
        log_probs,
        lengths,
        strategy=strategy,
        beam_width=beam_width,
        top_paths=1,
        mask_index=blank_index,
    )
    scores = ops.cast(scores[:, 0], "float32")
    # keras returns the greedy path's negated score, beam search's as is.
    if strategy == "greedy":
        scores = -scores
    return ops.cast(token_ids[0], "int32"), scores


def token_id_lists(token_ids):
    """(B, T) ids padded with -1 (as `ctc_decode` returns) -> list of lists."""
    token_ids = np.asarray(ops.convert_to_numpy(token_ids))
    return [[int(i) for i in row if i >= 0] for row in token_ids]


def ctc_decode_to_text(logits, padding_mask, tokenizer, **decode_kwargs):
    """Decodes (see `ctc_decode`) and detokenizes each row to a string.

    Args:
        tokenizer: a keras-hub tokenizer whose id 0 is the blank/pad, e.g.
            `keras_slam.data.tokenizers.CharacterTokenizer`.
    Returns:
        list of B Python strings.
    """
    token_ids, _ = ctc_decode(logits, padding_mask, **decode_kwargs)
    texts = []
    for ids in token_id_lists(token_ids):
        text = tokenizer.detokenize([ids])[0] if ids else ""
        texts.append(text.decode("utf-8") if isinstance(text, bytes) else str(text))
    return texts
