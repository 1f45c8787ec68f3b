import json
import os
import pathlib

import keras
import numpy as np
import pytest
import sentencepiece
import tensorflow as tf

from keras_slam.data.tokenizers import (
    MASK_ID,
    PAD_ID,
    RESERVED_TOKENS,
    UNK_ID,
    CharacterTokenizer,
    SentencePieceTokenizer,
    build_character_vocabulary,
    train_sentencepiece,
)

MULTILINGUAL = [
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus München, schöne Bücher über Äpfel.",
    "El niño pequeño comió una piña en España.",
    "Perché è così difficile? Più caffè, per favore.",
    "你好，世界。我们今天学习语音识别。",
    "日本語のテキストも少し。",
]


def as_list(x):
    return np.asarray(keras.ops.convert_to_numpy(x)).tolist()


@pytest.fixture
def character_tokenizer():
    return CharacterTokenizer(build_character_vocabulary(MULTILINGUAL), sequence_length=None)


def test_vocabulary_is_ranked_by_frequency_with_reserved_ids():
    vocabulary = build_character_vocabulary(["aab", "ac", "bé"], min_count=1)
    assert vocabulary[:3] == list(RESERVED_TOKENS)
    # a: 3, b: 2, then ties (count 1) by code point: c < é.
    assert vocabulary[3:] == ["a", "b", "c", "é"]
    assert build_character_vocabulary(["aab", "ac", "bé"], min_count=2)[3:] == [
        "a",
        "b",
    ]
    assert len(build_character_vocabulary(MULTILINGUAL, max_size=10)) == 10
    # Decomposed input (u + combining diaeresis) counts as the composed ü.
    assert "ü" in build_character_vocabulary(["u\u0308"])


def test_round_trip_multilingual(character_tokenizer):
    ids = character_tokenizer.tokenize(MULTILINGUAL)
    for text, row in zip(MULTILINGUAL, ids):
        assert len(row) == len(text)  # one id per character, CJK included
        assert UNK_ID not in row and PAD_ID not in row
        assert [character_tokenizer.id_to_token(i) for i in row] == list(text)
    assert character_tokenizer.detokenize(ids) == MULTILINGUAL
    assert character_tokenizer.detokenize(character_tokenizer.tokenize("Grüße")) == "Grüße"


def test_decomposed_input_is_normalized(character_tokenizer):
    composed = as_list(
        CharacterTokenizer(character_tokenizer.vocabulary, sequence_length=8)("Grüße")
    )
    decomposed = as_list(
        CharacterTokenizer(character_tokenizer.vocabulary, sequence_length=8)("Gru\u0308ße")
    )
    assert composed == decomposed


def test_unknown_characters(character_tokenizer):
    text = "Zoë ∑ Ωmega"
    ids = character_tokenizer.tokenize([text])[0]
    unknown = character_tokenizer.unknown_characters([text, "Ω"])
    assert unknown == {"Z": 1, "ë": 1, "∑": 1, "Ω": 2}
    expected = [UNK_ID if c in unknown else character_tokenizer.token_to_id(c) for c in text]
    assert as_list(ids) == expected
    assert character_tokenizer.detokenize(ids) == "".join(
        "\ufffd" if c in unknown else c for c in text
    )


def test_length_cap_and_dense_padding(character_tokenizer):
    tokenizer = CharacterTokenizer(character_tokenizer.vocabulary, sequence_length=12)
    ids = np.asarray(keras.ops.convert_to_numpy(tokenizer(MULTILINGUAL)))
    assert ids.shape == (len(MULTILINGUAL), 12) and ids.dtype == np.int32
    for text, row in zip(MULTILINGUAL, ids):
        n = min(len(text), 12)
        assert row[:n].tolist() == [tokenizer.token_to_id(c) for c in text[:n]]
        assert np.all(row[n:] == PAD_ID)
    assert tokenizer.detokenize(ids) == [t[:12] for t in MULTILINGUAL]
    assert CharacterTokenizer(character_tokenizer.vocabulary).sequence_length == 512


def test_special_tokens_and_ctc_decode_padding(character_tokenizer):
    assert (character_tokenizer.pad_token_id, character_tokenizer.unk_token_id) == (
        0,
        1,
    )
    assert character_tokenizer.mask_token_id == MASK_ID == 2
    a = character_tokenizer.token_to_id("a")
    # pad, mask and out-of-range ids (the -1 of ctc_decode) read as nothing.
    assert character_tokenizer.detokenize([[a, 0, MASK_ID, a, -1, -1]]) == ["aa"]


def test_inside_tf_data_matches_eager(character_tokenizer):
    tokenizer = CharacterTokenizer(character_tokenizer.vocabulary, sequence_length=16)
    dataset = tf.data.Dataset.from_tensor_slices(MULTILINGUAL).map(tokenizer).batch(3)
    from_data = np.concatenate(list(dataset.as_numpy_iterator()))
    np.testing.assert_array_equal(from_data, keras.ops.convert_to_numpy(tokenizer(MULTILINGUAL)))
    # Ragged ids and detokenization inside a graph too.
    dataset = tf.data.Dataset.from_tensor_slices(MULTILINGUAL).batch(2)
    dataset = dataset.map(character_tokenizer.tokenize).map(character_tokenizer.detokenize)
    texts = [t.decode("utf-8") for batch in dataset.as_numpy_iterator() for t in batch]
    assert texts == MULTILINGUAL


