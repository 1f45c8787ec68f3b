"""Classifiers scale out like the recognizer: a layout for every weight
(head included) and the tf.distribute loss scaling.

The layout check runs on every backend. The MirroredStrategy step is
TensorFlow-only by design and runs tests/models/mirrored_worker.py in a
subprocess (`MIRRORED_TASK=classifier`), see test_mirrored_strategy.py.
"""

import keras
import pytest

from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_classifier import SpeechClassifier
from keras_slam.models.text_classifier import TextClassifier
from tests.models.distribution_worker import BACKBONE, run_worker


def test_every_classifier_matrix_has_a_layout_head_included(seeded):
    backbone = SLAMBackbone(**BACKBONE)
    speech = SpeechClassifier(backbone, num_classes=3, pooling="attention")
    text = TextClassifier(backbone, head=speech.head)
    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), [f"cpu:{i}" for i in range(8)])
    for classifier in (speech, text):
        layout_map = type(classifier).get_layout_map(mesh)
        for weight in classifier.weights:
            # Keras' own lookup: raises when two rules match one path.
            layout = layout_map[weight.path]
            if len(weight.shape) >= 2:
                assert layout is not None, f"{weight.path} {weight.shape} has no layout"
                assert len(layout.axes) == len(weight.shape), weight.path
    assert layout_map["classification_head/logits/kernel"].axes == ("model", None)


@pytest.mark.slow(backend="tensorflow")
def test_mirrored_classifier_step_equals_single_device_step():
    report = run_worker(
        "tests.models.mirrored_worker", KERAS_BACKEND="tensorflow", MIRRORED_TASK="classifier"
    )
    assert report["replicas"] == 2
    # Before: the loss was not divided by the replicas (twice the single-device loss).
    assert report["loss"] <= 1e-5, report
    assert report["weights"] <= 1e-5, report
