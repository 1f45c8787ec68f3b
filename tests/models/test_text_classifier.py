import keras
import numpy as np
import pytest

from keras_slam.data.tokenizers import CharacterTokenizer, build_character_vocabulary
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.speech_classifier import SpeechClassifier
from keras_slam.models.text_classifier import TextClassifier
from tests import test_case
from tests.models.test_speech_classifier import CLASS_NAMES, features, make_backbone


def tokens(rng, batch_size=3, length=7):
    return {
        "token_ids": rng.integers(1, 12, size=(batch_size, length)).astype("int32"),
        "token_padding_mask": test_case.random_padding_mask(rng, batch_size, length),
    }


def logits_fn(classifier):
    return lambda batch: {"logits": classifier(batch, training=False)}


def build_classifier(inputs):
    classifier = TextClassifier(make_backbone(), class_names=CLASS_NAMES, dropout=0.0)
    return classifier, logits_fn(classifier)


def test_task(seeded, parity_worker, tmp_path):
    train_batches = [
        (tokens(seeded, 2, length), np.array(labels, "int32"))
        for length, labels in ((7, [0, 2]), (9, [1, -1]))
    ]
    test_case.run_task_test(
        "tests.models.test_text_classifier:build_classifier",
        logits_fn,
        tokens(seeded),
        {"token_ids": "token_padding_mask"},
        {"logits": (3, 3)},
        parity_worker,
        str(tmp_path),
        train_batches,
    )


def test_head_trained_on_text_classifies_speech_with_the_same_variables(seeded):
    text = TextClassifier(make_backbone(), class_names=CLASS_NAMES, dropout=0.0)
    speech = SpeechClassifier.from_text_classifier(text)
    assert speech.head is text.head and speech.backbone is text.backbone
    assert speech.class_names == CLASS_NAMES and speech.use_shared_encoder
    x = features(seeded)
    before = test_case.to_numpy(speech(x))
    text.compile(learning_rate=1e-2)
    text.fit(tokens(seeded, 4), np.array([0, 1, 2, 1], "int32"), epochs=2, verbose=0)
    after = test_case.to_numpy(speech(x))
    assert np.abs(after - before).max() > 0  # text training moved the speech classifier
    # The speech logits are the head applied to the speech encoder's output.
    sequence, mask = speech.backbone.speech_tower(x["speech_features"], x["speech_padding_mask"])
    sequence = speech.backbone.shared_encoder(sequence, mask)
    np.testing.assert_allclose(after, test_case.to_numpy(text.head(sequence, mask)), atol=1e-5)


def test_predict_labels_on_strings_and_preset_round_trip(seeded, tmp_path):
    tokenizer = CharacterTokenizer(build_character_vocabulary(["abc de"]), sequence_length=None)
    classifier = TextClassifier(
        make_backbone(),
        class_names=CLASS_NAMES,
        preprocessor=SpeechRecognizerPreprocessor(tokenizer=tokenizer),
    )
    labels, probabilities = classifier.predict_labels(["abc", "de ab"])
    assert len(labels) == 2 and set(labels) <= set(CLASS_NAMES)
    assert probabilities.shape == (2, 3)
    # The task preset keeps the class names and the tokenizer.
    classifier.save_to_preset(str(tmp_path))
    restored = TextClassifier.from_preset(str(tmp_path))
    assert restored.class_names == CLASS_NAMES
    restored_labels, restored_probabilities = restored.predict_labels(["abc", "de ab"])
    assert restored_labels == labels
    np.testing.assert_allclose(restored_probabilities, probabilities, atol=1e-6)


def test_needs_a_slam_backbone():
    with pytest.raises(ValueError, match="needs a SLAMBackbone"):
        TextClassifier(make_backbone("speech_encoder"), num_classes=2)


def test_pooling_the_encoder_input_known_answer_padding_and_preset(seeded, tmp_path):
    text = TextClassifier(
        make_backbone(), class_names=CLASS_NAMES, pooling="mean_std", pool_encoder_input=True
    )
    backbone, head = text.backbone, text.head
    x = tokens(seeded)
    embedded = backbone.embed_text(x["token_ids"], x["token_padding_mask"])
    both = keras.ops.concatenate(
        [embedded, backbone.shared_encoder(embedded, x["token_padding_mask"])], axis=-1
    )
    logits = test_case.to_numpy(text(x, training=False))
    expected = head(both, x["token_padding_mask"])
    np.testing.assert_allclose(logits, test_case.to_numpy(expected), atol=1e-5)
    test_case.assert_padding_invariant(logits_fn(text), x, {"token_ids": "token_padding_mask"})
    # Zero-shot: the same head over the speech tower's output and the shared encoder's.
    speech = SpeechClassifier.from_text_classifier(text)
    assert speech.pool_encoder_input
    audio = features(seeded)
    tower, mask = backbone.speech_tower(audio["speech_features"], audio["speech_padding_mask"])
    both = keras.ops.concatenate([tower, backbone.shared_encoder(tower, mask)], axis=-1)
    np.testing.assert_allclose(
        test_case.to_numpy(speech(audio, training=False)),
        test_case.to_numpy(head(both, mask)),
        atol=1e-5,
    )
    text.save_to_preset(str(tmp_path))
    restored = TextClassifier.from_preset(str(tmp_path))
    assert restored.pool_encoder_input
    np.testing.assert_allclose(test_case.to_numpy(restored(x, training=False)), logits, atol=1e-5)
    with pytest.raises(ValueError, match="needs the shared encoder"):
        SpeechClassifier(
            make_backbone(), num_classes=2, pool_encoder_input=True, use_shared_encoder=False
        )
