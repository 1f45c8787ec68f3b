import tempfile
import warnings

import jiwer
import keras
import numpy as np
import pytest
import scipy.signal

from keras_slam.callbacks import BlankOnlyGuard
from keras_slam.data.tokenizers import CharacterTokenizer, build_character_vocabulary
from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.models.speech_recognizer import SpeechRecognizer
from tests import test_case
from tests.conftest import reset_seeds_and_policy

TEXTS = ["hello world", "a cat sat", "good day"]
TINY = dict(
    hidden_dim=16,
    subsampling_filters=4,
    conformer=ConformerConfig(
        num_heads=2, ffn_dim=32, kernel_size=3, conv_norm_groups=4, dropout=0.0
    ),
)


def make_tokenizer():
    return CharacterTokenizer(build_character_vocabulary(TEXTS), sequence_length=None)


def make_backbone(kind, vocabulary_size):
    if kind == "slam":
        return SLAMBackbone(
            vocabulary_size=vocabulary_size, num_speech_layers=1, num_shared_layers=1, **TINY
        )
    return SpeechEncoder(num_layers=1, **TINY)


def make_recognizer(kind="slam", spec_augment=None, head_dropout=0.0):
    tokenizer = make_tokenizer()
    return SpeechRecognizer(
        make_backbone(kind, tokenizer.vocabulary_size()),
        preprocessor=SpeechRecognizerPreprocessor(tokenizer=tokenizer),
        spec_augment=spec_augment,
        head_dropout=head_dropout,
    )


@pytest.fixture(scope="module")
def recognizer():
    """One recognizer for the tests that only run it (no fit, no weight
    change): its compiled predict steps serve them all, where a new model
    compiles again for every input shape (JAX, TensorFlow)."""
    reset_seeds_and_policy()
    return make_recognizer()


def features(rng, batch_size=3, length=48):
    return {
        "speech_features": rng.normal(size=(batch_size, length, 80)).astype("float32"),
        "speech_padding_mask": test_case.random_padding_mask(
            rng, batch_size, length, min_length=20
        ),
    }


def logits_fn(recognizer):
    def call_fn(batch):
        outputs = recognizer(batch, training=False)
        return {"logits": (outputs["logits"], outputs["padding_mask"])}

    return call_fn


def build_recognizer(inputs):
    recognizer = make_recognizer(spec_augment="default")
    call_fn = logits_fn(recognizer)
    call_fn(inputs)
    return recognizer, call_fn


def test_task(seeded, parity_worker, tmp_path):
    preprocessor = make_recognizer().preprocessor
    train_batches = [
        (features(seeded, 2, length), preprocessor.tokenize_transcripts(texts))
        for length, texts in ((48, ["hello", "cat"]), (64, ["a cat sat", "good day"]))
    ]
    # 48 frames -> 12 after conv subsampling; one class per tokenizer id.
    test_case.run_task_test(
        "tests.models.test_speech_recognizer:build_recognizer",
        logits_fn,
        features(seeded),
        {"speech_features": "speech_padding_mask"},
        {"logits": (3, 12, make_tokenizer().vocabulary_size())},
        parity_worker,
        str(tmp_path),
        train_batches,
    )


def test_padding_invariance_on_a_speech_encoder(seeded):
    recognizer = make_recognizer("speech_encoder")
    test_case.assert_padding_invariant(
        logits_fn(recognizer), features(seeded), {"speech_features": "speech_padding_mask"}
    )


def test_preset_roundtrip_keeps_logits_and_transcripts(seeded, recognizer):
    waveforms = [0.1 * seeded.normal(size=n).astype("float32") for n in (8000, 12000)]
    expected = recognizer.transcribe(waveforms)
    inputs = features(seeded)
    with tempfile.TemporaryDirectory() as preset:
        recognizer.save_to_preset(preset)
        restored = SpeechRecognizer.from_preset(preset)
    assert type(restored.preprocessor.tokenizer) is CharacterTokenizer
    test_case.assert_outputs_close(
        test_case.normalize_outputs(logits_fn(recognizer)(inputs)),
        test_case.normalize_outputs(logits_fn(restored)(inputs)),
        atol=1e-6,
    )
    assert restored.transcribe(waveforms) == expected