def test_assets_preset_and_serialization(character_tokenizer, tmp_path):
    tokenizer = CharacterTokenizer(character_tokenizer.vocabulary, sequence_length=20)
    expected = as_list(tokenizer(MULTILINGUAL))
    # keras-hub preset layout: tokenizer.json + assets/tokenizer/vocabulary.json
    tokenizer.save_to_preset(str(tmp_path))
    asset = tmp_path / "assets" / "tokenizer" / "vocabulary.json"
    assert json.loads(asset.read_text(encoding="utf-8")) == tokenizer.vocabulary
    config = json.loads((tmp_path / "tokenizer.json").read_text())
    config["config"]["vocabulary"] = None  # the asset alone must suffice
    restored = keras.saving.deserialize_keras_object(config)
    restored.load_preset_assets(str(tmp_path))
    assert as_list(restored(MULTILINGUAL)) == expected
    # get_config / from_config (vocabulary travels in the config).
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(tokenizer))
    assert type(clone) is CharacterTokenizer and as_list(clone(MULTILINGUAL)) == expected
    # .keras archive inside a model.
    inputs = keras.Input(shape=(), dtype="string")
    model = keras.Model(inputs, tokenizer(inputs))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert as_list(loaded.layers[-1](MULTILINGUAL)) == expected


def test_rejects_bad_vocabularies():
    with pytest.raises(ValueError, match="start with"):
        CharacterTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="single characters"):
        CharacterTokenizer(list(RESERVED_TOKENS) + ["ab"])
    with pytest.raises(ValueError, match="no vocabulary"):
        CharacterTokenizer().tokenize("a")


# --- SentencePiece ----------------------------------------------------------

SP_CORPUS = MULTILINGUAL * 20


@pytest.fixture(scope="module")
def proto():
    return train_sentencepiece(SP_CORPUS, vocab_size=80, character_coverage=1.0)


def test_sentencepiece_reserved_ids(proto):
    processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
    assert [processor.id_to_piece(i) for i in range(3)] == list(RESERVED_TOKENS)
    assert processor.pad_id() == PAD_ID and processor.unk_id() == UNK_ID
    tokenizer = SentencePieceTokenizer(proto=proto)
    assert tokenizer.pad_token_id == PAD_ID
    assert tokenizer.unk_token_id == UNK_ID
    assert tokenizer.mask_token_id == MASK_ID
    # <mask> is a control symbol: never produced from text.
    assert MASK_ID not in [i for ids in processor.encode(MULTILINGUAL + ["<mask>"]) for i in ids]


def test_sentencepiece_matches_library(proto, tmp_path):
    processor = sentencepiece.SentencePieceProcessor(model_proto=proto)
    texts = MULTILINGUAL + ["unseen words ÿ 🙂"]
    expected = processor.encode(texts)
    tokenizer = SentencePieceTokenizer(proto=proto)
    assert [as_list(row) for row in tokenizer.tokenize(texts)] == expected
    assert tokenizer.detokenize(expected) == processor.decode(expected)
    # In tf.data (the TensorFlow path), with a fixed length.
    dense = SentencePieceTokenizer(proto=proto, sequence_length=24)
    batches = tf.data.Dataset.from_tensor_slices(texts).batch(4).map(dense)
    rows = np.concatenate(list(batches.as_numpy_iterator()))
    for row, ids in zip(rows, expected):
        assert row.tolist() == (ids + [PAD_ID] * 24)[:24]
    # From a model file.
    path = tmp_path / "model.spm"
    path.write_bytes(proto)
    assert as_list(SentencePieceTokenizer(proto=str(path)).tokenize(texts[0])) == expected[0]


def test_sentencepiece_from_files_and_preset(proto, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SP_CORPUS), encoding="utf-8")
    from_file = train_sentencepiece(pathlib.Path(corpus), vocab_size=80, character_coverage=1.0)
    assert from_file == train_sentencepiece([str(corpus)], vocab_size=80, character_coverage=1.0)
    tokenizer = SentencePieceTokenizer(proto=from_file, sequence_length=16)
    tokenizer.save_to_preset(str(tmp_path / "preset"))
    config = json.loads((tmp_path / "preset" / "tokenizer.json").read_text())
    restored = keras.saving.deserialize_keras_object(config)
    restored.load_preset_assets(str(tmp_path / "preset"))
    assert type(restored) is SentencePieceTokenizer
    assert as_list(restored(MULTILINGUAL)) == as_list(tokenizer(MULTILINGUAL))


def test_sentencepiece_rejects_models_without_reserved_ids():
    import io

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SP_CORPUS), model_writer=model, vocab_size=80
    )
    with pytest.raises(ValueError, match="special token|reserve ids"):
        SentencePieceTokenizer(proto=model.getvalue())
