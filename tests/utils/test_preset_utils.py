"""The one preset dispatcher: every backbone and task goes through it."""

import pytest

from keras_slam.models import (
    SLAMBackbone,
    SLAMPretrainer,
    SpeechEncoder,
    SpeechRecognizer,
)
from keras_slam.utils import preset_utils

MODEL_CLASSES = (SLAMBackbone, SpeechEncoder, SLAMPretrainer, SpeechRecognizer)


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=lambda cls: cls.__name__)
def test_every_backbone_and_task_uses_the_one_dispatcher(cls):
    assert cls.from_preset.__func__ is preset_utils.PresetMixin.from_preset.__func__
    assert cls.save_to_preset is preset_utils.PresetMixin.save_to_preset


def test_registered_source_serves_every_class():
    calls = []

    def load(cls, preset, **kwargs):
        calls.append((cls, preset, kwargs))
        return cls.__name__

    source = preset_utils.PresetSource("test_source", lambda p: p.startswith("test://"), load)
    preset_utils.register_preset_source(source)
    try:
        assert SpeechEncoder.from_preset("test://x", load_weights=False) == "SpeechEncoder"
        assert SpeechRecognizer.from_preset("test://y", vocabulary_size=5) == "SpeechRecognizer"
    finally:
        preset_utils.PRESET_SOURCES.remove(source)
    assert calls == [
        (SpeechEncoder, "test://x", {"load_weights": False}),
        (SpeechRecognizer, "test://y", {"vocabulary_size": 5}),
    ]


def test_registrations_happen_on_import_of_the_models():
    assert {"slam_tiny", "w2v_bert_2_0"} <= set(preset_utils.NAMED_PRESETS)
    assert [source.name for source in preset_utils.PRESET_SOURCES] == ["huggingface_w2v_bert"]


def test_named_backbone_preset_makes_a_recognizer_with_its_text_vocabulary():
    with pytest.warns(UserWarning, match="'slam_tiny' has no published weights"):
        recognizer = SpeechRecognizer.from_preset("slam_tiny", spec_augment=None)
    assert isinstance(recognizer.backbone, SLAMBackbone)
    assert (
        recognizer.vocabulary_size
        == preset_utils.NAMED_PRESETS["slam_tiny"].config["vocabulary_size"]
    )
    with pytest.raises(ValueError, match="SpeechEncoder has no text vocabulary"):
        SpeechRecognizer.from_preset("w2v_bert_2_0", load_weights=False)
