"""Backbones, tasks and training schedules.

Each model family's named presets sit beside it, as in keras-hub
(`slam_backbone.py` + `slam_backbone_presets.py`, `speech_encoder.py` +
`speech_encoder_presets.py`: a table `backbone_presets` of
`preset_utils.PresetSpec`). Importing this package registers them, and the
Hugging Face w2v-BERT source of `keras_slam.presets.hf_w2v_bert`, into
`keras_slam.utils.preset_utils`, so `SLAMBackbone.from_preset("slam_tiny")`
and `SpeechRecognizer.from_preset(<Hugging Face directory>)` work.
"""

from keras_slam.models import slam_backbone_presets, speech_encoder_presets
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.slam_pretrainer import SLAMPretrainer
from keras_slam.models.speech_classifier import SpeechClassifier
from keras_slam.models.speech_encoder import SpeechEncoder, SpeechTower
from keras_slam.models.speech_language_model import SpeechAdapter, SpeechLanguageModel
from keras_slam.models.speech_recognizer import SpeechRecognizer
from keras_slam.models.speech_translator import SpeechTranslator
from keras_slam.models.speech_translator_preprocessor import SpeechTranslatorPreprocessor
from keras_slam.models.text_classifier import TextClassifier
from keras_slam.presets import hf_w2v_bert  # noqa: F401  (registers its preset source)
from keras_slam.utils.preset_utils import register_named_presets

register_named_presets(slam_backbone_presets.backbone_presets)
register_named_presets(speech_encoder_presets.backbone_presets)
