import json
import os
import tempfile

import keras
import numpy as np
import pytest

from keras_slam import cli
from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_classifier import SpeechClassifier
from keras_slam.models.speech_encoder import SpeechEncoder
from tests import test_case
from tests.conftest import reset_seeds_and_policy

CLASS_NAMES = ["de", "en", "es"]
TINY = dict(
    hidden_dim=16,
    subsampling_filters=4,
    conformer=ConformerConfig(
        num_heads=2, ffn_dim=32, kernel_size=3, conv_norm_groups=4, dropout=0.0
    ),
)


def make_backbone(kind="slam"):
    if kind == "slam":
        return SLAMBackbone(vocabulary_size=12, num_speech_layers=1, num_shared_layers=1, **TINY)
    return SpeechEncoder(num_layers=1, **TINY)


def make_classifier(kind="slam", pooling="attention", **kwargs):
    classifier = SpeechClassifier(
        make_backbone(kind), class_names=CLASS_NAMES, pooling=pooling, dropout=0.0, **kwargs
    )
    if pooling == "attention":
        # A non-zero query, so that attention differs from the mean.
        query = classifier.head.sequence_pooling.query
        query.assign(np.linspace(-1.0, 1.0, query.shape[0]).astype("float32"))
    return classifier


def features(rng, batch_size=3, length=48):
    return {
        "speech_features": rng.normal(size=(batch_size, length, 80)).astype("float32"),
        "speech_padding_mask": test_case.random_padding_mask(
            rng, batch_size, length, min_length=20
        ),
    }


def logits_fn(classifier):
    return lambda batch: {"logits": classifier(batch, training=False)}


def build_classifier(inputs):
    classifier = make_classifier()
    return classifier, logits_fn(classifier)


@pytest.fixture(scope="module")
def classifier():
    reset_seeds_and_policy()
    return make_classifier()


def test_task(seeded, parity_worker, tmp_path):
    train_batches = [
        (features(seeded, 2, length), np.array(labels, "int32"))
        for length, labels in ((48, [0, 2]), (64, [1, -1]))
    ]
    test_case.run_task_test(
        "tests.models.test_speech_classifier:build_classifier",
        logits_fn,
        features(seeded),
        {"speech_features": "speech_padding_mask"},
        {"logits": (3, 3)},
        parity_worker,
        str(tmp_path),
        train_batches,
    )


def test_mean_pooling_on_a_speech_encoder_is_padding_invariant(seeded):
    test_case.assert_padding_invariant(
        logits_fn(make_classifier("speech_encoder", pooling="mean")),
        features(seeded),
        {"speech_features": "speech_padding_mask"},
    )


def test_preset_keeps_class_names_and_predictions(seeded, classifier):
    inputs = features(seeded)
    labels, probabilities = classifier.predict_labels(inputs)
    with tempfile.TemporaryDirectory() as preset:
        classifier.save_to_preset(preset)
        restored = SpeechClassifier.from_preset(preset)
    assert restored.class_names == CLASS_NAMES
    assert restored.pooling == "attention" and restored.num_classes == 3
    restored_labels, restored_probabilities = restored.predict_labels(inputs)
    assert restored_labels == labels
    assert set(labels) <= set(CLASS_NAMES)
    np.testing.assert_allclose(restored_probabilities, probabilities, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)


def test_backbone_preset_gets_a_new_head(seeded):
    backbone = make_backbone()
    with tempfile.TemporaryDirectory() as preset:
        backbone.save_to_preset(preset)
        classifier = SpeechClassifier.from_preset(preset, class_names=["x", "y"])
    assert classifier.num_classes == 2 and classifier.use_shared_encoder
    for ours, theirs in zip(classifier.backbone.weights, backbone.weights):
        np.testing.assert_array_equal(test_case.to_numpy(ours), test_case.to_numpy(theirs))


