import keras
import numpy as np
import pytest

from keras_slam.layers.spec_augment import SpecAugment
from tests import test_case


def random_features(rng, batch_size=4, num_frames=60, num_bins=80, min_length=10):
    padding_mask = test_case.random_padding_mask(rng, batch_size, num_frames, min_length)
    # Strictly positive so a masked value (0) is recognisable; padding gets
    # its own marker that must come out untouched.
    features = rng.uniform(1.0, 2.0, size=(batch_size, num_frames, num_bins))
    features = np.where(padding_mask[..., None] > 0, features, -7.0)
    return {"features": features.astype("float32"), "padding_mask": padding_mask}


def augment(layer, inputs, training=True):
    return test_case.to_numpy(layer(inputs["features"], inputs["padding_mask"], training=training))


def build_spec_augment(inputs):
    layer = SpecAugment(seed=7)
    layer(inputs["features"], inputs["padding_mask"])

    def call_fn(batch):
        return (layer(batch["features"], batch["padding_mask"]), batch["padding_mask"])

    return layer, call_fn


def numpy_masked_fraction(rng, lengths, num_bins, num_freq_masks, num_time_masks, runs=200):
    """Monte-Carlo reference: mean masked fraction of real (frame, bin) cells."""
    fractions = []
    for _ in range(runs):
        for length in lengths:
            bins = np.zeros(num_bins, bool)
            for _ in range(num_freq_masks):
                width = rng.integers(0, min(27, num_bins) + 1)
                start = rng.integers(0, num_bins - width + 1)
                bins[start : start + width] = True
            frames = np.zeros(length, bool)
            max_width = int(np.floor(0.05 * length))
            for _ in range(num_time_masks):
                width = rng.integers(0, max_width + 1)
                start = rng.integers(0, length - width + 1)
                frames[start : start + width] = True
            fractions.append(np.mean(frames[:, None] | bins[None, :]))
    return np.mean(fractions)


def test_identity_at_inference(seeded):
    layer = SpecAugment()
    inputs = random_features(seeded)
    for training in (None, False):
        np.testing.assert_array_equal(augment(layer, inputs, training), inputs["features"])
    assert not layer.trainable_weights


def test_masks_fall_within_real_frames_only(seeded):
    inputs = random_features(seeded)
    real = inputs["padding_mask"].astype(bool)
    lengths = real.sum(axis=1)
    for mask_value in ("zero", "mean"):
        layer = SpecAugment(mask_value=mask_value, seed=3)
        out = augment(layer, inputs)
        # Padding is never touched.
        np.testing.assert_array_equal(out[~real], inputs["features"][~real])
        changed = out != inputs["features"]
        assert changed[real].any()
        if mask_value == "mean":
            means = np.stack([inputs["features"][i, : lengths[i]].mean(0) for i in range(4)])
            rows, frames, bins = np.nonzero(changed)
            np.testing.assert_allclose(out[rows, frames, bins], means[rows, bins], rtol=1e-5)


def test_time_mask_is_one_span_inside_real_frames(seeded):
    inputs = random_features(seeded, batch_size=256, num_frames=120, min_length=40)
    lengths = inputs["padding_mask"].sum(axis=1).astype(int)
    layer = SpecAugment(num_freq_masks=0, num_time_masks=1, seed=5)
    out = augment(layer, inputs)
    widths = []
    for i, length in enumerate(lengths):
        masked_frames = np.nonzero(np.all(out[i] == 0.0, axis=-1))[0]
        assert np.all(np.any(out[i] != 0.0, axis=-1) | np.all(out[i] == 0.0, axis=-1))
        if len(masked_frames):
            assert masked_frames[-1] < length
            assert masked_frames[-1] - masked_frames[0] + 1 == len(masked_frames)
        assert len(masked_frames) <= np.floor(0.05 * length)
        widths.append(len(masked_frames) / max(np.floor(0.05 * length), 1))
    # Widths ~ U{0..max}: mean relative width ~ 1/2 (256 draws, std ~0.02).
    assert 0.4 < np.mean(widths) < 0.6


