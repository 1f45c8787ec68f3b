"""w2v-BERT objectives: known answers, Hugging Face wav2vec 2.0, padding, parity, jit."""

import os

import keras
import numpy as np
import pytest

from keras_slam.callbacks import CodebookCollapseMonitor
from keras_slam.layers.masking import MaskEmbedding, SpanMasking
from keras_slam.layers.quantizers import GumbelVectorQuantizer
from keras_slam.metrics.codebook import CodebookUsage
from keras_slam.objectives import w2v_bert
from tests import test_case

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def numpy_contrastive(predictions, targets, counted, negatives, temperature=0.1):
    """Reference: explicit loops over frames, cosine similarity, masked CE."""
    losses, correct = [], []
    for b, t in zip(*np.nonzero(counted)):

        def cosine(u, v):
            return u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-8)

        logits = [cosine(predictions[b, t], targets[b, t]) / temperature]
        for n in negatives[b, t]:
            if n != t and counted[b, n] and not np.array_equal(targets[b, n], targets[b, t]):
                logits.append(cosine(predictions[b, t], targets[b, n]) / temperature)
        logits = np.array(logits, "float64")
        log_norm = np.log(np.sum(np.exp(logits - logits.max()))) + logits.max()
        losses.append(log_norm - logits[0])
        correct.append(float(np.argmax(logits) == 0))
    if not losses:
        return 0.0, 0.0
    return float(np.mean(losses)), float(np.mean(correct))


def make_case(rng, batch_size=3, length=12, dim=6, num_negatives=5):
    predictions = rng.normal(size=(batch_size, length, dim)).astype("float32")
    targets = rng.normal(size=(batch_size, length, dim)).astype("float32")
    targets[0, 3] = targets[0, 5]  # an identical pair: masked as a negative
    padding_mask = test_case.random_padding_mask(rng, batch_size, length, min_length=5)
    masked = (rng.random((batch_size, length)) < 0.6).astype("float32") * padding_mask
    masked[0, [3, 5]] = 1.0
    negatives = rng.integers(0, length, size=(batch_size, length, num_negatives)).astype("int32")
    return dict(
        predictions=predictions,
        targets=targets,
        masked_frames=masked,
        padding_mask=padding_mask,
        negative_indices=negatives,
    )


def test_contrastive_loss_known_answer(seeded):
    case = make_case(seeded)
    loss, accuracy, _ = w2v_bert.contrastive_loss(**case)
    counted = case["masked_frames"] * case["padding_mask"]
    expected_loss, expected_accuracy = numpy_contrastive(
        case["predictions"], case["targets"], counted, case["negative_indices"]
    )
    np.testing.assert_allclose(test_case.to_numpy(loss), expected_loss, rtol=1e-5)
    np.testing.assert_allclose(test_case.to_numpy(accuracy), expected_accuracy, rtol=1e-6)


def test_contrastive_loss_hand_computed():
    # One utterance, frames 0 and 1 masked, each the other's only negative.
    predictions = np.array([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]], "float32")
    targets = np.array([[[1.0, 1.0], [0.0, 1.0], [9.0, 9.0]]], "float32")
    masked = np.array([[1.0, 1.0, 0.0]], "float32")
    negatives = np.array([[[1], [0], [0]]], "int32")
    loss, accuracy, valid_negatives = w2v_bert.contrastive_loss(
        predictions, targets, masked, negatives
    )
    s = 1 / np.sqrt(2)
    # frame 0: target cos s, negative cos 0; frame 1: target cos 1, negative cos s.
    frame0 = -np.log(np.exp(s / 0.1) / (np.exp(s / 0.1) + np.exp(0.0)))
    frame1 = -np.log(np.exp(10.0) / (np.exp(10.0) + np.exp(s / 0.1)))
    np.testing.assert_allclose(test_case.to_numpy(loss), (frame0 + frame1) / 2, rtol=1e-5)
    assert float(test_case.to_numpy(accuracy)) == 1.0
    assert float(test_case.to_numpy(valid_negatives)) == 1.0


def test_valid_negatives_count_those_unlike_the_target():
    """Frames 0 and 1 share a code (a partly collapsed codebook): each is
    the other's only invalid negative; frame 2 is unlike both."""
    targets = np.array([[[1.0, 2.0], [1.0, 2.0], [3.0, -1.0], [0.0, 0.0]]], "float32")
    predictions = np.ones_like(targets)
    masked = np.array([[1.0, 1.0, 1.0, 0.0]], "float32")
    negatives = np.array([[[1, 2], [0, 2], [0, 1], [3, 3]]], "int32")
    valid_negatives = w2v_bert.contrastive_loss(predictions, targets, masked, negatives)[2]
    np.testing.assert_allclose(test_case.to_numpy(valid_negatives), (1 + 1 + 2) / 3, rtol=1e-6)


