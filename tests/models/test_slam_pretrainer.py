import keras
import numpy as np
import pytest

from keras_slam.callbacks import (
    SLAM_STAGES,
    CodebookCollapseError,
    CodebookCollapseMonitor,
    ObjectiveSchedule,
    stage_weights,
)
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.slam_pretrainer import OBJECTIVES, SLAMPretrainer
from tests import test_case
from tests.models.test_slam_backbone import TINY

TASK = {
    "num_codes": 16,
    "code_dim": 8,
    "num_negatives": 6,
    "text_span_length": 2,
    "speech_span_length": 3,
    "seed": 3,
}
# Deterministic corruption so that fixed draws fix every random choice.
FIXED = dict(TASK, mask_fraction=1.0, random_fraction=0.0)
LOSSES = [f"{name}_loss" for name in OBJECTIVES]


def sub_batch(rng, batch_size, frames=0, tokens=0):
    batch = {}
    if frames:
        batch["speech_features"] = rng.normal(size=(batch_size, frames, 12)).astype("float32")
        batch["speech_padding_mask"] = test_case.random_padding_mask(
            rng, batch_size, frames, min_length=frames // 2
        )
    if tokens:
        mask = test_case.random_padding_mask(rng, batch_size, tokens, min_length=3)
        batch["token_ids"] = (rng.integers(3, 40, size=(batch_size, tokens)) * mask).astype("int32")
        batch["token_padding_mask"] = mask
    return batch


def make_batch(rng):
    return {
        "speech": sub_batch(rng, 2, frames=48),
        "text": sub_batch(rng, 3, tokens=10),
        "paired": sub_batch(rng, 3, frames=48, tokens=8),
    }


def numpy_tree(tree):
    return keras.tree.map_structure(test_case.to_numpy, tree)


def flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[prefix + key] = value
    return flat


def unflatten(flat):
    tree = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def build_pretrainer(inputs=None, **overrides):
    return SLAMPretrainer(SLAMBackbone(**TINY), **dict(FIXED, **overrides))


# The options that decide where the speech targets come from.
TARGET_OPTIONS = [
    {"quantizer_input": "frontend"},
    {"quantizer_input": "detached_frontend"},
    {"target_projection_dim": 6},
]


def build_for_parity(flat_inputs, **options):
    pretrainer = build_pretrainer(**options)

    def call_fn(flat):
        tree = unflatten(flat)
        draws = tree.pop("draws")
        outputs = pretrainer.compute_objectives(tree, draws=draws)
        outputs["total"] = pretrainer.total_loss(outputs)
        return outputs

    return pretrainer, call_fn


def build_for_parity_with_target_options(flat_inputs):
    """Targets from the front end, projected before the cosine (the default
    builder covers targets from the stacked input features); two
    length-matched STM negatives per pair, STM's head on the speech and
    text halves' means, CTC through the token embedding."""
    return build_for_parity(
        flat_inputs,
        quantizer_input="frontend",
        target_projection_dim=6,
        stm_negatives=2,
        stm_negative_choice="length_matched",
        stm_pooling="modality_means",
        tie_ctc_head=True,
    )


def test_every_objective_is_finite_and_reported(seeded):
    pretrainer = build_pretrainer()
    outputs = numpy_tree(pretrainer(make_batch(seeded), training=True))
    for name in LOSSES + ["codebook_perplexity", "stm_accuracy", "tlm_text_accuracy"]:
        assert name in outputs and np.isfinite(outputs[name]), name
    assert outputs["ctc_loss"] > 0 and outputs["contrastive_loss"] > 0
    # Every scalar the call reports has its metric, and nothing else has one.
    flags_and_codes = ("_present", "speech_code_ids", "speech_code_mask")
    scalars = {name for name in outputs if not name.endswith(flags_and_codes)}
    assert set(pretrainer.objective_metrics) == scalars


def test_missing_or_fully_masked_sub_batches_contribute_zero(seeded):
    batch = make_batch(seeded)
    pretrainer = build_pretrainer()
    draws = pretrainer.draw_masks(batch)
    text_only = {"text": batch["text"]}
    expected = test_case.to_numpy(
        pretrainer.total_loss(
            pretrainer.compute_objectives(text_only, draws={"text": draws["text"]})
        )
    )
    masked = {key: dict(value) for key, value in batch.items()}
    for key in ("speech", "paired"):
        masked[key]["speech_padding_mask"] = np.zeros_like(masked[key]["speech_padding_mask"])
    masked["paired"]["token_padding_mask"] = np.zeros_like(masked["paired"]["token_padding_mask"])
    masked_draws = dict(pretrainer.draw_masks(masked), text=draws["text"])
    outputs = numpy_tree(pretrainer.compute_objectives(masked, draws=masked_draws))
    for name in LOSSES:
        if name != "text_mlm_loss":
            assert outputs[name] == 0.0, (name, outputs[name])
    np.testing.assert_allclose(
        test_case.to_numpy(pretrainer.total_loss(outputs)), expected, rtol=1e-6
    )


