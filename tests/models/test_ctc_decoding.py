import itertools

import keras
import numpy as np
import pytest

from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.ctc_decoding import ctc_decode, token_id_lists
from tests import test_case


def logits_from_paths(paths, classes, rng, peak=5.0):
    """Logits whose argmax follows each path (shorter paths are padded)."""
    frames = max(len(p) for p in paths)
    logits = rng.normal(size=(len(paths), frames, classes)).astype("float32")
    mask = np.zeros((len(paths), frames), "float32")
    for i, path in enumerate(paths):
        logits[i, np.arange(len(path)), path] += peak
        mask[i, : len(path)] = 1
    return logits, mask


def decode_outputs(strategy):
    def call_fn(batch):
        ids, scores = ctc_decode(
            batch["logits"], batch["padding_mask"], strategy=strategy, beam_width=4
        )
        return {"ids": (ids, test_case.to_numpy(ids) >= 0), "log_probs": scores}

    return call_fn


def build_greedy(inputs):
    return keras.layers.Layer(), decode_outputs("greedy")


def build_beam(inputs):
    return keras.layers.Layer(), decode_outputs("beam_search")


def greedy_reference(logits, mask):
    """Best path, repeats merged, blanks dropped, in numpy."""
    out = []
    for row, m in zip(logits, mask):
        best = row[m > 0].argmax(-1)
        out.append([int(k) for i, k in enumerate(best) if k != 0 and (i == 0 or k != best[i - 1])])
    return out


def test_greedy_known_answer(seeded):
    paths = [[1, 1, 0, 1, 2, 2, 0], [0, 0, 3], [2, 0, 2, 2], [0]]
    logits, mask = logits_from_paths(paths, 4, seeded)
    ids, log_probs = ctc_decode(logits, mask)
    assert token_id_lists(ids) == [[1, 1, 2], [3], [2, 2], []]
    assert token_id_lists(ids) == greedy_reference(logits, mask)
    assert test_case.to_numpy(ids).shape == (4, 7)
    # Score: log-probability of the best path.
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = [(log_softmax[i].max(-1) * mask[i]).sum() for i in range(4)]
    np.testing.assert_allclose(test_case.to_numpy(log_probs), expected, rtol=1e-5)


def test_beam_search_beats_greedy_where_alignments_add_up():
    # Two frames, p(blank) = 0.6, p(a) = 0.4: the best path is "blank blank"
    # (0.36) but "a" collects 0.4*0.4 + 0.4*0.6 + 0.6*0.4 = 0.64.
    logits = np.log(np.array([[[0.6, 0.4], [0.6, 0.4]]], "float32"))
    mask = np.ones((1, 2), "float32")
    greedy_ids, greedy_score = ctc_decode(logits, mask)
    beam_ids, beam_score = ctc_decode(logits, mask, strategy="beam_search", beam_width=4)
    assert token_id_lists(greedy_ids) == [[]]
    assert token_id_lists(beam_ids) == [[1]]
    np.testing.assert_allclose(test_case.to_numpy(greedy_score), [np.log(0.36)], rtol=1e-5)
    np.testing.assert_allclose(test_case.to_numpy(beam_score), [np.log(0.64)], rtol=1e-5)


def test_beam_search_agrees_with_greedy_on_peaked_logits(seeded):
    paths = [[1, 1, 0, 1, 2, 2, 0], [0, 0, 3], [2, 0, 2, 2]]
    logits, mask = logits_from_paths(paths, 4, seeded, peak=12.0)
    ids, _ = ctc_decode(logits, mask, strategy="beam_search", beam_width=4)
    assert token_id_lists(ids) == [[1, 1, 2], [3], [2, 2]]


@pytest.mark.parametrize("strategy", ["greedy", "beam_search"])
def test_padding_invariance(seeded, strategy):
    logits = seeded.normal(size=(3, 7, 4)).astype("float32")
    mask = test_case.random_padding_mask(seeded, 3, 7, min_length=2)
    logits[mask == 0] = 30.0  # garbage that would win every frame
    # The call function makes its output mask with numpy: eager items.
    test_case.assert_padding_invariant(
        decode_outputs(strategy),
        {"logits": logits, "padding_mask": mask},
        {"logits": "padding_mask"},
        compile_items=False,
    )