def test_frequency_band_widths(seeded):
    inputs = random_features(seeded, batch_size=256, num_frames=120)
    layer = SpecAugment(num_freq_masks=1, num_time_masks=0, seed=11)
    out = augment(layer, inputs)
    masked_bins = out[:, 0, :] == 0.0
    widths = masked_bins.sum(axis=1)
    # Same band in every real frame; one contiguous band of <= 27 bins.
    for i in range(256):
        real = inputs["padding_mask"][i].astype(bool)
        assert np.all((out[i][real] == 0.0) == masked_bins[i][None, :])
        band = np.nonzero(masked_bins[i])[0]
        if len(band):
            assert band[-1] - band[0] + 1 == len(band)
    assert widths.max() <= 27 and widths.max() >= 25
    # U{0..27}: mean 13.5, std 8.1 -> standard error 0.5 over 256 draws.
    assert abs(widths.mean() - 13.5) < 2.5


def test_masked_fraction_matches_reference(seeded):
    inputs = random_features(seeded, batch_size=256, num_frames=120, num_bins=80, min_length=20)
    real = inputs["padding_mask"].astype(bool)
    lengths = real.sum(axis=1)
    out = augment(SpecAugment(seed=13), inputs)
    fractions = [np.mean(out[i][real[i]] == 0.0) for i in range(256)]
    expected = numpy_masked_fraction(seeded, lengths[:32], 80, 2, 10)
    # Per-utterance fraction std ~0.13 -> standard error ~0.008 over 256.
    assert abs(np.mean(fractions) - expected) < 0.03, (np.mean(fractions), expected)


def test_fresh_masks_each_call_and_seeded(seeded):
    inputs = random_features(seeded)
    layer = SpecAugment(seed=1)
    first, second = augment(layer, inputs), augment(layer, inputs)
    assert np.any(first != second)
    np.testing.assert_array_equal(first, augment(SpecAugment(seed=1), inputs))


def test_runs_in_compiled_fit_and_predict(seeded):
    inputs = random_features(seeded, batch_size=8, num_frames=40, num_bins=16)
    features = keras.Input((40, 16), name="features")
    padding_mask = keras.Input((40,), name="padding_mask")
    augmented = SpecAugment(freq_mask_width=8, seed=2)(features, padding_mask)
    # A zero-initialised residual gives the model a weight to train.
    outputs = augmented + keras.layers.Dense(16, kernel_initializer="zeros")(augmented)
    model = keras.Model({"features": features, "padding_mask": padding_mask}, outputs)
    model.compile(optimizer="sgd", loss="mse", jit_compile="auto")
    # Before any update the model is the identity at inference...
    predicted = model.predict(inputs, verbose=0)
    np.testing.assert_allclose(predicted, inputs["features"], atol=1e-6)
    # ...and the compiled train step masks: the loss against the clean
    # features is > 0 only if it did.
    loss = model.train_on_batch(inputs, inputs["features"])
    assert np.isfinite(loss) and loss > 0.0


def test_backend_parity_at_inference(seeded, parity_worker):
    test_case.assert_backend_parity(
        "tests.layers.test_spec_augment:build_spec_augment",
        random_features(seeded),
        parity_worker=parity_worker,
    )


def test_serialization_roundtrip(seeded):
    layer = SpecAugment(num_freq_masks=1, num_time_masks=3, mask_value="mean", seed=4)
    inputs = random_features(seeded)
    test_case.assert_serialization_roundtrip(layer, lambda obj: lambda batch: obj(**batch), inputs)
    # The seed travels with the config: a rebuilt layer draws the same masks.
    np.testing.assert_array_equal(
        augment(SpecAugment.from_config(layer.get_config()), inputs),
        augment(SpecAugment.from_config(layer.get_config()), inputs),
    )


def test_bad_mask_value():
    with pytest.raises(ValueError, match="mask_value"):
        SpecAugment(mask_value="noise")