def test_backbone_preset_gets_new_head_and_preprocessor(seeded):
    tokenizer = make_tokenizer()
    backbone = make_backbone("slam", tokenizer.vocabulary_size())
    with tempfile.TemporaryDirectory() as preset:
        tokenizer.save_to_preset(preset)
        backbone.save_to_preset(preset)
        recognizer = SpeechRecognizer.from_preset(preset)
    assert recognizer.vocabulary_size == tokenizer.vocabulary_size()
    assert recognizer.use_shared_encoder
    for ours, theirs in zip(recognizer.backbone.weights, backbone.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs)
        )


@pytest.mark.parametrize("kind", ["slam", "speech_encoder"])
def test_short_fit_finite_loss_and_frozen_encoder(seeded, kind):
    recognizer = make_recognizer(kind, spec_augment="default", head_dropout=0.1)
    x = features(seeded, batch_size=2, length=64)
    y = recognizer.preprocessor.tokenize_transcripts(["hello", "cat"])
    recognizer.compile(learning_rate=1e-2, freeze_encoder_steps=2)
    encoder_before = [keras.ops.convert_to_numpy(w) for w in recognizer.backbone.trainable_weights]
    head_before = keras.ops.convert_to_numpy(recognizer.ctc_head.kernel)
    history = recognizer.fit(x, y, epochs=2, batch_size=2, verbose=0)
    # Two steps, both frozen: the encoder is untouched, the head moved.
    for before, after in zip(encoder_before, recognizer.backbone.trainable_weights):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    assert np.abs(head_before - keras.ops.convert_to_numpy(recognizer.ctc_head.kernel)).max() > 0
    history = recognizer.fit(x, y, epochs=4, batch_size=2, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)), history
    assert history[-1] < history[0], history
    moved = [
        np.abs(before - keras.ops.convert_to_numpy(after)).max()
        for before, after in zip(encoder_before, recognizer.backbone.trainable_weights)
    ]
    assert max(moved) > 0


def test_non_finite_step_is_skipped_and_counted(seeded):
    """A NaN in a real frame: the step compile installs changes no weight."""
    recognizer = make_recognizer("speech_encoder")
    x = features(seeded, batch_size=2, length=64)
    x["speech_features"][1, 5, 7] = np.nan
    y = recognizer.preprocessor.tokenize_transcripts(["hello", "cat"])
    recognizer.compile(learning_rate=1e-2)
    before = [keras.ops.convert_to_numpy(w) for w in recognizer.trainable_weights]
    recognizer.fit(x, y, epochs=1, batch_size=2, verbose=0)
    for a, b in zip(before, recognizer.trainable_weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    assert int(keras.ops.convert_to_numpy(recognizer.optimizer.skipped_steps)) == 1
    assert int(keras.ops.convert_to_numpy(recognizer.optimizer.iterations)) == 0


def test_encoder_learning_rate_multiplier(seeded):
    recognizer = make_recognizer("speech_encoder")
    x = features(seeded, batch_size=2, length=64)
    y = recognizer.preprocessor.tokenize_transcripts(["hello", "cat"])
    recognizer.compile(learning_rate=1e-2, encoder_learning_rate_multiplier=0.0)
    before = [keras.ops.convert_to_numpy(w) for w in recognizer.backbone.trainable_weights]
    recognizer.fit(x, y, epochs=1, batch_size=2, verbose=0)
    for a, b in zip(before, recognizer.backbone.trainable_weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))