@pytest.mark.parametrize("builder", ["build_greedy", "build_beam"])
def test_backend_parity(seeded, parity_worker, builder):
    logits = seeded.normal(size=(3, 8, 5)).astype("float32")
    mask = test_case.random_padding_mask(seeded, 3, 8, min_length=2)
    test_case.assert_backend_parity(
        f"tests.models.test_ctc_decoding:{builder}",
        {"logits": logits, "padding_mask": mask},
        parity_worker=parity_worker,
    )


def test_decode_to_text_with_character_tokenizer(seeded):
    from keras_slam.data.tokenizers import CharacterTokenizer

    tokenizer = CharacterTokenizer(vocabulary=["<pad>", "<unk>", "<mask>", "a", "b", "ñ", " "])
    paths = [[3, 3, 0, 5, 6, 4], [0, 0], [4, 0, 4]]
    logits, mask = logits_from_paths(paths, tokenizer.vocabulary_size(), seeded)
    token_ids, _ = ctc_decode(logits, mask)
    preprocessor = SpeechRecognizerPreprocessor(tokenizer=tokenizer)
    assert preprocessor.detokenize(token_id_lists(token_ids)) == ["añ b", "", "bb"]


def test_rejects_unknown_strategy(seeded):
    with pytest.raises(ValueError, match="strategy"):
        ctc_decode(
            np.zeros((1, 2, 3), "float32"),
            np.ones((1, 2), "float32"),
            strategy="prefix",
        )


def exact_labelling_log_probs(log_probs, blank_index=0):
    """{labels: log p(labels)} summed over every alignment (brute force)."""
    totals = {}
    frames, classes = log_probs.shape
    for path in itertools.product(range(classes), repeat=frames):
        labels = tuple(
            k for i, k in enumerate(path) if k != blank_index and (i == 0 or k != path[i - 1])
        )
        totals[labels] = np.logaddexp(
            totals.get(labels, -np.inf), log_probs[np.arange(frames), path].sum()
        )
    return totals


def test_wide_beam_search_finds_the_most_probable_labelling(seeded):
    # A beam wider than the number of prefixes keeps every alignment, so it
    # must return the labelling with the largest exact probability.
    for length in (1, 3, 6):
        logits = seeded.normal(size=(1, length, 3)).astype("float32")
        log_probs = logits[0] - np.logaddexp.reduce(
            logits[0].astype("float64"), axis=-1, keepdims=True
        )
        exact = exact_labelling_log_probs(log_probs)
        best = max(exact, key=exact.get)
        ids, score = ctc_decode(
            logits, np.ones((1, length), "float32"), strategy="beam_search", beam_width=64
        )
        assert token_id_lists(ids) == [list(best)]
        np.testing.assert_allclose(test_case.to_numpy(score), [exact[best]], rtol=1e-5)


def test_beam_search_agrees_with_keras_kernel(seeded):
    # Narrow beams prune; the host search keeps the same prefixes as
    # `keras.ops.ctc_decode`'s kernel.
    for beam_width in (1, 2, 4):
        logits = 2.0 * seeded.normal(size=(4, 9, 5)).astype("float32")
        mask = test_case.random_padding_mask(seeded, 4, 9, min_length=1)
        ids, _ = ctc_decode(logits, mask, strategy="beam_search", beam_width=beam_width)
        keras_ids, _ = keras.ops.ctc_decode(
            keras.ops.log_softmax(logits, axis=-1),
            mask.sum(axis=1).astype("int32"),
            strategy="beam_search",
            beam_width=beam_width,
            mask_index=0,
        )
        assert token_id_lists(ids) == token_id_lists(keras_ids[0]), beam_width


@pytest.mark.slow(backend="jax")
def test_beam_search_compiles_nothing_per_shape(seeded):
    # keras' JAX beam kernel was traced and compiled on every call (18 min
    # instead of 2 for 113 utterances); the host search compiles nothing.
    import jax

    compiles = []

    def count(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        for frames in (5, 9, 13, 17):
            logits = seeded.normal(size=(2, frames, 6)).astype("float32")
            mask = test_case.random_padding_mask(seeded, 2, frames)
            ctc_decode(logits, mask, strategy="beam_search", beam_width=4)
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert not compiles, f"{len(compiles)} compiles for 4 shapes"