def pad_time(array, extra, value=0):
    widths = [(0, 0)] * array.ndim
    widths[1] = (0, extra)
    return np.pad(array, widths, constant_values=value)


STM_OPTIONS = [
    {"stm_negatives": 2},
    {"stm_negatives": 2, "stm_negative_choice": "length_matched"},
    {"stm_negatives": 2, "stm_pooling": "modality_means", "tie_ctc_head": True},
]


@pytest.mark.parametrize("options", [{}] + TARGET_OPTIONS + STM_OPTIONS, ids=str)
def test_total_loss_is_padding_invariant_with_fixed_draws(seeded, options):
    batch = make_batch(seeded)
    pretrainer = build_pretrainer(**options)
    draws = numpy_tree(pretrainer.draw_masks(batch))
    reference = numpy_tree(pretrainer.compute_objectives(batch, draws=draws))
    # 8 more input frames = 2 more subsampled frames; 5 more tokens.
    padded = {
        key: {name: pad_time(value, 8 if "speech" in name else 5) for name, value in sub.items()}
        for key, sub in batch.items()
    }
    negatives = draws["speech"]["negatives"]
    padded_draws = {
        "speech": {
            "span_mask": pad_time(draws["speech"]["span_mask"], 2),
            "negatives": pad_time(negatives, 2),
        },
        "text": {"span_mask": pad_time(draws["text"]["span_mask"], 5)},
        "paired": {
            "speech_span_mask": pad_time(draws["paired"]["speech_span_mask"], 2),
            "text_span_mask": pad_time(draws["paired"]["text_span_mask"], 5),
        },
    }
    outputs = numpy_tree(pretrainer.compute_objectives(padded, draws=padded_draws))
    for name in LOSSES + ["codebook_perplexity", "w2v_mlm_gain", "valid_negatives"]:
        np.testing.assert_allclose(
            outputs[name], reference[name], atol=1e-5, rtol=1e-5, err_msg=name
        )


@pytest.mark.parametrize("builder", ["build_for_parity", "build_for_parity_with_target_options"])
def test_backend_parity_of_the_losses(seeded, parity_worker, builder):
    batch = make_batch(seeded)
    pretrainer = build_pretrainer()
    flat = flatten(dict(batch, draws=numpy_tree(pretrainer.draw_masks(batch))))
    test_case.assert_backend_parity(
        f"tests.models.test_slam_pretrainer:{builder}", flat, parity_worker=parity_worker
    )


def test_zero_weight_gives_zero_gradient(seeded):
    batch = make_batch(seeded)
    pretrainer = build_pretrainer()
    draws = pretrainer.draw_masks(batch)
    only_text = {"text": batch["text"]}

    def loss_fn():
        return pretrainer.total_loss(pretrainer.compute_objectives(only_text, draws=draws))

    pretrainer.set_objective_weights({"text_mlm": 0.0})
    grads = test_case.gradients(pretrainer.trainable_variables, loss_fn)
    assert all(np.all(g == 0) for g in grads)
    pretrainer.set_objective_weights({"text_mlm": 1.0})
    grads = test_case.gradients(pretrainer.trainable_variables, loss_fn)
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert any(np.any(g != 0) for g in grads)
    # The full batch with every objective: finite gradients everywhere.
    grads = test_case.gradients(
        pretrainer.trainable_variables,
        lambda: pretrainer.total_loss(pretrainer.compute_objectives(batch, draws=draws)),
    )
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_masking_statistics_match_configured_rates(seeded):
    long_text = sub_batch(seeded, 32, tokens=1000)
    long_text["token_padding_mask"][:] = 1
    long_speech = sub_batch(seeded, 32, frames=4000)
    long_speech["speech_padding_mask"][:] = 1
    pretrainer = build_pretrainer(text_span_length=5, speech_span_length=10)
    draws = numpy_tree(
        pretrainer.draw_masks(
            {"text": long_text, "speech": long_speech, "paired": dict(long_speech, **long_text)}
        )
    )
    # w2v-BERT: p = 0.065, span 10 -> 1 - (1 - 0.065)**10 = 0.49.
    # About 3,000 spans per mask: a standard error near 0.01.
    assert abs(draws["speech"]["span_mask"].mean() - 0.49) < 0.03
    assert abs(draws["text"]["span_mask"].mean() - 0.15) < 0.03
    assert abs(draws["paired"]["speech_span_mask"].mean() - 0.75) < 0.03
    assert abs(draws["paired"]["text_span_mask"].mean() - 0.50) < 0.03