def test_transcribe_raw_audio_returns_strings(seeded, recognizer):
    waveforms = [0.1 * seeded.normal(size=n).astype("float32") for n in (6000, 16000, 9000)]
    texts = recognizer.transcribe(waveforms, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    beam = recognizer.transcribe(waveforms, strategy="beam_search", beam_width=4)
    assert len(beam) == 3 and all(isinstance(t, str) for t in beam)
    vocabulary = set("".join(TEXTS)) | {"\ufffd"}
    assert set("".join(texts)) <= vocabulary


def _blank_biased(recognizer, favourite):
    bias = np.zeros(recognizer.vocabulary_size, "float32")
    bias[favourite] = 100.0
    recognizer.ctc_head.bias.assign(bias)


def test_blank_only_guard_fires_on_blank_model(seeded):
    recognizer = make_recognizer()
    batch = {**features(seeded), **recognizer.preprocessor.tokenize_transcripts(TEXTS)}
    guard = BlankOnlyGuard(batch, check_after_steps=1)
    guard.set_model(recognizer)
    _blank_biased(recognizer, favourite=3)
    assert guard.check() is None
    _blank_biased(recognizer, favourite=recognizer.blank_index)
    with pytest.warns(UserWarning, match="predicts the CTC blank"):
        message = guard.check()
    assert "frames shorter than labels" in message and "learning rate" in message


def test_fit_on_several_buckets_compiles_once_per_bucket(seeded):
    """A 2-epoch fit over K = 2 bucket shapes with the lengths unknown to
    the dataset (as the bucketed pipeline gives them) traces (compiles) the
    train step at most K times in all."""
    import tensorflow as tf

    recognizer = make_recognizer()
    recognizer.compile(learning_rate=1e-2)
    buckets = [(48, ["hello", "cat"]), (64, ["good day", "a cat sat"])]
    batches = [
        (
            features(seeded, batch_size=2, length=length),
            recognizer.preprocessor.tokenize_transcripts(transcripts),
        )
        for length, transcripts in buckets * 2
    ]
    signature = keras.tree.map_structure(
        lambda array: tf.TensorSpec((2, None) + array.shape[2:], tf.as_dtype(array.dtype)),
        batches[0],
    )
    dataset = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=signature)
    history = {}

    def fit():
        history.update(recognizer.fit(dataset, epochs=2, verbose=0).history)

    traces = test_case.train_step_traces(
        recognizer, fit, lambda batch: tuple(batch[0]["speech_features"].shape)
    )
    assert len(history["loss"]) == 2 and np.all(np.isfinite(history["loss"]))
    test_case.assert_one_compile_per_bucket(traces, [(2, 48, 80), (2, 64, 80)], num_batches=8)


