import os

import keras
import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from keras_slam.layers.log_mel import (
    W2V_BERT_2_0_FRONTEND,
    LogMelSpectrogram,
    PerBinNormalization,
)
from tests import test_case

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SAMPLE_RATE = 16000


def speech_like(rng, num_samples):
    """Voiced harmonics with a gliding pitch, syllable envelope and noise floor."""
    t = np.arange(num_samples) / SAMPLE_RATE
    pitch = 120.0 + 40.0 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)), 0.05, None)
    signal = 0.1 * envelope * harmonics + 1e-3 * rng.normal(size=num_samples)
    return signal.astype("float32")


def batch_of(signals):
    """Pads 1-D signals into (B, S) waveform and padding mask."""
    max_length = max(len(s) for s in signals)
    waveform = np.zeros((len(signals), max_length), "float32")
    padding_mask = np.zeros((len(signals), max_length), "float32")
    for i, signal in enumerate(signals):
        waveform[i, : len(signal)] = signal
        padding_mask[i, : len(signal)] = 1.0
    return waveform, padding_mask


def random_batch(rng, batch_size=3, max_length=8000, min_length=2000):
    """Speech-like utterances of random lengths with garbage in the padding."""
    padding_mask = test_case.random_padding_mask(rng, batch_size, max_length, min_length)
    waveform = np.stack([speech_like(rng, max_length) for _ in range(batch_size)])
    # The garbage must not reach any real frame.
    waveform += (1.0 - padding_mask) * rng.uniform(-5, 5, size=waveform.shape)
    return {"waveform": waveform.astype("float32"), "padding_mask": padding_mask}


def call_fn_of(layer):
    def call_fn(batch):
        features, frame_mask = layer(batch["waveform"], batch["padding_mask"])
        return {"features": (features, frame_mask)}

    return call_fn


def build_slam_frontend(inputs):
    layer = LogMelSpectrogram()
    return layer, call_fn_of(layer)


def build_w2v_bert_frontend(inputs):
    layer = LogMelSpectrogram.w2v_bert_2_0()
    return layer, call_fn_of(layer)


def numpy_log_mel(signal):
    """float64 reference for the default (SLAM) options of one utterance."""
    from transformers.audio_utils import mel_filter_bank

    frames = np.lib.stride_tricks.sliding_window_view(signal.astype("float64"), 400)[::160]
    window = scipy.signal.get_window("hann", 400, fftbins=True)
    power = np.abs(np.fft.rfft(frames * window, n=512)) ** 2
    filters = mel_filter_bank(
        num_frequency_bins=257,
        num_mel_filters=80,
        min_frequency=125.0,
        max_frequency=7600.0,
        sampling_rate=SAMPLE_RATE,
        mel_scale="htk",
        triangularize_in_mel_space=True,
    )
    return np.log(np.maximum(power @ filters, 1e-6))