def test_best_rq_target_option(seeded):
    pretrainer = build_pretrainer(speech_target="random_projection")
    outputs = numpy_tree(pretrainer(make_batch(seeded)))
    assert "contrastive_loss" not in outputs and "diversity_loss" not in outputs
    assert np.isfinite(outputs["w2v_mlm_loss"]) and outputs["w2v_mlm_loss"] > 0


@pytest.mark.parametrize(
    "options",
    [
        {"tie_lm_head": False, "ctc_input": "shared"},
        {"stm_pooling": "modality_means", "tie_ctc_head": True},
    ],
    ids=str,
)
def test_serialization_roundtrip(seeded, options):
    batch = make_batch(seeded)
    pretrainer = build_pretrainer(objective_weights={"stm": 0.5}, stm_negatives=2, **options)
    assert "preprocessor" not in pretrainer.get_config()  # it takes pipeline batches
    draws = pretrainer.draw_masks(batch)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pretrainer))
    clone.set_weights(pretrainer.get_weights())
    assert clone.get_objective_weights() == pretrainer.get_objective_weights()
    expected = numpy_tree(pretrainer.compute_objectives(batch, draws=draws))
    actual = numpy_tree(clone.compute_objectives(batch, draws=draws))
    for name in LOSSES:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-6, err_msg=name)


def test_mixed_bfloat16_losses_finite(seeded):
    batch = make_batch(seeded)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        pretrainer = build_pretrainer()
        outputs = pretrainer(batch, training=True)
    finally:
        keras.config.set_dtype_policy("float32")
    for name in LOSSES:
        assert keras.backend.standardize_dtype(outputs[name].dtype) == "float32"
        assert np.isfinite(test_case.to_numpy(outputs[name])), name


def test_stage_weights():
    assert stage_weights(SLAM_STAGES, 0)["tlm"] == 0.0
    assert stage_weights(SLAM_STAGES, 499_999)["stm"] == 0.0
    assert stage_weights(SLAM_STAGES, 500_000)["tlm"] == 1.0


def test_fit_with_stage_schedule_and_missing_modalities(seeded, tmp_path):
    """model.fit on this backend: every loss finite and in `history`; the
    stage schedule switches TLM/STM on at step 2 without recompiling; a NaN
    in a real speech frame is a skipped, counted step that changes no
    trainable weight and no optimizer state (the same compiled step);
    batches without a paired (or any speech) sub-batch train too."""
    import tensorflow as tf

    batch = make_batch(seeded)
    pretrainer = build_pretrainer(mask_fraction=0.8, random_fraction=0.1)
    pretrainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    stages = (
        (
            0,
            {
                "contrastive": 1.0,
                "diversity": 0.1,
                "w2v_mlm": 1.0,
                "text_mlm": 1.0,
                "tlm": 0.0,
                "stm": 0.0,
                "ctc": 1.0,
            },
        ),
        (
            2,
            {
                "contrastive": 1.0,
                "diversity": 0.1,
                "w2v_mlm": 1.0,
                "text_mlm": 1.0,
                "tlm": 1.0,
                "stm": 1.0,
                "ctc": 1.0,
            },
        ),
    )
    history = pretrainer.fit(
        tf.data.Dataset.from_tensors(batch).repeat(3),
        epochs=1,
        verbose=0,
        callbacks=[ObjectiveSchedule(stages), keras.callbacks.TensorBoard(str(tmp_path))],
    )
    for name in LOSSES + ["loss", "codebook_perplexity", "stm_accuracy"]:
        assert np.isfinite(history.history[name][-1]), name
    assert pretrainer.get_objective_weights()["tlm"] == 1.0
    assert int(test_case.to_numpy(pretrainer.quantizer.step)) == 3  # Gumbel anneal advanced
    assert pretrainer.quantizer.temperature() < 2.0
    assert any(tmp_path.rglob("*tfevents*"))

    poisoned = {key: dict(sub) for key, sub in batch.items()}
    poisoned["speech"]["speech_features"] = batch["speech"]["speech_features"].copy()
    poisoned["speech"]["speech_features"][0, 0, 0] = np.nan
    counters = ("skipped_steps", "consecutive_skips")
    state = [w for w in pretrainer.optimizer.variables if w.name not in counters]
    before = [test_case.to_numpy(w) for w in pretrainer.trainable_weights + state]
    pretrainer.fit(tf.data.Dataset.from_tensors(poisoned), verbose=0)
    for a, b in zip(before, pretrainer.trainable_weights + state):
        np.testing.assert_array_equal(a, test_case.to_numpy(b), err_msg=b.path)
    assert int(test_case.to_numpy(pretrainer.optimizer.skipped_steps)) == 1
    assert int(test_case.to_numpy(pretrainer.optimizer.iterations)) == 3

    text_only = pretrainer.fit(
        tf.data.Dataset.from_tensors({"text": batch["text"]}).repeat(2), verbose=0
    )
    assert np.isfinite(text_only.history["text_mlm_loss"][-1])


