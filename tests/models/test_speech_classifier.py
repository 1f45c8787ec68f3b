import json
import os
import tempfile

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_slam import cli
from keras_slam.data import schema
from keras_slam.data.tokenizers import CharacterTokenizer, build_character_vocabulary
from keras_slam.layers.conformer import ConformerConfig
from keras_slam.layers.log_mel import LogMelSpectrogram
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_classifier import SpeechClassifier, without_per_bin_normalization
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.models.text_classifier import TextClassifier
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


def test_feature_statistics_reach_the_head_padding_invariant_and_saved(seeded, tmp_path):
    normalizing = SpeechRecognizerPreprocessor(LogMelSpectrogram(normalize_per_bin=True))
    preprocessor = without_per_bin_normalization(normalizing)
    assert not preprocessor.audio_converter.normalize_per_bin
    classifier = make_classifier(
        pooling="mean_std", feature_statistics=True, preprocessor=preprocessor
    )
    assert classifier.head.extra_features == 160
    inputs = features(seeded)
    inputs["speech_features"] = 5.0 + inputs["speech_features"]
    test_case.assert_padding_invariant(
        logits_fn(classifier), inputs, {"speech_features": "speech_padding_mask"}
    )
    # Per-bin offset and scale leave the encoder's input as it was; only
    # the statistics tell the two batches apart.
    shifted = dict(inputs, speech_features=3.0 * inputs["speech_features"] - 2.0)
    encoder_input = [
        classifier.feature_normalization(b["speech_features"], b["speech_padding_mask"])[0]
        for b in (inputs, shifted)
    ]
    np.testing.assert_allclose(*map(test_case.to_numpy, encoder_input), atol=1e-4)
    logits = classifier(inputs, training=False)
    assert np.abs(test_case.to_numpy(classifier(shifted, training=False) - logits)).max() > 1e-3
    classifier.save_to_preset(str(tmp_path))
    restored = SpeechClassifier.from_preset(str(tmp_path))
    assert restored.feature_statistics and restored.head.extra_features == 160
    assert not restored.preprocessor.audio_converter.normalize_per_bin
    np.testing.assert_allclose(
        test_case.to_numpy(restored(inputs, training=False)), test_case.to_numpy(logits), atol=1e-5
    )
    with pytest.raises(ValueError, match="without per-utterance normalisation"):
        make_classifier(feature_statistics=True, preprocessor=normalizing)


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


def test_named_presets_give_classifiers():
    with pytest.warns(UserWarning, match="'slam_tiny' has no published weights"):
        speech = SpeechClassifier.from_preset("slam_tiny", class_names=["x", "y"])
    assert isinstance(speech.backbone, SLAMBackbone) and speech.use_shared_encoder
    with pytest.warns(UserWarning, match="'mslam_tiny' has no published weights"):
        text = TextClassifier.from_preset("mslam_tiny", class_names=["x", "y"], pooling="attention")
    assert text.num_classes == 2 and text.pooling == "attention"
    speech = SpeechClassifier.from_text_classifier(text)
    assert speech.backbone is text.backbone
    with pytest.raises(ValueError, match="'w2v_bert_2_0' is a SpeechEncoder; TextClassifier"):
        TextClassifier.from_preset("w2v_bert_2_0", num_classes=2, load_weights=False)


def test_speech_tower_output_without_the_shared_encoder(seeded):
    classifier = make_classifier(pooling="mean", use_shared_encoder=False)
    x = features(seeded)
    backbone = classifier.backbone
    sequence, mask = backbone.speech_tower(x["speech_features"], x["speech_padding_mask"])
    np.testing.assert_allclose(
        test_case.to_numpy(classifier(x)),
        test_case.to_numpy(classifier.head(sequence, mask)),
        atol=1e-5,
    )
    shared = SpeechClassifier(backbone, head=classifier.head)
    assert np.abs(test_case.to_numpy(shared(x) - classifier(x))).max() > 1e-3
    restored = SpeechClassifier.from_config(classifier.get_config())
    assert not restored.use_shared_encoder


