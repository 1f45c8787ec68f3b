import numpy as np
import pytest

from keras_slam.layers.pooling import ClassificationHead, SequencePooling
from tests import test_case


def inputs(rng, batch_size=3, length=6, dim=4):
    return {
        "sequence": rng.normal(size=(batch_size, length, dim)).astype("float32"),
        "padding_mask": test_case.random_padding_mask(rng, batch_size, length),
    }


def pooling_layer(pooling, rng, dim=4):
    layer = SequencePooling(pooling)
    layer.build((None, None, dim))
    if pooling == "attention":
        layer.query.assign(rng.normal(size=(dim,)).astype("float32"))
    return layer


def test_attention_pooling_known_answer(seeded):
    layer = pooling_layer("attention", seeded)
    batch = inputs(seeded)
    pooled = test_case.to_numpy(layer(**batch))
    query = test_case.to_numpy(layer.query)
    for row, (sequence, mask) in enumerate(zip(batch["sequence"], batch["padding_mask"])):
        real = sequence[mask > 0]
        scores = real @ query / 2.0  # sqrt(D) = 2
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        np.testing.assert_allclose(pooled[row], weights @ real, rtol=1e-5, atol=1e-6)


def test_mean_pooling_known_answer(seeded):
    batch = inputs(seeded)
    pooled = test_case.to_numpy(SequencePooling("mean")(**batch))
    for row, (sequence, mask) in enumerate(zip(batch["sequence"], batch["padding_mask"])):
        np.testing.assert_allclose(pooled[row], sequence[mask > 0].mean(0), rtol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "mean_std", "attention"])
def test_pooling_padding_invariance_and_empty_rows(seeded, pooling):
    layer = pooling_layer(pooling, seeded)
    test_case.assert_padding_invariant(
        lambda batch: layer(**batch), inputs(seeded), {"sequence": "padding_mask"}
    )
    batch = test_case.with_non_finite_padding(inputs(seeded), {"sequence": "padding_mask"})
    batch["padding_mask"][1] = 0.0
    batch["sequence"][1] = np.nan
    pooled = test_case.to_numpy(layer(**batch))
    np.testing.assert_array_equal(pooled[1, :4], 0.0)  # the mean (or attention) part
    assert np.all(np.isfinite(pooled))


def test_unknown_pooling_is_an_error():
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequencePooling("max")


@pytest.mark.parametrize("pooling", ["mean", "mean_std", "attention"])
def test_head_shapes_weights_and_serialization(seeded, pooling):
    head = ClassificationHead(5, pooling=pooling, dropout=0.1)
    batch = inputs(seeded)
    test_case.run_layer_test(head, batch, (3, 5), 3 if pooling == "attention" else 2)
    assert len(head.non_trainable_weights) == 2  # the standardisation statistics
    test_case.assert_serialization_roundtrip(head, lambda layer: lambda b: layer(**b), batch)


def offset_features(rng, labels, dim=16, length=6):
    """Sequences whose class shows only as a small shift (0.03) on a large
    common offset (~0.8), as a LayerNorm-ended encoder's pooled output does."""
    common = 0.8 + 0.3 * rng.normal(size=dim)
    class_shifts = 0.03 * rng.normal(size=(labels.max() + 1, dim))
    noise = 0.01 * rng.normal(size=(len(labels), length, dim))
    sequence = common + class_shifts[labels][:, None] + noise
    mask = test_case.random_padding_mask(rng, len(labels), length, min_length=2)
    return {"sequence": sequence.astype("float32"), "padding_mask": mask}


def test_head_separates_small_shifts_on_a_large_common_offset(seeded):
    # Old head (no standardisation): the dense layer at lr 3e-3 learns the
    # class prior only (chance); standardised pooled features separate.
    import keras

    labels = np.arange(256) % 4
    data = offset_features(seeded, labels)
    train = {key: value[:128] for key, value in data.items()}
    test = {key: value[128:] for key, value in data.items()}
    sequence = keras.Input((None, 16), name="sequence")
    padding_mask = keras.Input((None,), name="padding_mask")
    logits = ClassificationHead(4)(sequence, padding_mask)
    model = keras.Model({"sequence": sequence, "padding_mask": padding_mask}, logits)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(train, labels[:128], batch_size=32, epochs=25, verbose=0)
    accuracy = (model.predict(test, verbose=0).argmax(-1) == labels[128:]).mean()
    assert accuracy > 0.9, accuracy


def test_mean_std_pooling_known_answer(seeded):
    batch = inputs(seeded)
    pooled = test_case.to_numpy(SequencePooling("mean_std")(**batch))
    assert pooled.shape == (3, 8)
    for row, (sequence, mask) in enumerate(zip(batch["sequence"], batch["padding_mask"])):
        real = sequence[mask > 0]
        expected = np.concatenate([real.mean(0), np.sqrt(real.var(0) + 1e-5)])
        np.testing.assert_allclose(pooled[row], expected, rtol=1e-5, atol=1e-6)
