"""Backbones, tasks and training schedules.

Importing it also runs the preset registrations (the named presets of
`keras_slam.presets.registry`, the Hugging Face w2v-BERT source of
`keras_slam.presets.hf_w2v_bert`), so `SLAMBackbone.from_preset("slam_tiny")`
and `SpeechRecognizer.from_preset(<Hugging Face directory>)` work.
"""

from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.slam_pretrainer import SLAMPretrainer
from keras_slam.models.speech_encoder import SpeechEncoder, SpeechTower
from keras_slam.models.speech_recognizer import SpeechRecognizer
from keras_slam.presets import hf_w2v_bert  # noqa: F401  (registers its preset source)
from keras_slam.presets import registry  # noqa: F401  (registers the named presets)