@pytest.mark.parametrize("multiplier", [0.0, 1.0])
def test_fine_tuning_trains_the_encoder_at_its_learning_rate_multiplier(seeded, multiplier):
    classifier = make_classifier(pooling="mean")
    assert len(classifier.trainable_weights) > len(classifier.head.trainable_weights)
    encoder_before = [test_case.to_numpy(w) for w in classifier.backbone.trainable_weights]
    head_before = [test_case.to_numpy(w) for w in classifier.head.trainable_weights]
    classifier.compile(learning_rate=1e-2, encoder_learning_rate_multiplier=multiplier)
    classifier.train_on_batch(features(seeded, 4), np.array([0, 1, 2, 1], "int32"))
    encoder_moved = [
        not np.array_equal(b, test_case.to_numpy(a))
        for b, a in zip(encoder_before, classifier.backbone.trainable_weights)
    ]
    assert any(encoder_moved) == (multiplier > 0), encoder_moved
    assert all(
        not np.array_equal(b, test_case.to_numpy(a))
        for b, a in zip(head_before, classifier.head.trainable_weights)
    )


def test_raw_inputs_without_content_are_errors_naming_the_item(seeded):
    classifier = make_classifier("speech_encoder", preprocessor=SpeechRecognizerPreprocessor())
    speech = 0.1 * seeded.normal(size=8000).astype("float32")
    for short, samples in ((np.zeros(0, "float32"), 0), (speech[:399], 399)):
        with pytest.raises(ValueError, match=f"audio item 1: {samples} samples, too short"):
            classifier.predict_labels([speech, short])
    with pytest.raises(ValueError, match="audio item 0: NaN or Inf"):
        classifier.predict_labels([np.full(800, np.nan, "float32")])
    assert len(classifier.predict_labels([speech[:400]])[0]) == 1  # one frame is enough
    tokenizer = CharacterTokenizer(build_character_vocabulary(["abc"]), sequence_length=None)
    text = TextClassifier(
        make_backbone(),
        class_names=CLASS_NAMES,
        preprocessor=SpeechRecognizerPreprocessor(tokenizer=tokenizer),
    )
    with pytest.raises(ValueError, match=r"text item 1 \(''\) has no tokens"):
        text.predict_labels(["abc", ""])


def test_labelled_rows_without_frames_are_errors(classifier, seeded):
    batch = dict(features(seeded), label=np.array([0, -1, 2], "int32"))
    batch["speech_padding_mask"][1] = 0.0  # a padded row: left out
    y_true, y_pred = classifier.collect_predictions([batch])
    assert y_true.tolist() == [0, 2] and y_pred.shape == (2,)
    batch["label"][1] = 1
    with pytest.raises(ValueError, match=r"batch 0, rows \[1\]: labelled but no real position"):
        classifier.collect_predictions([batch])


def test_task_preset_refuses_other_classes_and_names_itself(seeded, classifier, tmp_path):
    preset = str(tmp_path / "task")
    classifier.save_to_preset(preset)
    message = f"{preset} holds a trained head for 3 classes \\['de', 'en', 'es'\\]"
    for wrong in (
        dict(class_names=["de", "en", "es", "fr"]),
        dict(class_names=["de", "fr", "es"]),
        dict(num_classes=2),
    ):
        with pytest.raises(ValueError, match=message):
            SpeechClassifier.from_preset(preset, **wrong)
    assert SpeechClassifier.from_preset(preset, class_names=CLASS_NAMES).num_classes == 3
    # The advice of the message: a new head on the preset's encoder.
    backbone = keras_hub.models.Backbone.from_preset(preset)
    assert SpeechClassifier(backbone, class_names=["a", "b", "c", "d"]).num_classes == 4


def write_records(path, rows):
    """rows: (id, num_samples, language, label, transcript) -> a speech shard."""
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(path) as writer:
        for id, samples, language, label, transcript in rows:
            pcm = (3000 * rng.normal(size=samples)).astype("int16")
            writer.write(schema.speech_example(id, pcm, language, transcript, label=label))
    return path


def always(classifier, name):
    """Makes `classifier` predict class `name` for every input: a known answer."""
    classifier.head.dense.kernel.assign(np.zeros(classifier.head.dense.kernel.shape, "float32"))
    bias = np.zeros(classifier.num_classes, "float32")
    bias[classifier.class_names.index(name)] = 5.0
    classifier.head.dense.bias.assign(bias)
    return classifier


def evaluate(preset, shard, output, label_field="label"):
    arguments = ["evaluate-classifier", "--preset", preset, "--shards", shard]
    return cli.main(arguments + ["--label-field", label_field, "--output", output])


def save_always_loan_text_classifier(preset):
    """Saves a TextClassifier over intents ["card", "loan"] that says "loan" to everything."""
    tokenizer = CharacterTokenizer(build_character_vocabulary(["abc"]), sequence_length=None)
    text = TextClassifier(
        make_backbone(),
        class_names=["card", "loan"],
        preprocessor=SpeechRecognizerPreprocessor(tokenizer=tokenizer),
    )
    always(text, "loan").save_to_preset(preset)