def test_layer_shapes_and_no_weights(seeded):
    # (test_case.run_layer_test cannot yet take a tuple of output shapes:
    # its tree map descends into the shape tuples.)
    inputs = random_batch(seeded)
    frames = 1 + (8000 - 400) // 160
    for layer, num_features, num_frames in [
        (LogMelSpectrogram(), 80, frames),
        (LogMelSpectrogram.w2v_bert_2_0(), 160, frames // 2),
    ]:
        features, frame_mask = layer(**inputs)
        assert tuple(features.shape) == (3, num_frames, num_features)
        assert tuple(frame_mask.shape) == (3, num_frames)
        assert layer.built and not layer.weights


def test_default_options_match_numpy_reference(seeded):
    # float32 STFT vs float64: log-mel values lie in [-14, 5]; a float32 FFT
    # has ~1e-7 relative error w.r.t. the frame energy, which only matters
    # in bins ~40 dB below the frame peak. Measured max |diff| 1.0e-5;
    # 1e-4 absolute in log leaves room for other backends' FFTs.
    signals = [speech_like(seeded, 7000), (0.1 * seeded.normal(size=5123)).astype("float32")]
    waveform, padding_mask = batch_of(signals)
    features, frame_mask = LogMelSpectrogram()(waveform, padding_mask)
    features, frame_mask = test_case.to_numpy(features), test_case.to_numpy(frame_mask)
    for i, signal in enumerate(signals):
        expected = numpy_log_mel(signal)
        assert frame_mask[i].sum() == len(expected)
        np.testing.assert_allclose(features[i, : len(expected)], expected, atol=1e-4)
        assert np.all(features[i, len(expected) :] == 0.0)


def test_w2v_bert_options_match_hugging_face(seeded):
    from transformers import SeamlessM4TFeatureExtractor

    extractor = SeamlessM4TFeatureExtractor()
    speech = [speech_like(seeded, 16000), speech_like(seeded, 4567)]
    noise = [
        (0.05 * seeded.normal(size=9123)).astype("float32"),
        seeded.uniform(-0.5, 0.5, size=12000).astype("float32"),
    ]
    signals = speech + noise
    waveform, padding_mask = batch_of(signals)
    features, frame_mask = LogMelSpectrogram.w2v_bert_2_0()(waveform, padding_mask)
    features, frame_mask = test_case.to_numpy(features), test_case.to_numpy(frame_mask)
    reference = extractor(signals, sampling_rate=SAMPLE_RATE, return_tensors="np")
    expected, expected_mask = reference["input_features"], reference["attention_mask"]
    # HF pads the frame count up to even; we drop a trailing odd frame
    # instead. Real frames are the same.
    num_frames = features.shape[1]
    assert expected.shape[1] - num_frames in (0, 1)
    expected, expected_mask = expected[:, :num_frames], expected_mask[:, :num_frames]
    np.testing.assert_array_equal(frame_mask, expected_mask)
    # HF runs float64 on the int16-scaled signal, we run float32. Float32 FFT
    # round-off is relative to the whole frame's energy, so it shows in the
    # lowest mel bins, which pre-emphasis puts ~30 dB below the rest. Speech
    # (energy low in frequency) reaches max |diff| ~2e-5 (DESIGN.md's 1e-4
    # holds); broadband noise, the worst case, reaches ~1.5e-4 (seeds 0-3,
    # all backends), so it gets 3e-4.
    for i, atol in enumerate([1e-4] * len(speech) + [3e-4] * len(noise)):
        real = frame_mask[i].astype(bool)
        np.testing.assert_allclose(
            features[i][real], expected[i][real], atol=atol, err_msg=f"signal {i}"
        )


def test_w2v_bert_constant_describes_the_classmethod():
    config = LogMelSpectrogram.w2v_bert_2_0().get_config()
    for key, value in W2V_BERT_2_0_FRONTEND.items():
        assert config[key] == value


@pytest.mark.parametrize("builder", [build_slam_frontend, build_w2v_bert_frontend])
def test_padding_invariance(seeded, builder):
    _, call_fn = builder(None)
    test_case.assert_padding_invariant(
        call_fn, random_batch(seeded), {"waveform": "padding_mask"}, atol=1e-5
    )


@pytest.mark.parametrize("builder", ["build_slam_frontend", "build_w2v_bert_frontend"])
def test_backend_parity(seeded, parity_worker, builder):
    test_case.assert_backend_parity(
        f"tests.layers.test_log_mel:{builder}",
        random_batch(seeded),
        parity_worker=parity_worker,
    )


def test_mixed_precision_computes_in_float32(seeded):
    test_case.assert_mixed_precision_finite(
        "tests.layers.test_log_mel:build_w2v_bert_frontend", random_batch(seeded)
    )
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        features, _ = LogMelSpectrogram()(random_batch(seeded)["waveform"])
    finally:
        keras.config.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(features.dtype) == "float32"


def test_serialization_roundtrip(seeded):
    layer = LogMelSpectrogram.w2v_bert_2_0(name="frontend")
    test_case.assert_serialization_roundtrip(layer, call_fn_of, random_batch(seeded))


def test_num_frames_int_and_tensor():
    layer = LogMelSpectrogram.w2v_bert_2_0()
    lengths = np.array([0, 399, 400, 559, 560, 719, 720, 16000])
    expected = [0, 0, 0, 0, 1, 1, 1, 49]
    assert [layer.num_frames(int(n)) for n in lengths] == expected
    got = layer.num_frames(keras.ops.convert_to_tensor(lengths))
    np.testing.assert_array_equal(test_case.to_numpy(got), expected)
    assert LogMelSpectrogram().num_frames(16000) == 98


def test_in_tf_data_map_matches_eager(seeded):
    layer = LogMelSpectrogram.w2v_bert_2_0()
    inputs = random_batch(seeded, batch_size=3)
    eager = test_case.normalize_outputs(call_fn_of(layer)(inputs))
    # tf.data always computes with TensorFlow ops: same-backend tolerance on
    # the TF backend, the cross-backend one (different FFTs) elsewhere.
    atol = 1e-5 if test_case.backend() == "tensorflow" else 1e-4

    # Fixed shapes (bucketed batches), batch dimension unknown in the graph.
    dataset = tf.data.Dataset.from_tensor_slices(
        (inputs["waveform"], inputs["padding_mask"])
    ).batch(2)
    mapped = dataset.map(lambda waveform, padding_mask: layer(waveform, padding_mask))
    features, frame_mask = (np.concatenate(parts) for parts in zip(*mapped.as_numpy_iterator()))
    test_case.assert_outputs_close(
        eager, {"features": (features, frame_mask)}, atol=atol, where="tf.data: "
    )

    # Unknown length too (padded_batch of variable-length utterances).
    lengths = inputs["padding_mask"].sum(axis=1).astype("int64")
    utterances = tf.data.Dataset.from_tensor_slices(np.arange(3)).map(
        lambda i: tf.gather(inputs["waveform"], i)[: tf.gather(lengths, i)]
    )
    padded = (
        utterances.map(lambda waveform: (waveform, tf.ones_like(waveform)))
        .padded_batch(3)
        .map(lambda waveform, padding_mask: layer(waveform, padding_mask))
    )
    features, frame_mask = next(padded.as_numpy_iterator())
    assert features.shape[1] == eager["features"][0].shape[1]
    test_case.assert_outputs_close(
        eager, {"features": (features, frame_mask)}, atol=atol, where="padded_batch: "
    )


def test_bad_rank_raises():
    layer = LogMelSpectrogram()
    with pytest.raises(ValueError, match="waveform must be"):
        layer(np.zeros((16000,), "float32"))
    with pytest.raises(ValueError, match="waveform must be"):
        layer(np.zeros((2, 16000, 1), "float32"))
    with pytest.raises(ValueError, match="padding_mask must be"):
        layer(np.zeros((2, 16000), "float32"), np.ones((2, 16000, 1), "float32"))
    with pytest.raises(ValueError, match="fewer than one frame"):
        layer(np.zeros((2, 100), "float32"))


def test_non_finite_audio_drops_the_utterance(seeded):
    layer = LogMelSpectrogram.w2v_bert_2_0()
    inputs = random_batch(seeded, batch_size=3)
    clean_features, clean_mask = (test_case.to_numpy(t) for t in layer(**inputs))
    waveform = inputs["waveform"].copy()
    waveform[1, 500] = np.nan  # a real sample of item 1
    waveform[2, -1] = np.inf if inputs["padding_mask"][2, -1] == 0 else waveform[2, -1]
    waveform[0, 10] = 1e30  # finite, but overflows the power spectrum
    features, frame_mask = (test_case.to_numpy(t) for t in layer(waveform, inputs["padding_mask"]))
    assert np.all(np.isfinite(features))
    assert frame_mask[0].sum() == 0 and frame_mask[1].sum() == 0
    assert np.all(features[:2] == 0.0)
    # An inf in the padding of item 2 changes nothing.
    np.testing.assert_array_equal(frame_mask[2], clean_mask[2])
    np.testing.assert_allclose(features[2], clean_features[2], atol=1e-6)


def test_per_bin_normalization_is_the_front_ends_and_keeps_its_statistics(seeded):
    signals = [speech_like(seeded, 7000), (0.1 * seeded.normal(size=5123)).astype("float32")]
    waveform, padding_mask = batch_of(signals)
    raw, frame_mask = LogMelSpectrogram()(waveform, padding_mask)
    normalized, _ = LogMelSpectrogram(normalize_per_bin=True)(waveform, padding_mask)
    ours, statistics = PerBinNormalization()(raw, frame_mask)
    np.testing.assert_allclose(
        test_case.to_numpy(ours), test_case.to_numpy(normalized), rtol=1e-5, atol=1e-5
    )
    raw, frame_mask, statistics = map(test_case.to_numpy, (raw, frame_mask, statistics))
    assert statistics.shape == (2, 160)
    for i in range(2):
        real = raw[i][frame_mask[i] > 0].astype("float64")
        np.testing.assert_allclose(statistics[i, :80], real.mean(0), rtol=1e-5, atol=1e-5)
        std = np.sqrt(real.var(0, ddof=1) + 1e-7)
        np.testing.assert_allclose(statistics[i, 80:], std, rtol=1e-4, atol=1e-5)

    def call(batch):
        normalized, statistics = PerBinNormalization()(**batch)
        return {"features": (normalized, batch["padding_mask"]), "statistics": statistics}

    test_case.assert_padding_invariant(
        call,
        {"features": raw + 10.0 * frame_mask[..., None], "padding_mask": frame_mask},
        {"features": "padding_mask"},
    )
