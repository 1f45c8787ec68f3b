"""Held-out evaluation of the paired objectives (recipes.slam.evaluate_paired), of
STM's length-only baseline (recipes.slam.stm_length_baseline) and of
cross-modal prediction (SLAMPretrainer.cross_modal_scores, recipes.slam.evaluate_cross_modal)."""

import keras
import numpy as np
import pytest

from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.slam_pretrainer import SLAMPretrainer
from keras_slam.objectives.mlm import masked_token_loss
from keras_slam.objectives.w2v_bert import masked_prediction_loss
from recipes.slam import evaluate_cross_modal, evaluate_paired, stm_length_baseline
from tests import test_case
from tests.models.test_slam_backbone import TINY


def paired_batch(rng, batch_size, frames=40, tokens=6):
    speech_mask = test_case.random_padding_mask(rng, batch_size, frames, min_length=frames // 2)
    token_mask = test_case.random_padding_mask(rng, batch_size, tokens, min_length=2)
    return {
        "speech_features": rng.normal(size=(batch_size, frames, 12)).astype("float32"),
        "speech_padding_mask": speech_mask,
        "token_ids": (rng.integers(3, 40, size=(batch_size, tokens)) * token_mask).astype("int32"),
        "token_padding_mask": token_mask,
        "language": np.array([b"en"] * batch_size),
    }


def test_evaluate_paired_is_the_mean_of_each_held_out_batch(seeded):
    """STM and CTC draw nothing at evaluation: each result is the mean over
    the batches of what `compute_objectives` gives each batch; speech and
    text metrics are not reported, extra keys ("language") are dropped."""
    import tensorflow as tf

    pretrainer = SLAMPretrainer(SLAMBackbone(**TINY), objectives=("stm", "ctc", "text_mlm"), seed=3)
    # Cheapest step: XLA compiles take minutes on TF, eager JAX dispatches slowly.
    pretrainer.compile(jit_compile=test_case.backend() == "jax")
    batches = [paired_batch(seeded, 3), paired_batch(seeded, 3)]
    dataset = tf.data.Dataset.from_tensor_slices(
        {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    )
    results = evaluate_paired(pretrainer, dataset)
    assert set(results) == {"stm_loss", "stm_accuracy", "ctc_loss"}
    per_batch = [
        pretrainer.compute_objectives(
            {"paired": {k: v for k, v in batch.items() if k != "language"}}
        )
        for batch in batches
    ]
    for name, value in results.items():
        expected = np.mean([test_case.to_numpy(objectives[name]) for objectives in per_batch])
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_evaluate_paired_draws_the_same_tlm_masks_on_every_call(seeded):
    """TLM's masks and corruption come from SeedGenerator(seed) on each call:
    two calls on the same weights give identical numbers, whatever the
    task's own draws did in between, and the task's mask seed is left where
    it was; another seed draws other masks."""
    import tensorflow as tf

    pretrainer = SLAMPretrainer(SLAMBackbone(**TINY), objectives=("tlm", "stm"), seed=3)
    pretrainer.compile(jit_compile=test_case.backend() == "jax")
    batches = [paired_batch(seeded, 3), paired_batch(seeded, 3)]
    dataset = tf.data.Dataset.from_tensor_slices(
        {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    )
    state = pretrainer.mask_seed.state
    results = evaluate_paired(pretrainer, dataset, seed=7)
    assert {"tlm_loss", "tlm_text_accuracy", "tlm_speech_accuracy", "stm_loss"} <= set(results)
    pretrainer.draw_masks({"paired": {k: v for k, v in batches[0].items() if k != "language"}})
    before = test_case.to_numpy(state.value).copy()
    assert evaluate_paired(pretrainer, dataset, seed=7) == results
    np.testing.assert_array_equal(test_case.to_numpy(state.value), before)
    assert evaluate_paired(pretrainer, dataset, seed=8)["tlm_loss"] != results["tlm_loss"]


def length_batches(frames, tokens):
    """One batch per row of `frames` / `tokens` (real speech frames / tokens per pair)."""
    import tensorflow as tf

    frames, tokens = np.asarray(frames), np.asarray(tokens)

    def mask(lengths):
        return (np.arange(lengths.max())[None, None, :] < lengths[..., None]).astype("float32")

    return tf.data.Dataset.from_tensor_slices(
        {
            "speech_padding_mask": mask(frames),
            "token_padding_mask": mask(tokens),
            "token_ids": mask(tokens).astype("int32") * 5,
        }
    )


def test_stm_length_baseline_separates_pairs_by_length_ratio():
    """Frames / tokens of the pairs: 40/4, 30/3, 20/2, 40/4 (ratio 10 each);
    the next-row negatives 40/3, 30/2, 20/4 and 40/4: a threshold at the
    matched ratio gets the 4 matched and 3 of 4 mismatched right (7/8); where
    every pair, matched or not, reads 40/4, no threshold beats 1/2."""
    pretrainer = SLAMPretrainer(SLAMBackbone(**TINY), objectives=("stm",), compile=False)
    separable = length_batches([[40, 30, 20, 40]], [[4, 3, 2, 4]])
    result = stm_length_baseline(pretrainer, separable)
    assert result["stm_length_baseline_pairs"] == 4
    np.testing.assert_allclose(result["stm_length_baseline_accuracy"], 7 / 8)
    same_ratio = length_batches([[40, 40, 40]], [[4, 4, 4]])
    result = stm_length_baseline(pretrainer, same_ratio)
    np.testing.assert_allclose(result["stm_length_baseline_accuracy"], 0.5)


@pytest.mark.parametrize("choice, accuracy", [("next", 1.0), ("length_matched", 0.5)])
def test_length_matched_negatives_defeat_the_length_baseline(choice, accuracy):
    """Pairs 40/4, 84/8, 44/4, 80/8 frames/tokens (ratios 10, 10.5, 11, 10).
    The next rows' texts give ratios 5, 21, 5.5, 20, all apart from the
    matched ones (1.0); the length-matched texts (4 tokens for 4, 8 for 8)
    give 10, 10.5, 11, 10, the matched ratios again: no threshold beats 0.5.
    An empty row of padding changes nothing."""
    pretrainer = SLAMPretrainer(
        SLAMBackbone(**TINY), objectives=("stm",), stm_negative_choice=choice, compile=False
    )
    result = stm_length_baseline(pretrainer, length_batches([[40, 84, 44, 80]], [[4, 8, 4, 8]]))
    assert result["stm_length_baseline_pairs"] == 4
    np.testing.assert_allclose(result["stm_length_baseline_accuracy"], accuracy)
    padded = length_batches([[40, 84, 44, 80, 0]], [[4, 8, 4, 8, 0]])
    assert stm_length_baseline(pretrainer, padded) == result


def pad_batch(batch, draws, frames, tokens, rows=1):
    """`batch` and its `draws` with `frames` feature frames (4 subsampled
    ones each), `tokens` tokens and `rows` empty rows of padding added."""

    def pad(array, time):
        array = np.asarray(test_case.to_numpy(array))
        widths = [(0, rows), (0, time)] + [(0, 0)] * (array.ndim - 2)
        return np.pad(array, widths)

    padded = {
        "speech_features": pad(batch["speech_features"], frames),
        "speech_padding_mask": pad(batch["speech_padding_mask"], frames),
        "token_ids": pad(batch["token_ids"], tokens),
        "token_padding_mask": pad(batch["token_padding_mask"], tokens),
    }
    padded_draws = {
        "speech_span_mask": pad(draws["speech_span_mask"], frames // 4),
        "text_span_mask": pad(draws["text_span_mask"], tokens),
    }
    return padded, padded_draws


def cross_modal_inputs(rng, pretrainer, batch_size=3):
    batch = {k: v for k, v in paired_batch(rng, batch_size).items() if k != "language"}
    return batch, pretrainer.draw_paired_masks(batch, seed=keras.random.SeedGenerator(5))


def dataset_of(batches):
    """A tf.data dataset of `batches` (dicts of arrays, any batch size)."""
    import tensorflow as tf

    return tf.data.Dataset.from_generator(
        lambda: iter(batches),
        output_signature={
            k: tf.TensorSpec((None,) + v.shape[1:], v.dtype) for k, v in batches[0].items()
        },
    )


def to_floats(scores):
    return {name: float(test_case.to_numpy(value)) for name, value in scores.items()}


def test_cross_modal_scores_alone_is_the_unimodal_path_and_padding_invariant(seeded):
    """ "alone" is text MLM's / masked prediction's single-modality pass with
    the same masks; every score is finite; padding (frames, tokens, an empty
    row) changes nothing; the own and other contexts are read."""
    pretrainer = SLAMPretrainer(SLAMBackbone(**TINY), num_codes=16, seed=3)
    batch, draws = cross_modal_inputs(seeded, pretrainer)
    scores = to_floats(pretrainer.cross_modal_scores(batch, draws))
    sides, contexts = ("text", "speech"), ("alone", "own", "other")
    assert set(scores) == {f"{s}_count" for s in sides} | {
        f"{s}_{c}_{m}" for s in sides for c in contexts for m in ("loss", "accuracy")
    }
    assert all(np.isfinite(v) for v in scores.values())
    backbone = pretrainer.backbone
    token_mask = batch["token_padding_mask"]
    text_span = test_case.to_numpy(draws["text_span_mask"]) * token_mask
    masked_ids = np.where(text_span > 0, 2, batch["token_ids"])
    text = backbone.encode_shared(backbone.embed_text(masked_ids, token_mask), token_mask)
    loss, _ = masked_token_loss(batch["token_ids"], pretrainer._token_logits(text), text_span)
    np.testing.assert_allclose(scores["text_alone_loss"], test_case.to_numpy(loss), rtol=1e-5)
    assert scores["text_count"] == text_span.sum()
    frames, frame_mask = backbone.subsample_speech(
        batch["speech_features"], batch["speech_padding_mask"]
    )
    speech_span = test_case.to_numpy(draws["speech_span_mask"]) * test_case.to_numpy(frame_mask)
    speech = backbone.encode_shared(
        backbone.encode_speech_tower(
            pretrainer.speech_mask_embedding(frames, speech_span), frame_mask
        ),
        frame_mask,
    )
    code_ids, _, _ = pretrainer._speech_targets(batch, frames, frame_mask, False)
    loss, _ = masked_prediction_loss(pretrainer._code_logits(speech), code_ids, speech_span)
    np.testing.assert_allclose(scores["speech_alone_loss"], test_case.to_numpy(loss), rtol=1e-5)
    # A random shared encoder attends to the other segment, own or not.
    for side in sides:
        losses = [scores[f"{side}_{c}_loss"] for c in contexts]
        assert len(set(np.round(losses, 6))) == 3, (side, losses)
    for mask_context in (False, True):
        reference = to_floats(pretrainer.cross_modal_scores(batch, draws, mask_context))
        padded = to_floats(
            pretrainer.cross_modal_scores(*pad_batch(batch, draws, 8, 3), mask_context)
        )
        for name, value in reference.items():
            np.testing.assert_allclose(padded[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_cross_modal_gains_are_zero_without_a_shared_encoder(seeded):
    """With no shared layers neither modality can read the other: alone, own
    and other give the same losses, so both gains are exactly 0."""
    backbone = SLAMBackbone(**dict(TINY, num_shared_layers=0))
    pretrainer = SLAMPretrainer(backbone, num_codes=16, seed=3)
    results = evaluate_cross_modal(
        pretrainer, dataset_of([paired_batch(seeded, 3), paired_batch(seeded, 3)]), seed=7
    )
    for side in ("text", "speech"):
        assert results[f"{side}_count"] > 0
        assert results[f"{side}_gain_own"] == 0.0
        assert results[f"{side}_gain_other"] == 0.0
        assert results[f"{side}_alone_accuracy"] == results[f"{side}_own_accuracy"]


def test_evaluate_cross_modal_weighs_batches_by_counted_positions(seeded):
    """The set's value is the count-weighted mean of the per-batch scores,
    with the masks each batch draws from SeedGenerator(seed), in order: the
    same on every call. A batch of one pair has no partner and counts for
    nothing. (Eager JAX compiles every op again for each new batch shape,
    ~13 CPU s: the full batches have the other tests' shape.)"""
    pretrainer = SLAMPretrainer(SLAMBackbone(**TINY), num_codes=16, seed=3)
    batches = [paired_batch(seeded, 3), paired_batch(seeded, 1), paired_batch(seeded, 3)]
    dataset = dataset_of(batches)
    results = evaluate_cross_modal(pretrainer, dataset, seed=7)
    assert results == evaluate_cross_modal(pretrainer, dataset, seed=7)
    seed = keras.random.SeedGenerator(7)
    per_batch = []
    for batch in batches:
        batch = {k: v for k, v in batch.items() if k != "language"}
        draws = pretrainer.draw_paired_masks(batch, seed=seed)
        per_batch.append(to_floats(pretrainer.cross_modal_scores(batch, draws)))
    assert per_batch[1]["text_count"] == per_batch[1]["speech_count"] == 0
    for name in ("text_own_loss", "speech_other_accuracy"):
        side = name.split("_")[0]
        counts = np.array([scores[f"{side}_count"] for scores in per_batch])
        values = np.array([scores[name] for scores in per_batch])
        assert results[f"{side}_count"] == counts.sum()
        np.testing.assert_allclose(results[name], (counts * values).sum() / counts.sum(), rtol=1e-5)
    for side in ("text", "speech"):
        np.testing.assert_allclose(
            results[f"{side}_gain_other"],
            results[f"{side}_other_loss"] - results[f"{side}_own_loss"],
            rtol=1e-6,
        )
