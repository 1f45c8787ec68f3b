"""Backbones and tasks; importing it registers the
named presets, so `SLAMBackbone.from_preset("slam_tiny")` works."""

from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.slam_pretrainer import SLAMPretrainer
from keras_slam.models.speech_encoder import SpeechEncoder, SpeechTower
from keras_slam.models.speech_recognizer import SpeechRecognizer
from keras_slam.presets import registry  # noqa: F401  (registers the named presets)