def test_blank_only_guard_runs_inside_fit(seeded):
    recognizer = make_recognizer()
    _blank_biased(recognizer, favourite=recognizer.blank_index)
    x = features(seeded, batch_size=2)
    y = recognizer.preprocessor.tokenize_transcripts(["hello", "cat"])
    guard = BlankOnlyGuard({**x, **y}, check_after_steps=1, stop_training=True)
    recognizer.compile(learning_rate=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recognizer.fit(x, y, epochs=3, batch_size=2, verbose=0, callbacks=[guard])
    assert guard.message is not None
    assert any("predicts the CTC blank" in str(w.message) for w in caught)


def test_error_rates_match_jiwer(seeded, recognizer):
    x = features(seeded)
    y = recognizer.preprocessor.tokenize_transcripts(TEXTS)
    # A padded row (no audio) must be left out.
    batch = {
        "speech_features": np.concatenate([x["speech_features"], x["speech_features"][:1]]),
        "speech_padding_mask": np.concatenate(
            [x["speech_padding_mask"], np.zeros_like(x["speech_padding_mask"][:1])]
        ),
        "token_ids": np.concatenate([y["token_ids"], np.zeros_like(y["token_ids"][:1])]),
        "token_padding_mask": np.concatenate(
            [y["token_padding_mask"], np.zeros_like(y["token_padding_mask"][:1])]
        ),
        "language": np.array([0, 1, 0, -1]),
    }
    rates, examples = recognizer.evaluate_error_rates([batch], languages=["en", "de"])
    assert [reference for _, reference, _ in examples] == TEXTS
    hypotheses = recognizer.transcribe([x])
    assert [h for _, _, h in examples] == hypotheses
    assert rates["en"]["utterances"] == 2 and rates["de"]["utterances"] == 1
    squeeze = lambda text: " ".join(text.split())  # noqa: E731 (the metric's whitespace rule)
    english = [(r, squeeze(h)) for (language, r, h) in examples if language == "en"]
    expected_cer = jiwer.cer([r for r, _ in english], [h for _, h in english])
    assert rates["en"]["cer"] == pytest.approx(expected_cer)
    assert rates["all"]["wer"] == pytest.approx(jiwer.wer(TEXTS, [squeeze(h) for h in hypotheses]))


def test_missing_tokenizer_is_a_clear_error(seeded):
    recognizer = SpeechRecognizer(
        make_backbone("speech_encoder", 0), vocabulary_size=8, spec_augment=None
    )
    with pytest.raises(ValueError, match="no preprocessor"):
        recognizer.transcribe([np.zeros(8000, "float32")])


def speech(rng, samples):
    return 0.1 * rng.normal(size=samples).astype("float32")


def test_transcribe_returns_one_text_per_waveform(seeded, recognizer):
    # Shorter than one 400-sample window, or empty: "" in its place, not
    # dropped (which shifted every later transcript onto the wrong input).
    waveforms = [
        speech(seeded, 300),
        speech(seeded, 16000),
        np.zeros(0, "float32"),
        speech(seeded, 9000),
    ]
    alone = [recognizer.transcribe([w])[0] for w in waveforms[1::2]]
    assert any(alone)
    for batch_size in (1, 3, 8):
        texts = recognizer.transcribe(waveforms, batch_size=batch_size)
        assert texts == ["", alone[0], "", alone[1]], batch_size
    assert recognizer.transcribe(waveforms[:1] + waveforms[2:3]) == ["", ""]
    assert recognizer.transcribe([]) == []


def test_transcribe_non_finite_waveform(seeded, recognizer):
    waveforms = [speech(seeded, 12000), speech(seeded, 9000), speech(seeded, 10000)]
    waveforms[1][500] = np.nan
    with pytest.raises(ValueError, match="audio item 1: NaN or Inf"):
        recognizer.transcribe(waveforms)
    waveforms[1][600] = np.inf
    with pytest.warns(UserWarning, match=r"1 of 3 waveforms have NaN or Inf .* items \[1\]"):
        texts = recognizer.transcribe(waveforms, non_finite="empty")
    assert texts == [
        recognizer.transcribe([waveforms[0]])[0],
        "",
        recognizer.transcribe([waveforms[2]])[0],
    ]


@pytest.mark.parametrize("rate, up, down", [(8000, 2, 1), (44100, 160, 441)])
def test_transcribe_resamples_to_the_front_end_rate(seeded, rate, up, down, recognizer):
    from keras_slam.models.asr_preprocessor import standardize_waveform

    waveform = speech(seeded, rate)  # one second
    reference = scipy.signal.resample_poly(waveform.astype("float64"), up, down).astype("float32")
    resampled = standardize_waveform(waveform, rate, 16000)
    assert resampled.shape == (16000,)
    np.testing.assert_allclose(resampled, reference, atol=1e-6)
    texts = recognizer.transcribe([speech(seeded, 12000), waveform], sample_rate=rate)
    assert texts[1] == recognizer.transcribe([reference])[0]
    with pytest.raises(ValueError, match="sample_rate"):
        recognizer.transcribe([waveform], sample_rate=22050.5)


def test_transcribe_multichannel_needs_explicit_downmix(seeded, recognizer):
    left, right = speech(seeded, 12000), speech(seeded, 12000)
    stereo = np.stack([left, right], axis=1)  # (S, C), as soundfile reads
    mono = recognizer.transcribe([(left + right) / 2])
    with pytest.raises(ValueError, match=r'audio item 1: 2 channels .*channels="mean"'):
        recognizer.transcribe([left, stereo])
    assert recognizer.transcribe([stereo], channels="mean") == mono
    with pytest.raises(
        ValueError, match=r"audio item 0: shape \(2, 12000\) looks like \(channels, samples\)"
    ):
        recognizer.transcribe([stereo.T], channels="mean")
    # One (S, C) array is not a batch of S two-sample waveforms.
    with pytest.raises(ValueError, match="fewer samples than waveforms"):
        recognizer.transcribe(stereo)
    # Single-channel 2-D arrays and one bare waveform are mono.
    assert (
        recognizer.transcribe([left[:, None]])
        == recognizer.transcribe(left)
        == recognizer.transcribe([left])
    )
    with pytest.raises(ValueError, match="waveform 0: shape"):
        recognizer.preprocessor([stereo])


def test_transcribe_integer_pcm_is_scaled(seeded, recognizer):
    pcm = (32768 * speech(seeded, 12000)).astype("int16")
    assert recognizer.transcribe([pcm]) == recognizer.transcribe([pcm / 32768.0])