def test_gradient_at_zero_vectors_is_finite(seeded):
    """Zero vectors (padding, a zero bias) have cosine 0 and a finite slope:
    exactly zero gradient where frames do not count, finite where they do."""
    case = make_case(seeded)
    counted = (case["masked_frames"] * case["padding_mask"]).astype(bool)
    case["predictions"][~counted] = 0.0
    case["targets"][~counted] = 0.0
    first_counted = tuple(np.argwhere(counted)[0])
    case["predictions"][first_counted] = 0.0
    expected_loss, _ = numpy_contrastive(
        case["predictions"], case["targets"], counted, case["negative_indices"]
    )
    predictions = keras.Variable(case.pop("predictions"))
    targets = keras.Variable(case.pop("targets"))
    loss = w2v_bert.contrastive_loss(predictions, targets, **case)[0]
    np.testing.assert_allclose(test_case.to_numpy(loss), expected_loss, rtol=1e-5)
    grads = test_case.gradients(
        [predictions, targets], lambda: w2v_bert.contrastive_loss(predictions, targets, **case)[0]
    )
    for grad in grads:
        assert np.all(np.isfinite(grad))
        assert np.all(grad[~counted] == 0.0)
        assert np.any(grad[counted] != 0.0)


def test_no_masked_frame_gives_zero_loss():
    case = make_case(np.random.default_rng(0))
    case["masked_frames"] = np.zeros_like(case["masked_frames"])
    negatives = w2v_bert.sample_negative_indices(
        case["masked_frames"], 4, case["padding_mask"], seed=1
    )
    case["negative_indices"] = negatives
    for value in w2v_bert.contrastive_loss(**case):
        assert float(test_case.to_numpy(value)) == 0.0
    logits = np.zeros((3, 12, 7), "float32")
    ids = np.zeros((3, 12), "int32")
    for value in w2v_bert.masked_prediction_loss(
        logits, ids, case["masked_frames"], case["padding_mask"]
    ):
        assert float(test_case.to_numpy(value)) == 0.0


def test_single_masked_frame_has_no_negative_and_no_nan():
    masked = np.zeros((1, 8), "float32")
    masked[0, 2] = 1.0
    negatives = test_case.to_numpy(w2v_bert.sample_negative_indices(masked, 6, seed=3))
    np.testing.assert_array_equal(negatives[0], np.repeat(np.arange(8)[:, None], 6, axis=1))
    x = np.random.default_rng(1).normal(size=(1, 8, 4)).astype("float32")
    loss, accuracy, valid_negatives = w2v_bert.contrastive_loss(x, x[:, ::-1], masked, negatives)
    assert float(test_case.to_numpy(loss)) == 0.0
    assert float(test_case.to_numpy(accuracy)) == 1.0
    assert float(test_case.to_numpy(valid_negatives)) == 0.0


def test_negatives_only_other_masked_real_frames(seeded):
    batch_size, length, num_negatives = 4, 40, 100
    padding_mask = test_case.random_padding_mask(seeded, batch_size, length, min_length=10)
    masked = (seeded.random((batch_size, length)) < 0.3).astype("float32")
    masked[:, 0] = 1.0
    masked[:, -1] = 1.0  # on padding for the short items: must be ignored
    negatives = test_case.to_numpy(
        w2v_bert.sample_negative_indices(masked, num_negatives, padding_mask, seed=5)
    )
    assert negatives.shape == (batch_size, length, num_negatives)
    counted = (masked * padding_mask) > 0
    for b in range(batch_size):
        candidates = np.flatnonzero(counted[b])
        for t in range(length):
            drawn = negatives[b, t]
            if not counted[b, t]:
                assert np.all(drawn == t)
                continue
            assert np.all(drawn != t)
            assert np.all(np.isin(drawn, candidates)), (b, t, drawn, candidates)
        # With replacement and uniform: every other candidate shows up.
        pooled = negatives[b][counted[b]].ravel()
        assert set(pooled) == set(candidates)
        counts = np.bincount(pooled, minlength=length)[candidates]
        assert counts.min() > 0.5 * counts.mean() if len(candidates) > 2 else True