def test_evaluate_classifier_cli_known_answers_and_errors(tmp_path, capsys):
    rows = [
        ("u0", 8000, "de", "card", "abc"),
        ("u1", 12000, "de", "loan", "bca"),
        ("u2", 6000, "en", "card", "ab"),
        ("u3", 9000, "es", "loan", "cab"),
    ]
    shard = write_records(str(tmp_path / "s-00000.tfrecord"), rows)
    speech = always(
        SpeechClassifier(
            make_backbone("speech_encoder"),
            class_names=CLASS_NAMES,
            preprocessor=SpeechRecognizerPreprocessor(),
        ),
        "en",
    )
    speech.save_to_preset(str(tmp_path / "speech"))
    save_always_loan_text_classifier(str(tmp_path / "text"))

    # Language ID, everything predicted "en": 1 of 4 right; F1 de 0, en
    # 2*1/(2*1+3+0) = 0.4, es 0 -> macro 0.4/3.
    assert evaluate(str(tmp_path / "speech"), shard, str(tmp_path / "a"), "language") == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["confusion_matrix"] == [[0, 2, 0], [0, 1, 0], [0, 1, 0]]
    assert report["accuracy"] == 0.25 and report["macro_f1"] == pytest.approx(0.4 / 3)
    # Written intents (the records' transcripts), everything "loan": F1
    # card 0, loan 2*2/(2*2+2+0) = 2/3 -> macro 1/3.
    assert evaluate(str(tmp_path / "text"), shard, str(tmp_path / "b")) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["confusion_matrix"] == [[0, 2], [0, 2]]
    assert report["accuracy"] == 0.5 and report["macro_f1"] == pytest.approx(1 / 3)
    assert os.path.getsize(tmp_path / "b" / "confusion_matrix.png") > 1000
    capsys.readouterr()

    # Bad input: a preset without a classifier, audio too short for a frame,
    # a label that is not a class name.
    speech.backbone.save_to_preset(str(tmp_path / "backbone"))
    assert evaluate(str(tmp_path / "backbone"), shard, str(tmp_path / "c")) == 1
    assert "is not a directory holding a SpeechClassifier" in capsys.readouterr().err
    short = write_records(str(tmp_path / "short.tfrecord"), [("u9", 200, "de", "card", "a")])
    assert evaluate(str(tmp_path / "speech"), short, str(tmp_path / "d"), "language") == 1
    assert "labelled but no real position in 'speech_padding_mask'" in capsys.readouterr().err
    unknown = write_records(str(tmp_path / "unknown.tfrecord"), [("u7", 8000, "xx", "card", "a")])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"unknown label \(language\).*xx"):
        evaluate(str(tmp_path / "speech"), unknown, str(tmp_path / "e"), "language")


def test_evaluate_classifier_cli_reads_text_shards(tmp_path, capsys):
    # The written intents as the text writers store them: text records.
    rows = [
        ("t0", "abc", "card"),
        ("t1", "bca", "loan"),
        ("t2", "ab", "card"),
        ("t3", "cab", "loan"),
    ]
    shard = str(tmp_path / "t-00000.tfrecord")
    with tf.io.TFRecordWriter(shard) as writer:
        for id, text, label in rows:
            writer.write(schema.text_example(id, text, "en", label=label))
    assert schema.shard_kind(shard) == schema.TEXT
    save_always_loan_text_classifier(str(tmp_path / "text"))
    # Everything "loan": F1 card 0, loan 2*2/(2*2+2+0) = 2/3 -> macro 1/3.
    assert evaluate(str(tmp_path / "text"), shard, str(tmp_path / "a")) == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["confusion_matrix"] == [[0, 2], [0, 2]]
    assert report["accuracy"] == 0.5 and report["macro_f1"] == pytest.approx(1 / 3)
    capsys.readouterr()
    # Text records have no "transcript"; a speech classifier cannot read them.
    assert evaluate(str(tmp_path / "text"), shard, str(tmp_path / "b"), "transcript") == 1
    assert 'text records hold "label" and "language"' in capsys.readouterr().err
    speech = SpeechClassifier(
        make_backbone("speech_encoder"),
        class_names=CLASS_NAMES,
        preprocessor=SpeechRecognizerPreprocessor(),
    )
    speech.save_to_preset(str(tmp_path / "speech"))
    assert evaluate(str(tmp_path / "speech"), shard, str(tmp_path / "c"), "language") == 1
    assert "text shards are read by a TextClassifier only" in capsys.readouterr().err


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