def test_codebook_usage_counts_the_targets_at_masked_real_frames(seeded):
    """One `compute_loss`: usage = distinct code ids at masked real frames / V,
    counted here with numpy from the ids the step produced."""
    batch = {"speech": sub_batch(seeded, 4, frames=48)}
    pretrainer = build_pretrainer(num_codes=64)
    outputs = pretrainer(batch, training=True)
    pretrainer.compute_loss(batch, y_pred=outputs)
    code_ids = test_case.to_numpy(outputs["speech_code_ids"]).astype("int64")
    mask = test_case.to_numpy(outputs["speech_code_mask"])
    expected = len(np.unique(code_ids[mask > 0])) / 64
    assert 0 < expected < 1
    np.testing.assert_allclose(test_case.to_numpy(pretrainer.codebook_usage.result()), expected)
    assert build_pretrainer(objectives=("text_mlm",)).codebook_usage is None


@pytest.mark.parametrize("tie_ctc_head", [False, True])
def test_ctc_is_per_target_token_as_torch_mean(seeded, tie_ctc_head):
    """The pre-trainer's CTC equals torch's `ctc_loss(reduction="mean")` on
    the CTC head's logits (per utterance / transcript length, batch mean);
    a row with speech but no text is left out, not divided by zero. Tied,
    the logits are the speech tower's frames times the token embedding
    matrix transposed (no head of its own)."""
    import torch

    batch = {"paired": sub_batch(seeded, 3, frames=48, tokens=8)}
    batch["paired"]["token_padding_mask"][2] = 0.0
    batch["paired"]["token_ids"][2] = 0
    pretrainer = build_pretrainer(objectives=("ctc",), tie_ctc_head=tie_ctc_head)
    loss = test_case.to_numpy(pretrainer.compute_objectives(batch)["ctc_loss"])
    paired = batch["paired"]
    frames, frame_mask = pretrainer.backbone.subsample_speech(
        paired["speech_features"], paired["speech_padding_mask"]
    )
    speech = pretrainer.backbone.encode_speech_tower(frames, frame_mask)
    if tie_ctc_head:
        assert pretrainer.ctc_head is None
        embeddings = test_case.to_numpy(pretrainer.backbone.token_embedding.embeddings)
        logits = test_case.to_numpy(speech) @ embeddings.T
    else:
        logits = test_case.to_numpy(pretrainer.ctc_head(speech))
    frame_lengths = test_case.to_numpy(frame_mask).sum(1).astype("int64")[:2]
    label_lengths = paired["token_padding_mask"].sum(1).astype("int64")[:2]
    log_probs = torch.log_softmax(torch.tensor(logits[:2], dtype=torch.float64), -1).transpose(0, 1)
    expected = torch.nn.functional.ctc_loss(
        log_probs,
        torch.tensor(paired["token_ids"][:2], dtype=torch.long),
        torch.tensor(frame_lengths),
        torch.tensor(label_lengths),
        blank=0,
        reduction="mean",
    ).item()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize(
    "quantizer_input, moves_the_front_end",
    [("frontend", True), ("detached_frontend", False), ("features", False)],
)
def test_quantizer_input_decides_whether_targets_train_the_front_end(
    seeded, quantizer_input, moves_the_front_end
):
    batch = {"speech": sub_batch(seeded, 2, frames=48)}
    pretrainer = build_pretrainer(objectives=("diversity",), quantizer_input=quantizer_input)
    draws = pretrainer.draw_masks(batch)

    def loss_fn():
        return pretrainer.total_loss(
            pretrainer.compute_objectives(batch, training=True, draws=draws)
        )

    grads = test_case.gradients(
        pretrainer.backbone.speech_tower.subsampling.trainable_variables, loss_fn
    )
    assert any(np.any(g != 0) for g in grads) == moves_the_front_end
    quantizer_grads = test_case.gradients(pretrainer.quantizer.trainable_variables, loss_fn)
    assert any(np.any(g != 0) for g in quantizer_grads)