def hugging_face_pretraining_case(num_groups=2, num_codes=3):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining
    from transformers.models.wav2vec2 import modeling_wav2vec2

    torch.manual_seed(0)
    np.random.seed(0)
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16, 16),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        num_codevector_groups=num_groups,
        num_codevectors_per_group=num_codes,
        codevector_dim=8,
        proj_codevector_dim=8,
        num_negatives=7,
        diversity_loss_weight=0.1,
        contrastive_logits_temperature=0.1,
    )
    model = Wav2Vec2ForPreTraining(config).eval()
    batch_size = 2
    input_values = torch.randn(batch_size, 400)
    length = int(model._get_feat_extract_output_lengths(400))
    mask_time = modeling_wav2vec2._compute_mask_indices(
        (batch_size, length), mask_prob=0.4, mask_length=3
    )
    negatives = modeling_wav2vec2._sample_negative_indices((batch_size, length), 7, mask_time)
    with torch.no_grad():
        out = model(
            input_values,
            mask_time_indices=torch.tensor(mask_time, dtype=torch.long),
            sampled_negative_indices=torch.tensor(negatives, dtype=torch.long),
        )
    local_negatives = negatives - (np.arange(batch_size) * length)[:, None, None]
    return dict(
        predictions=out.projected_states.numpy(),
        targets=out.projected_quantized_states.numpy(),
        perplexity=float(out.codevector_perplexity),
        masked_frames=mask_time.astype("float32"),
        negative_indices=local_negatives.astype("int32"),
        contrastive_loss=float(out.contrastive_loss),
        diversity_loss=float(out.diversity_loss),
        loss=float(out.loss),
        num_codevectors=num_groups * num_codes,
    )


def test_matches_hugging_face_wav2vec2_pretraining():
    hf = hugging_face_pretraining_case()
    num_masked = hf["masked_frames"].sum()
    # The small codebook makes identical negatives happen (HF sets them to -inf).
    targets, negatives = hf["targets"], hf["negative_indices"]
    b, t = np.nonzero(hf["masked_frames"])
    identical = np.all(targets[b, t][:, None] == targets[b[:, None], negatives[b, t]], axis=-1)
    assert identical.any() and not identical.all()

    contrastive, _, _ = w2v_bert.contrastive_loss(
        hf["predictions"], hf["targets"], hf["masked_frames"], hf["negative_indices"]
    )
    diversity = w2v_bert.diversity_loss(hf["perplexity"], hf["num_codevectors"])
    contrastive = float(test_case.to_numpy(contrastive))
    diversity = float(test_case.to_numpy(diversity))
    np.testing.assert_allclose(contrastive, hf["contrastive_loss"] / num_masked, atol=1e-4)
    np.testing.assert_allclose(diversity, hf["diversity_loss"] / num_masked, atol=1e-6)
    np.testing.assert_allclose(contrastive + 0.1 * diversity, hf["loss"] / num_masked, atol=1e-4)


def test_losses_unchanged_by_extra_padding(seeded):
    case = make_case(seeded)
    extra = 5

    def pad(x, value):
        widths = [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2)
        return np.pad(x, widths, constant_values=value)

    padded = dict(
        predictions=pad(case["predictions"], 7.0),
        targets=pad(case["targets"], -3.0),
        masked_frames=pad(case["masked_frames"], 1.0),  # masked padding must not count
        padding_mask=pad(case["padding_mask"], 0.0),
        negative_indices=pad(case["negative_indices"], 0).copy(),
    )
    # Some negatives point into the extra padding: they must be ignored.
    padded["negative_indices"][:, :, 0] = case["predictions"].shape[1] + 2
    case["negative_indices"][:, :, 0] = np.arange(case["predictions"].shape[1])[None, :]
    for a, b in zip(w2v_bert.contrastive_loss(**case), w2v_bert.contrastive_loss(**padded)):
        np.testing.assert_allclose(test_case.to_numpy(a), test_case.to_numpy(b), atol=1e-6)
    logits = seeded.normal(size=(3, 12, 2, 5)).astype("float32")
    ids = seeded.integers(0, 5, size=(3, 12, 2))
    a = w2v_bert.masked_prediction_loss(logits, ids, case["masked_frames"], case["padding_mask"])
    b = w2v_bert.masked_prediction_loss(
        pad(logits, 50.0), pad(ids, 4), padded["masked_frames"], padded["padding_mask"]
    )
    np.testing.assert_allclose(test_case.to_numpy(a), test_case.to_numpy(b), atol=1e-6)


