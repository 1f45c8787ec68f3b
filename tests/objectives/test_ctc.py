import itertools

import keras
import numpy as np
import pytest
import torch

from keras_slam.objectives.ctc import ctc_loss, minimum_frames
from tests import test_case


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def collapse(path, blank):
    merged = [k for i, k in enumerate(path) if i == 0 or k != path[i - 1]]
    return [k for k in merged if k != blank]


def enumerated_nll(logits, labels, blank=0):
    """-log p(labels) by summing over every path (tiny T and C only)."""
    log_probs = log_softmax(logits.astype("float64"))
    total = 0.0
    for path in itertools.product(range(logits.shape[1]), repeat=logits.shape[0]):
        if collapse(list(path), blank) == list(labels):
            total += np.exp(sum(log_probs[t, k] for t, k in enumerate(path)))
    return -np.log(total) if total > 0 else None


def pad_batch(sequences, width, fill=0):
    array = np.full((len(sequences), width), fill, "int32")
    mask = np.zeros((len(sequences), width), "float32")
    for i, sequence in enumerate(sequences):
        array[i, : len(sequence)] = sequence
        mask[i, : len(sequence)] = 1
    return array, mask


def torch_reference(labels, label_mask, logits, logit_mask, reduction="none"):
    log_probs = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), -1)
    return torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1),
        torch.tensor(labels, dtype=torch.long),
        torch.tensor(logit_mask.sum(1), dtype=torch.long),
        torch.tensor(label_mask.sum(1), dtype=torch.long),
        blank=0,
        reduction=reduction,
        zero_infinity=True,
    ).numpy()


def random_case(rng, batch_size=5, frames=12, classes=7, max_labels=5):
    logits = rng.normal(size=(batch_size, frames, classes)).astype("float32") * 2
    logit_mask = test_case.random_padding_mask(rng, batch_size, frames, min_length=6)
    label_lengths = rng.integers(0, max_labels + 1, size=batch_size)
    labels = [rng.integers(1, classes, size=n) for n in label_lengths]
    labels, label_mask = pad_batch(labels, max_labels)
    return labels, label_mask, logits, logit_mask


def per_item(batch):
    return ctc_loss(
        batch["labels"],
        batch["label_padding_mask"],
        batch["logits"],
        batch["logit_padding_mask"],
        reduction="none",
    )


def build_ctc(inputs):
    holder = keras.layers.Layer()  # no weights: the loss is a plain function
    return holder, per_item


def test_known_answers_by_enumeration(seeded):
    cases = [  # (frames, labels); T=1/2/3 over the alphabet {blank, 1, 2}
        (1, []),
        (1, [1]),
        (2, [1]),
        (2, [1, 2]),
        (2, [1, 1]),  # infeasible: a repeat needs a blank between
        (3, [1, 1]),
        (3, [2, 1]),
        (3, []),
        (1, [1, 2]),  # infeasible: more labels than frames
    ]
    frames = max(t for t, _ in cases)
    logits = seeded.normal(size=(len(cases), frames, 3)).astype("float32")
    logit_mask = np.arange(frames)[None] < np.array([t for t, _ in cases])[:, None]
    labels, label_mask = pad_batch([lab for _, lab in cases], 2, fill=1)
    losses = test_case.to_numpy(
        ctc_loss(labels, label_mask, logits, logit_mask.astype("float32"), reduction="none")
    )
    for i, (t, lab) in enumerate(cases):
        expected = enumerated_nll(logits[i, :t], lab)
        # Infeasible alignments contribute 0 (zero_infinity convention).
        np.testing.assert_allclose(
            losses[i],
            0.0 if expected is None else expected,
            atol=1e-5,
            err_msg=str((t, lab)),
        )


def test_matches_torch_on_padded_batches(seeded):
    for _ in range(3):
        labels, label_mask, logits, logit_mask = random_case(seeded)
        losses = test_case.to_numpy(
            ctc_loss(labels, label_mask, logits, logit_mask, reduction="none")
        )
        expected = torch_reference(labels, label_mask, logits, logit_mask)
        np.testing.assert_allclose(losses, expected, atol=1e-4, rtol=1e-5)
        # torch's "mean" divides by target length, then averages the batch.
        mean = ctc_loss(labels, label_mask, logits, logit_mask, divide_by_target_length=True)
        np.testing.assert_allclose(
            test_case.to_numpy(mean),
            torch_reference(labels, label_mask, logits, logit_mask, "mean"),
            atol=1e-4,
        )
        total = ctc_loss(labels, label_mask, logits, logit_mask, reduction="sum")
        np.testing.assert_allclose(test_case.to_numpy(total), expected.sum(), rtol=1e-5)