@pytest.mark.parametrize("quantizer_input", ["frontend", "features"])
def test_quantizer_gets_no_gradient_from_text_and_paired_objectives(seeded, quantizer_input):
    batch = make_batch(seeded)
    del batch["speech"]
    pretrainer = build_pretrainer(quantizer_input=quantizer_input)
    draws = pretrainer.draw_masks(batch)

    def loss_fn():
        return pretrainer.total_loss(
            pretrainer.compute_objectives(batch, training=True, draws=draws)
        )

    for grad in test_case.gradients(pretrainer.quantizer.trainable_variables, loss_fn):
        assert np.all(grad == 0)


def test_rejects_an_unknown_quantizer_input():
    with pytest.raises(ValueError, match="quantizer_input"):
        build_pretrainer(quantizer_input="waveform")


def bucketed_dataset(rng, steps):
    """tf.data steps {"speech", "text", "paired"} of the given sizes: each
    step (speech (batch, frames), text (batch, tokens), paired (batch,
    frames, tokens)). Batch and time sizes vary, so the element_spec leaves
    them unknown (None), as `mix_streams` of multi-bucket streams does."""
    import tensorflow as tf

    batches = [
        {
            "speech": sub_batch(rng, *speech),
            "text": sub_batch(rng, text[0], tokens=text[1]),
            "paired": sub_batch(rng, *paired),
        }
        for speech, text, paired in steps
    ]
    dataset = tf.data.Dataset.from_tensors(batches[0])
    for batch in batches[1:]:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(batch))
    return dataset


def test_fit_on_several_buckets_compiles_once_per_bucket_combination(seeded):
    """Batches whose lengths the dataset leaves unknown (None) train on every
    backend; a 2-epoch fit over K = 2 bucket combinations traces (compiles)
    the train step at most K times in all, none again in the second epoch.
    The history reports codebook usage, and a collapse monitor stops a
    further fit (the same compiled steps: one fit's compiles serve both)."""
    combination_a = ((2, 48), (3, 10), (3, 48, 8))
    combination_b = ((3, 32), (2, 14), (2, 40, 6))
    # 64 codes, more than a batch's 60 speech frames: usage is below 1.
    pretrainer = build_pretrainer(
        objectives=("contrastive", "diversity", "w2v_mlm", "text_mlm", "ctc"),
        mask_fraction=0.8,
        random_fraction=0.1,
        num_codes=64,
    )
    dataset = bucketed_dataset(seeded, [combination_a, combination_b, combination_a, combination_b])
    assert dataset.element_spec["speech"]["speech_features"].shape.as_list() == [None, None, 12]
    history = {}

    def fit():
        history.update(pretrainer.fit(dataset, epochs=2, verbose=0).history)

    traces = test_case.train_step_traces(
        pretrainer, fit, lambda batch: tuple(batch["speech"]["speech_features"].shape)
    )
    for name in ("loss", "contrastive_loss", "w2v_mlm_loss", "text_mlm_loss", "ctc_loss"):
        assert len(history[name]) == 2 and np.all(np.isfinite(history[name])), name
    assert int(test_case.to_numpy(pretrainer.optimizer.iterations)) == 8
    test_case.assert_one_compile_per_bucket(traces, [(2, 48, 12), (3, 32, 12)], num_batches=8)

    assert 0 < history["codebook_usage"][-1] <= 1
    for name in ("w2v_mlm_gain", "valid_negatives"):
        assert np.isfinite(history[name][-1]), name
    # No codebook can be more than fully used: a 1.01 threshold always fires.
    monitor = CodebookCollapseMonitor(
        {"codebook_usage": 1.01, "valid_negatives": 0.0}, check_every_n_batches=1, min_frames=0
    )
    with pytest.raises(
        CodebookCollapseError, match=r"codebook_usage = 0\.\d+ < threshold 1\.01 at step 1 "
    ):
        pretrainer.fit(dataset, verbose=0, callbacks=[monitor])
    assert len(monitor.history) == 1 and 0 < monitor.history[0][1]["codebook_usage"] <= 1