def test_masked_prediction_loss_known_answer(seeded):
    logits = seeded.normal(size=(2, 6, 2, 5)).astype("float32")
    ids = seeded.integers(0, 5, size=(2, 6, 2)).astype("int32")
    masked = np.array([[1, 0, 1, 1, 0, 0], [0, 1, 1, 0, 0, 1]], "float32")
    padding = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], "float32")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, ids[..., None], -1)[..., 0]
    counted = (masked * padding) > 0
    expected_loss = -picked[counted].mean()
    expected_accuracy = (logits.argmax(-1) == ids)[counted].mean()
    loss, accuracy = w2v_bert.masked_prediction_loss(logits, ids, masked, padding)
    np.testing.assert_allclose(test_case.to_numpy(loss), expected_loss, rtol=1e-5)
    np.testing.assert_allclose(test_case.to_numpy(accuracy), expected_accuracy, rtol=1e-6)
    # Single-codebook form (B, T, V) with (B, T) ids.
    loss, _ = w2v_bert.masked_prediction_loss(logits[:, :, 0], ids[:, :, 0], masked, padding)
    np.testing.assert_allclose(test_case.to_numpy(loss), -picked[..., 0][counted].mean(), rtol=1e-5)


def test_diversity_loss_known_answer():
    np.testing.assert_allclose(test_case.to_numpy(w2v_bert.diversity_loss(1.0, 640)), 639 / 640)
    np.testing.assert_allclose(test_case.to_numpy(w2v_bert.diversity_loss(640.0, 640)), 0.0)


def build_losses(inputs):
    holder = keras.layers.Layer()  # no weights; its dtype policy sets the input dtype

    def call_fn(batch):
        case = {key: batch[key] for key in ("masked_frames", "padding_mask", "negative_indices")}
        for key in ("predictions", "targets"):
            case[key] = keras.ops.cast(batch[key], holder.compute_dtype)
        contrastive, contrastive_accuracy, _ = w2v_bert.contrastive_loss(**case)
        prediction, prediction_accuracy = w2v_bert.masked_prediction_loss(
            keras.ops.cast(batch["logits"], holder.compute_dtype),
            batch["ids"],
            batch["masked_frames"],
            batch["padding_mask"],
        )
        return dict(
            contrastive=contrastive,
            contrastive_accuracy=contrastive_accuracy,
            prediction=prediction,
            prediction_accuracy=prediction_accuracy,
        )

    return holder, call_fn


def loss_inputs(rng):
    case = make_case(rng)
    case["logits"] = rng.normal(size=(3, 12, 9)).astype("float32")
    case["ids"] = rng.integers(0, 9, size=(3, 12)).astype("int32")
    return case


def test_backend_parity(seeded, parity_worker):
    test_case.assert_backend_parity(
        "tests.objectives.test_w2v_bert:build_losses",
        loss_inputs(seeded),
        parity_worker=parity_worker,
    )


def test_mixed_precision_finite(seeded):
    test_case.assert_mixed_precision_finite(
        "tests.objectives.test_w2v_bert:build_losses", loss_inputs(seeded)
    )
    keras.config.set_dtype_policy("mixed_bfloat16")
    _, call_fn = build_losses(None)
    for name, value in call_fn(loss_inputs(seeded)).items():
        assert keras.backend.standardize_dtype(value.dtype) == "float32", name