def test_padding_invariance(seeded):
    labels, label_mask, logits, logit_mask = random_case(seeded)
    # Garbage in padded slots must not matter.
    logits = np.where(logit_mask[..., None] > 0, logits, 50.0).astype("float32")
    labels = np.where(label_mask > 0, labels, 3).astype("int32")
    inputs = {
        "labels": labels,
        "label_padding_mask": label_mask,
        "logits": logits,
        "logit_padding_mask": logit_mask,
    }
    test_case.assert_padding_invariant(
        per_item,
        inputs,
        {"labels": "label_padding_mask", "logits": "logit_padding_mask"},
    )


def test_backend_parity(seeded, parity_worker):
    labels, label_mask, logits, logit_mask = random_case(seeded)
    inputs = {
        "labels": labels,
        "label_padding_mask": label_mask,
        "logits": logits,
        "logit_padding_mask": logit_mask,
    }
    test_case.assert_backend_parity(
        "tests.objectives.test_ctc:build_ctc", inputs, parity_worker=parity_worker
    )


def gradient(loss_fn, x):
    """d loss_fn(x) / dx as numpy, on the active backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: loss_fn(v))(x))
    if backend == "tensorflow":
        import tensorflow as tf

        variable = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = loss_fn(variable)
        return tape.gradient(value, variable).numpy()
    variable = torch.tensor(x, requires_grad=True)
    loss_fn(variable).backward()
    return variable.grad.numpy()


def test_absent_rows_empty_labels_and_infeasible_items(seeded):
    logits = seeded.normal(size=(4, 5, 4)).astype("float32")
    logit_mask = np.array(
        [[1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], "float32"
    )
    # Item 1 is absent (no frames), item 2 has no labels, item 3 cannot align.
    labels, label_mask = pad_batch([[1, 2], [3, 1], [], [1, 2, 3]], 3)
    losses = test_case.to_numpy(ctc_loss(labels, label_mask, logits, logit_mask, reduction="none"))
    assert np.all(np.isfinite(losses))
    assert losses[1] == 0.0 and losses[3] == 0.0
    blank_only = -log_softmax(logits[2, :3])[:, 0].sum()
    np.testing.assert_allclose(losses[2], blank_only, rtol=1e-5)
    # The absent row is left out of the mean; the infeasible one counts.
    mean = test_case.to_numpy(ctc_loss(labels, label_mask, logits, logit_mask))
    np.testing.assert_allclose(mean, losses.sum() / 3, rtol=1e-6)

    def loss_fn(x):
        return ctc_loss(labels, label_mask, x, logit_mask)

    grads = gradient(loss_fn, logits)
    assert np.all(np.isfinite(grads))
    assert np.all(grads[1] == 0) and np.all(grads[3] == 0)
    assert np.abs(grads[0]).sum() > 0 and np.abs(grads[2]).sum() > 0
    # Padded frames get no gradient either.
    assert np.all(grads[2, 3:] == 0)


def test_all_absent_batch_is_zero(seeded):
    logits = seeded.normal(size=(2, 3, 4)).astype("float32")
    labels, label_mask = pad_batch([[1], [2, 3]], 2)
    loss = ctc_loss(labels, label_mask, logits, np.zeros((2, 3), "float32"))
    assert float(test_case.to_numpy(loss)) == 0.0


def test_minimum_frames_counts_repeats():
    labels, mask = pad_batch([[1, 1, 2, 2, 2], [3], [], [1, 2, 1]], 5, fill=1)
    frames = test_case.to_numpy(
        minimum_frames(keras.ops.convert_to_tensor(labels), keras.ops.convert_to_tensor(mask > 0))
    )
    np.testing.assert_array_equal(frames, [8, 1, 0, 3])


def test_bfloat16_logits_compute_in_float32(seeded):
    labels, label_mask, logits, logit_mask = random_case(seeded)
    low = keras.ops.cast(logits, "bfloat16")
    loss = ctc_loss(labels, label_mask, low, logit_mask, reduction="none")
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    rounded = test_case.to_numpy(keras.ops.cast(low, "float32"))
    expected = torch_reference(labels, label_mask, rounded, logit_mask)
    np.testing.assert_allclose(test_case.to_numpy(loss), expected, atol=1e-4, rtol=1e-5)


def test_rejects_unknown_reduction(seeded):
    labels, label_mask, logits, logit_mask = random_case(seeded)
    with pytest.raises(ValueError, match="reduction"):
        ctc_loss(labels, label_mask, logits, logit_mask, reduction="avg")
