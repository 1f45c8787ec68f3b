"""Translations through the writer and the speech pipeline: `translation_ids`."""

import numpy as np
import pytest
import tensorflow as tf

from keras_slam.data import pipeline, writers
from keras_slam.layers.log_mel import LogMelSpectrogram

RECORDS = [  # id, language, transcript, translation, target language
    ("a", "de", "Bitte warten.", "Please wait.", "en"),
    ("b", "fr", "Le fichier est enregistré.", "The file was saved.", "en"),
    ("c", "en", "Try it again later.", "Versuche es später erneut.", "de"),
    ("d", "en", "No translation here.", "", ""),
    ("e", "es", "¿Dónde está?", "Where is it?", "en"),
]
TARGET_LANGUAGES = ["de", "en"]


def characters(strings):
    """Target-side tokenizer stand-in: UTF-8 code points."""
    return tf.strings.unicode_decode(strings, "UTF-8")


def write_records(folder, rng, records=RECORDS):
    items = [
        {
            "id": id,
            "pcm": rng.integers(-3000, 3000, size=int(rng.uniform(0.2, 0.9) * 16000)).astype(
                "int16"
            ),
            "language": language,
            "transcript": transcript,
            "translation": translation,
            "target_language": target,
        }
        for id, language, transcript, translation, target in records
    ]
    writers.write_shards(items, str(folder), num_shards=2, progress=False)
    return pipeline.list_shards(str(folder))


def dataset(files, **options):
    return pipeline.speech_dataset(
        files,
        LogMelSpectrogram(),
        pipeline.Buckets((0.5, 1.0), 2),
        translation_tokenizer=characters,
        max_translation_length=32,
        target_languages=TARGET_LANGUAGES,
        **options,
    )


def test_translation_ids_decode_back_to_the_translation(tmp_path, seeded):
    files = write_records(tmp_path / "shards", seeded)
    translations = {translation: target for _, _, _, translation, target in RECORDS if translation}
    seen = []
    for batch in dataset(files).as_numpy_iterator():
        ids, mask = batch["translation_ids"], batch["translation_padding_mask"]
        assert (
            ids.shape == mask.shape == (2, 32)
            and ids.dtype == np.int32
            and mask.dtype == np.float32
        )
        for row in range(2):
            length = int(mask[row].sum())
            if length == 0:  # a padding row
                assert batch["target_language"][row] == -1 and not ids[row].any()
                continue
            assert mask[row, :length].all() and not ids[row, length:].any()
            text = tf.strings.unicode_encode(ids[row, :length], "UTF-8").numpy().decode("utf-8")
            seen.append(text)
            assert TARGET_LANGUAGES[batch["target_language"][row]] == translations[text]
    assert sorted(seen) == sorted(translations)  # the record without a translation is left out


def test_translation_with_transcript_tokens_and_too_long_translations(tmp_path, seeded):
    files = write_records(tmp_path / "shards", seeded)
    batches = list(
        pipeline.speech_dataset(
            files,
            LogMelSpectrogram(),
            pipeline.Buckets((1.0,), 8),
            tokenizer=characters,
            max_token_length=40,
            paired=True,
            translation_tokenizer=characters,
            max_translation_length=14,
            too_long="skip",
        ).as_numpy_iterator()
    )
    kept = {
        tf.strings.unicode_encode(row[row > 0], "UTF-8").numpy().decode("utf-8")
        for batch in batches
        for row in batch["token_ids"]
        if row.any()
    }
    assert kept == {
        "Bitte warten.",
        "¿Dónde está?",
    }  # the others' translations exceed 14 characters
    too_long = pipeline.speech_dataset(
        files,
        LogMelSpectrogram(),
        pipeline.Buckets((1.0,), 8),
        translation_tokenizer=characters,
        max_translation_length=14,
    )
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"does not fit the last bucket.*translation tokens \(if any\)\] \[(19|26)\] \[limit\] \[14\]",
    ):
        list(too_long.as_numpy_iterator())
    with pytest.raises(ValueError, match="translation_tokenizer needs max_translation_length"):
        pipeline.speech_dataset(
            files,
            LogMelSpectrogram(),
            pipeline.Buckets((1.0,), 8),
            translation_tokenizer=characters,
        )