class ToyPretrainer(keras.Model):
    """A w2v-BERT step in miniature: every loss computed in `compute_loss`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.span_masking = SpanMasking(span_length=3, start_probability=0.15, min_spans=1, seed=1)
        self.mask_embedding = MaskEmbedding(dtype=self.dtype_policy)
        self.encoder = keras.layers.Dense(16, dtype=self.dtype_policy)
        self.quantizer = GumbelVectorQuantizer(
            1, 8, 16, temperature_decay=0.9, seed=2, dtype=self.dtype_policy
        )
        self.project_context = keras.layers.Dense(8, dtype=self.dtype_policy)
        self.project_targets = keras.layers.Dense(8, dtype=self.dtype_policy)
        self.prediction_head = keras.layers.Dense(8, dtype=self.dtype_policy)
        self.negatives_seed = keras.random.SeedGenerator(3)
        self.codebook_usage = CodebookUsage(8, window_steps=2)
        self.loss_trackers = {
            name: keras.metrics.Mean(name) for name in ("contrastive", "diversity", "prediction")
        }

    def call(self, inputs):
        return self.encoder(inputs["features"])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        features, padding_mask = x["features"], x["padding_mask"]
        masked = self.span_masking(padding_mask)
        context = self.encoder(self.mask_embedding(features, masked))
        quantized, code_ids, perplexity, _ = self.quantizer(
            features, padding_mask, training=training
        )
        negatives = w2v_bert.sample_negative_indices(
            masked, 4, padding_mask, seed=self.negatives_seed
        )
        contrastive, _, _ = w2v_bert.contrastive_loss(
            self.project_context(context),
            self.project_targets(quantized),
            masked,
            negatives,
            padding_mask,
        )
        diversity = w2v_bert.diversity_loss(perplexity, 8)
        prediction, _ = w2v_bert.masked_prediction_loss(
            self.prediction_head(context), code_ids, masked, padding_mask
        )
        self.codebook_usage.update_state(code_ids, padding_mask)
        for name, value in zip(self.loss_trackers, (contrastive, diversity, prediction)):
            self.loss_trackers[name].update_state(value)
        return contrastive + 0.1 * diversity + prediction


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_compute_loss_under_jit_fit(seeded, policy):
    keras.config.set_dtype_policy(policy)
    model = ToyPretrainer()
    data = {
        "features": seeded.normal(size=(8, 16, 6)).astype("float32"),
        "padding_mask": test_case.random_padding_mask(seeded, 8, 16, min_length=4),
    }
    model.compute_loss(x={k: v[:2] for k, v in data.items()}, training=False)  # builds every layer
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=test_case.backend() != "torch")
    monitor = CodebookCollapseMonitor(
        {"codebook_usage": 1.1}, check_every_n_batches=1, on_collapse="warn", min_frames=0
    )
    with pytest.warns(RuntimeWarning, match="collapse"):
        history = model.fit(data, batch_size=4, epochs=2, verbose=0, callbacks=[monitor])
    for name in ("loss", "contrastive", "diversity", "prediction", "codebook_usage"):
        values = np.asarray(history.history[name], "float64")
        assert np.all(np.isfinite(values)), (name, values)
    assert 0.0 < history.history["codebook_usage"][-1] <= 1.0
    # Four training steps advanced the temperature step inside the compiled step.
    assert int(test_case.to_numpy(model.quantizer.step)) == 4
    np.testing.assert_allclose(
        test_case.to_numpy(model.quantizer.temperature()), max(2.0 * 0.9**4, 0.1), rtol=1e-5
    )
    assert len(monitor.history) == 4


def test_negatives_and_contrastive_loss_with_lengths_known_only_at_run_time(seeded):
    """A step traced without the time length (TensorFlow, several buckets)
    draws negatives among the other counted frames of the utterance and
    gives the eager losses for them. (XLA draws other random numbers than
    eager TensorFlow, so the negatives themselves differ.)"""
    case = make_case(seeded)
    arrays = [case[name] for name in ("predictions", "targets", "masked_frames", "padding_mask")]

    def negatives_and_losses(predictions, targets, masked_frames, padding_mask):
        negatives = w2v_bert.sample_negative_indices(masked_frames, 5, padding_mask, seed=3)
        return negatives, w2v_bert.contrastive_loss(
            predictions, targets, masked_frames, negatives, padding_mask
        )

    negatives, losses = test_case.call_with_unknown_lengths(negatives_and_losses, *arrays)
    counted = (case["masked_frames"] * case["padding_mask"]) > 0
    for b, t in np.ndindex(counted.shape):
        drawn = negatives[b, t]
        if counted[b, t]:
            assert np.all(counted[b, drawn] & (drawn != t)), (b, t, drawn)
        else:
            assert np.all(drawn == t), (b, t, drawn)
    expected = w2v_bert.contrastive_loss(*arrays[:3], negatives, arrays[3])
    np.testing.assert_allclose(losses, [test_case.to_numpy(x) for x in expected], atol=1e-6)


def test_masked_prediction_loss_when_only_the_ids_length_is_static(seeded):
    # TLM's text logits come out of the shared encoder with an unknown length
    # while a fixed-length token field keeps its static one (TensorFlow fit).
    logits = seeded.normal(size=(3, 7, 11)).astype("float32")
    ids = seeded.integers(0, 11, size=(3, 7)).astype("int32")
    masked = (seeded.random((3, 7)) < 0.5).astype("float32")
    masked[:, 0] = 1
    expected = test_case.to_numpy(w2v_bert.masked_prediction_loss(logits, ids, masked))
    actual = test_case.call_with_unknown_lengths(
        w2v_bert.masked_prediction_loss, logits, ids, masked, known_lengths=(1, 2)
    )
    np.testing.assert_allclose(actual, expected, rtol=1e-5)