def test_frozen_encoder_trains_only_the_head(seeded):
    classifier = make_classifier(freeze_encoder=True)
    head_paths = {v.path for v in classifier.head.trainable_weights}
    assert {v.path for v in classifier.trainable_weights} == head_paths
    x, y = features(seeded, 4, 48), np.array([0, 1, 2, 1], "int32")
    grads = test_case.gradients(
        classifier.trainable_weights,
        lambda: classifier.compute_loss(y=y, y_pred=classifier(x, training=True)),
    )
    assert all(np.abs(g).max() > 0 for g in grads)
    encoder_before = [test_case.to_numpy(w) for w in classifier.backbone.weights]
    head_before = [test_case.to_numpy(w) for w in classifier.head.weights]
    classifier.compile(learning_rate=1e-2)
    loss = classifier.fit(x, y, epochs=3, batch_size=4, verbose=0).history["loss"]
    assert loss[-1] < loss[0], loss
    for before, after in zip(encoder_before, classifier.backbone.weights):
        np.testing.assert_array_equal(before, test_case.to_numpy(after))
    assert any(
        not np.array_equal(b, test_case.to_numpy(a))
        for b, a in zip(head_before, classifier.head.weights)
    )


def test_predict_labels_on_raw_waveforms(seeded):
    classifier = make_classifier("speech_encoder", preprocessor=SpeechRecognizerPreprocessor())
    waveforms = [0.1 * seeded.normal(size=n).astype("float32") for n in (8000, 12000)]
    labels, probabilities = classifier.predict_labels(waveforms)
    assert len(labels) == 2 and probabilities.shape == (2, 3)
    with pytest.raises(ValueError, match="no preprocessor"):
        make_classifier("speech_encoder").predict_labels(waveforms)


def test_class_count_mismatches_are_errors():
    with pytest.raises(ValueError, match="class_names has 3"):
        SpeechClassifier(make_backbone("speech_encoder"), num_classes=2, class_names=CLASS_NAMES)
    with pytest.raises(ValueError, match="pass num_classes or class_names"):
        SpeechClassifier(make_backbone("speech_encoder"))
    with pytest.raises(ValueError, match="no shared encoder"):
        SpeechClassifier(make_backbone("speech_encoder"), 2, use_shared_encoder=True)


def test_padded_rows_are_left_out_of_the_loss(classifier, seeded):
    x = features(seeded, 3)
    logits = classifier(x)
    full = classifier.compute_loss(y=np.array([0, 1, -1], "int32"), y_pred=logits)
    kept = classifier.compute_loss(y=np.array([0, 1], "int32"), y_pred=logits[:2])
    np.testing.assert_allclose(test_case.to_numpy(full), test_case.to_numpy(kept), rtol=1e-6)
    log_probabilities = np.log(test_case.to_numpy(keras.ops.softmax(logits[:2])))
    expected = -(log_probabilities[0, 0] + log_probabilities[1, 1]) / 2
    np.testing.assert_allclose(test_case.to_numpy(kept), expected, rtol=1e-5)


SAMPLE_DEV = os.path.join(
    os.path.dirname(__file__), "..", "..", "tfrecords", "sample", "paired", "dev"
)


@pytest.mark.slow(backend="tensorflow")
def test_evaluate_classifier_cli_on_sample_shards(tmp_path, capsys):
    classifier = SpeechClassifier(
        make_backbone("speech_encoder"),
        class_names=["de", "es"],
        preprocessor=SpeechRecognizerPreprocessor(),
    )
    classifier.save_to_preset(str(tmp_path / "preset"))
    shards = [os.path.join(SAMPLE_DEV, language) for language in ("de", "es")]
    output = str(tmp_path / "evaluation")
    arguments = ["evaluate-classifier", "--preset", str(tmp_path / "preset"), "--shards"]
    assert cli.main(arguments + shards + ["--label-field", "language", "--output", output]) == 0
    with open(os.path.join(output, "report.json")) as file:
        report = json.load(file)
    # The sample's dev split holds 8 utterances per language.
    assert report["examples"] == 16
    assert [sum(row) for row in report["confusion_matrix"]] == [8, 8]
    matrix = np.array(report["confusion_matrix"])
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / 16)
    assert f"accuracy: {report['accuracy']:.4f}" in capsys.readouterr().out
    assert os.path.getsize(os.path.join(output, "confusion_matrix.png")) > 1000
