import dataclasses

import numpy as np
import pytest

from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_classifier import SpeechClassifier
from keras_slam.models.text_classifier import TextClassifier
from tests import test_case
from tests.models.test_speech_classifier import CLASS_NAMES, TINY, features
from tests.models.test_text_classifier import tokens


def inference_sequence(backbone, modality, x):
    """The encoder output the head should see: (B, T, D), mask (B, T)."""
    if modality == "speech":
        sequence, mask = backbone.speech_tower(
            x["speech_features"], x["speech_padding_mask"], training=False
        )
    else:
        mask = x["token_padding_mask"]
        sequence = backbone.embed_text(x["token_ids"], mask, training=False)
    return backbone.shared_encoder(sequence, mask, training=False), mask


@pytest.mark.parametrize("modality", ["speech", "text"])
def test_frozen_encoder_runs_in_inference_mode_inside_fit(seeded, modality):
    # Dropout 0.5 in every encoder block: a frozen encoder that ran it inside
    # `fit` would feed the head's standardisation noisy features.
    noisy = dict(TINY, conformer=dataclasses.replace(TINY["conformer"], dropout=0.5))
    backbone = SLAMBackbone(vocabulary_size=12, num_speech_layers=1, num_shared_layers=1, **noisy)
    cls, x = (
        (SpeechClassifier, features(seeded, 4))
        if modality == "speech"
        else (
            TextClassifier,
            tokens(seeded, 4),
        )
    )
    classifier = cls(backbone, class_names=CLASS_NAMES, dropout=0.0, freeze_encoder=True)
    sequence, mask = inference_sequence(backbone, modality, x)
    real = test_case.to_numpy(mask)[..., None]
    pooled = (test_case.to_numpy(sequence) * real).sum(1) / real.sum(1)
    encoder_before = [test_case.to_numpy(w) for w in backbone.weights]

    classifier.compile(learning_rate=1e-2)
    classifier.train_on_batch(x, np.array([0, 1, 2, 1], "int32"))

    # One step of momentum 0.9 from (0, 1): the batch statistics it used are
    # those of the inference features.
    standardization = classifier.head.standardization
    np.testing.assert_allclose(
        test_case.to_numpy(standardization.moving_mean), 0.1 * pooled.mean(0), atol=1e-5
    )
    np.testing.assert_allclose(
        test_case.to_numpy(standardization.moving_variance),
        0.9 + 0.1 * pooled.var(0),
        atol=1e-5,
    )
    for before, after in zip(encoder_before, backbone.weights):
        np.testing.assert_array_equal(before, test_case.to_numpy(after))


def test_frozen_classifier_preset_round_trip(seeded, tmp_path):
    backbone = SLAMBackbone(vocabulary_size=12, num_speech_layers=1, num_shared_layers=1, **TINY)
    classifier = SpeechClassifier(backbone, class_names=CLASS_NAMES, freeze_encoder=True)
    x = features(seeded)
    logits = test_case.to_numpy(classifier(x, training=False))
    classifier.save_to_preset(str(tmp_path))
    restored = SpeechClassifier.from_preset(str(tmp_path))
    assert restored.freeze_encoder and not restored.backbone.trainable
    assert {v.path for v in restored.trainable_weights} == {
        v.path for v in restored.head.trainable_weights
    }
    np.testing.assert_allclose(test_case.to_numpy(restored(x, training=False)), logits, atol=1e-6)
