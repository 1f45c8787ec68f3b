import os

import keras
import numpy as np
import pytest

from keras_slam.layers.log_mel import LogMelSpectrogram
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.speech_recognizer import SpeechRecognizer
from tests import test_case
from tests.models.test_speech_recognizer import make_backbone, make_tokenizer


def make_preprocessor():
    # Not the defaults, so that a lost setting shows.
    front_end = LogMelSpectrogram.w2v_bert_2_0(num_mel_bins=40, name="audio_converter")
    return SpeechRecognizerPreprocessor(
        audio_converter=front_end, tokenizer=make_tokenizer(), pad_to_multiple=4000
    )


def test_preset_round_trip_keeps_front_end_tokenizer_and_transcripts(seeded, tmp_path):
    preprocessor = make_preprocessor()
    recognizer = SpeechRecognizer(
        make_backbone("speech_encoder", None),
        preprocessor=preprocessor,
        spec_augment=None,
    )
    waveforms = [0.1 * seeded.normal(size=n).astype("float32") for n in (8000, 12000)]
    expected = recognizer.transcribe(waveforms)
    preset = str(tmp_path)
    recognizer.backbone.save_to_preset(preset)
    preprocessor.save_to_preset(preset)
    assert {"preprocessor.json", "audio_converter.json", "tokenizer.json"} <= set(
        os.listdir(preset)
    )
    front_end = LogMelSpectrogram.from_preset(preset)
    assert front_end.get_config() == preprocessor.audio_converter.get_config()
    assert front_end.audio_shape() == (None, 80)

    # Whole (preprocessor.json), and from its parts as a converted checkpoint has them.
    restored = SpeechRecognizerPreprocessor.from_preset(preset)
    os.remove(os.path.join(preset, "preprocessor.json"))
    from_parts = SpeechRecognizerPreprocessor.from_preset(preset)
    for loaded, name in ((restored, "preprocessor.json"), (from_parts, "parts")):
        assert loaded.audio_converter.get_config() == preprocessor.audio_converter.get_config(), (
            name
        )
        assert loaded.tokenizer.get_vocabulary() == preprocessor.tokenizer.get_vocabulary(), name
    assert restored.pad_to_multiple == 4000
    test_case.assert_outputs_close(
        test_case.normalize_outputs(preprocessor(waveforms)),
        test_case.normalize_outputs(restored(waveforms)),
        atol=0.0,
    )
    again = SpeechRecognizer(
        make_backbone("speech_encoder", None), preprocessor=restored, spec_augment=None
    )
    again.set_weights(recognizer.get_weights())
    assert again.transcribe(waveforms) == expected

    # A backbone preset with a front end and tokenizer gives a whole recognizer.
    loaded = SpeechRecognizer.from_preset(preset)
    assert (
        loaded.preprocessor.audio_converter.get_config()
        == preprocessor.audio_converter.get_config()
    )
    assert loaded.vocabulary_size == preprocessor.tokenizer.vocabulary_size()


def test_preset_without_preprocessor(tmp_path):
    preset = str(tmp_path)
    make_backbone("speech_encoder", None).save_to_preset(preset)
    with pytest.raises(FileNotFoundError, match="has no preprocessor"):
        SpeechRecognizerPreprocessor.from_preset(preset)
    assert SpeechRecognizer.from_preset(preset, vocabulary_size=5).preprocessor is None


def test_pipeline_batches_pass_through_unchanged():
    """keras-hub's `Task.fit` runs the preprocessor on every batch: a speech
    (features) or text (tokens) batch from the pipeline, with its labels,
    must come out as it went in (a TextClassifier's text batches did not)."""
    preprocessor = make_preprocessor()
    labels = np.array([2, -1])
    for batch in (
        {
            "speech_features": np.zeros((2, 5, 80), "float32"),
            "speech_padding_mask": np.ones((2, 5)),
        },
        {"token_ids": np.array([[3, 4], [5, 0]]), "token_padding_mask": np.ones((2, 2))},
    ):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(preprocessor(batch, labels))
        assert x is batch and y is labels


def test_items_without_an_output_frame_are_not_audible(seeded):
    """With stacked frames (w2v-BERT 2.0 stacks 2) one analysis window is
    not enough: an item needs `stack_frames` windows for one output frame."""
    preprocessor = make_preprocessor()
    front_end = preprocessor.audio_converter
    assert front_end.stack_frames == 2
    one_window = front_end.frame_length
    two_windows = front_end.frame_length + front_end.frame_step
    lengths = [one_window - 1, one_window, two_windows - 1, two_windows]
    waveforms = [0.1 * seeded.normal(size=n).astype("float32") for n in lengths]
    prepared, audible = preprocessor.prepare_waveforms(waveforms)
    assert [len(w) for w in prepared] == lengths
    assert audible == [3]
    recognizer = SpeechRecognizer(
        make_backbone("speech_encoder", None), preprocessor=preprocessor, spec_augment=None
    )
    texts = recognizer.transcribe(waveforms)
    assert texts[:3] == ["", "", ""]
    assert texts[3] == recognizer.transcribe(waveforms[3:])[0]
