"""Text tokenizers: SentencePiece (SLAM) and characters (mSLAM).

Both are keras-hub tokenizers: they run inside `tf.data` (TensorFlow ops)
and eagerly on every Keras backend, detokenize, and save their vocabulary as
a keras-hub asset so `save_to_preset` / `from_preset` carry it.

Reserved ids, the same for both:

    0  "<pad>"   padding; also the CTC blank class (`keras_slam.objectives.ctc`):
                 a pad id never occurs among real labels.
    1  "<unk>"   anything outside the vocabulary.
    2  "<mask>"  the MLM / span-masking replacement token.

A CTC head therefore has `tokenizer.vocabulary_size()` output classes with
class 0 as the blank.
"""

import collections
import io
import json
import os
import unicodedata

import keras
import keras_hub
import sentencepiece
import tensorflow as tf
import tensorflow_text as tf_text

from keras_slam.utils.keras_private import convert_to_ragged_batch, preprocessing_function

PAD_TOKEN, UNK_TOKEN, MASK_TOKEN = "<pad>", "<unk>", "<mask>"
RESERVED_TOKENS = (PAD_TOKEN, UNK_TOKEN, MASK_TOKEN)
PAD_ID, UNK_ID, MASK_ID = 0, 1, 2
CTC_BLANK_ID = PAD_ID
CHARACTER_VOCABULARY_FILENAME = "vocabulary.json"
# What an unknown id reads as after detokenization (U+FFFD REPLACEMENT).
UNK_TEXT = "\ufffd"


def _special_tokens(tokenizer):
    for token, name in zip(RESERVED_TOKENS, ("pad_token", "unk_token", "mask_token")):
        tokenizer._add_special_token(token, name)


# --- SentencePiece ----------------------------------------------------------


def train_sentencepiece(
    texts_or_files,
    vocab_size=32000,
    model_type="unigram",
    character_coverage=0.9995,
    **trainer_kwargs,
):
    """Trains a SentencePiece model with the reserved ids above, in memory.

    Args:
        texts_or_files: a path (str or os.PathLike), a list of paths (each a
            `pathlib.Path` or a string naming an existing file), or any other
            iterable of sentences (str).
        vocab_size: pieces in the model, reserved tokens included (SLAM: 32k).
        model_type: "unigram", "bpe", "char" or "word".
        character_coverage: share of characters the model must cover.
        **trainer_kwargs: passed to `sentencepiece.SentencePieceTrainer.train`.

    Returns:
        The serialized model proto (bytes) for `SentencePieceTokenizer`.
    """
    options = {
        "vocab_size": vocab_size,
        "model_type": model_type,
        "character_coverage": character_coverage,
        "pad_id": PAD_ID,
        "unk_id": UNK_ID,
        "bos_id": -1,
        "eos_id": -1,
        "pad_piece": PAD_TOKEN,
        "unk_piece": UNK_TOKEN,
        # A control symbol: never produced from text, only inserted by MLM.
        "control_symbols": [MASK_TOKEN],
    }
    options.update(trainer_kwargs)
    files = _as_files(texts_or_files)
    model = io.BytesIO()
    if files is not None:
        sentencepiece.SentencePieceTrainer.train(input=files, model_writer=model, **options)
    else:
        sentence_iterator = (str(text) for text in texts_or_files)
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=sentence_iterator, model_writer=model, **options
        )
    return model.getvalue()


def _as_files(texts_or_files):
    """The file paths in `texts_or_files`, or None when it holds sentences."""
    if isinstance(texts_or_files, (str, os.PathLike)):
        return [os.fspath(texts_or_files)]
    if (
        isinstance(texts_or_files, (list, tuple))
        and texts_or_files
        and all(
            isinstance(item, os.PathLike) or (isinstance(item, str) and os.path.isfile(item))
            for item in texts_or_files
        )
    ):
        return [os.fspath(item) for item in texts_or_files]
    return None


@keras.saving.register_keras_serializable(package="keras_slam")
class SentencePieceTokenizer(keras_hub.tokenizers.SentencePieceTokenizer):
    """keras-hub's SentencePiece tokenizer with the SLAM reserved tokens.

    Expects a model from `train_sentencepiece` (ids 0/1/2 = pad/unk/mask);
    exposes `pad_token_id`, `unk_token_id`, `mask_token_id`. With
    `sequence_length` set, outputs are dense (B, sequence_length) int32,
    truncated and right-padded with the pad id; otherwise ragged.

    Args:
        proto: model file path or serialized proto bytes.
        sequence_length: optional fixed output length.
    """

    def __init__(self, proto=None, sequence_length=None, **kwargs):
        _special_tokens(self)
        super().__init__(proto=proto, sequence_length=sequence_length, **kwargs)

    def set_proto(self, proto):
        super().set_proto(proto)
        if self.proto is not None and self.get_vocabulary()[:3] != list(RESERVED_TOKENS):
            raise ValueError(
                f"SentencePiece model must reserve ids 0, 1, 2 for {RESERVED_TOKENS} "
                f"(use `train_sentencepiece`); got {self.get_vocabulary()[:3]}."
            )


# --- Characters --------------------------------------------------------------


def normalize_text(text, normalization_form="NFC"):
    """Unicode normalization applied before counting and tokenizing."""
    return unicodedata.normalize(normalization_form, text) if normalization_form else text


def build_character_vocabulary(texts, max_size=4096, min_count=1, normalization_form="NFC"):
    """Ranks a corpus' characters by frequency into a tokenizer vocabulary.

    Args:
        texts: iterable of str.
        max_size: vocabulary size including the 3 reserved tokens (mSLAM:
            4096 over 101 languages).
        min_count: characters seen fewer times are left out (they become
            `<unk>`).
        normalization_form: Unicode form applied first ("NFC", "NFKC", ...,
            or None); use the tokenizer's.

    Returns:
        list of str: the reserved tokens, then characters by decreasing
        count (ties by code point, so the result is deterministic).
    """
    counts = collections.Counter()
    for text in texts:
        counts.update(normalize_text(text, normalization_form))
    ranked = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
    return list(RESERVED_TOKENS) + ranked[: max(max_size - len(RESERVED_TOKENS), 0)]


@keras.saving.register_keras_serializable(package="keras_slam")
class CharacterTokenizer(keras_hub.tokenizers.Tokenizer):
    """One id per Unicode character, from a frequency-ranked vocabulary.

    Tokenization is TensorFlow ops (normalize_utf8, unicode_split, a
    StaticHashTable), so it maps over `tf.data`; eager calls on any backend
    return backend tensors (dense) or Python lists (ragged, strings).
    Characters outside the vocabulary map to `<unk>` (id 1);
    `unknown_characters` lists them. Detokenization drops pad, mask and any
    id outside the vocabulary (e.g. the -1 padding of `ctc_decode`) and
    writes `<unk>` as U+FFFD.

    Args:
        vocabulary: list of str, the reserved tokens at ids 0-2 then single
            characters (see `build_character_vocabulary`), or a path to a
            JSON list.
        sequence_length: cap on the tokens per text (mSLAM: 512). When set,
            `tokenize` returns dense int (B, sequence_length) right-padded
            with 0; None returns ragged, uncapped ids.
        normalization_form: Unicode form applied before lookup (match the
            one used to build the vocabulary).
        dtype: output id dtype.
    """

    def __init__(
        self,
        vocabulary=None,
        sequence_length=512,
        normalization_form="NFC",
        dtype="int32",
        **kwargs,
    ):
        super().__init__(dtype=dtype, **kwargs)
        self.sequence_length = sequence_length
        self.normalization_form = normalization_form
        self.file_assets = [CHARACTER_VOCABULARY_FILENAME]
        _special_tokens(self)
        self.set_vocabulary(vocabulary)

    def set_vocabulary(self, vocabulary):
        if vocabulary is None:
            self.vocabulary = None
            return
        if isinstance(vocabulary, str):
            with open(vocabulary, encoding="utf-8") as file:
                vocabulary = json.load(file)
        vocabulary = list(vocabulary)
        if vocabulary[: len(RESERVED_TOKENS)] != list(RESERVED_TOKENS):
            raise ValueError(f"vocabulary must start with {RESERVED_TOKENS}, got {vocabulary[:3]}")
        characters = vocabulary[len(RESERVED_TOKENS) :]
        bad = [c for c in characters if len(c) != 1]
        if bad or len(set(characters)) != len(characters):
            raise ValueError(
                "vocabulary entries after the reserved tokens must be distinct "
                f"single characters; offending entries: {bad[:10] or 'duplicates'}"
            )
        self.vocabulary = vocabulary
        self._token_to_id = {token: i for i, token in enumerate(vocabulary)}
        ids = tf.range(len(RESERVED_TOKENS), len(vocabulary), dtype="int64")
        self._lookup = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(characters, tf.string), ids, tf.string, tf.int64
            ),
            default_value=UNK_ID,
        )
        readable = ["", UNK_TEXT, ""] + characters
        self._id_to_text = tf.constant(readable, tf.string)
        self._update_special_token_ids()

    def _check_vocabulary(self):
        if self.vocabulary is None:
            raise ValueError(
                "CharacterTokenizer has no vocabulary: pass `vocabulary=` "
                "(see `build_character_vocabulary`) or load assets."
            )

    def get_vocabulary(self):
        self._check_vocabulary()
        return list(self.vocabulary)

    def vocabulary_size(self):
        self._check_vocabulary()
        return len(self.vocabulary)

    def id_to_token(self, id):
        self._check_vocabulary()
        if not 0 <= id < len(self.vocabulary):
            raise ValueError(f"id must be in [0, {len(self.vocabulary) - 1}], got {id}")
        return self.vocabulary[id]

    def token_to_id(self, token):
        """Id of a character or reserved token (unknown ones give unk)."""
        self._check_vocabulary()
        return self._token_to_id.get(token, UNK_ID)

    def unknown_characters(self, texts):
        """Counter of the characters in `texts` that map to `<unk>`."""
        self._check_vocabulary()
        counts = collections.Counter()
        for text in texts:
            normalized = normalize_text(text, self.normalization_form)
            counts.update(c for c in normalized if c not in self._token_to_id)
        return counts

    @preprocessing_function
    def tokenize(self, inputs):
        """str or (B,) strings -> ids; dense (B, sequence_length) if capped."""
        self._check_vocabulary()
        inputs = tf.convert_to_tensor(inputs, tf.string)
        unbatched = inputs.shape.rank == 0
        if unbatched:
            inputs = tf.expand_dims(inputs, 0)
        if self.normalization_form:
            inputs = tf_text.normalize_utf8(inputs, self.normalization_form)
        characters = tf.strings.unicode_split(inputs, "UTF-8", errors="replace")
        ids = tf.ragged.map_flat_values(self._lookup.lookup, characters)
        ids = tf.cast(ids, self.compute_dtype)
        if self.sequence_length:
            ids = ids[:, : self.sequence_length].to_tensor(
                default_value=PAD_ID, shape=[None, self.sequence_length]
            )
        if unbatched:
            ids = ids[0]
        return ids

    @preprocessing_function
    def detokenize(self, inputs):
        """ids (T,) or (B, T), dense or ragged -> str or (B,) strings."""
        self._check_vocabulary()
        if not isinstance(inputs, (tf.Tensor, tf.RaggedTensor)):
            inputs = tf.convert_to_tensor(keras.ops.convert_to_numpy(inputs))
        ids, unbatched, _ = convert_to_ragged_batch(inputs)
        ids = tf.cast(ids, "int32")
        in_range = tf.logical_and(ids >= 0, ids < len(self.vocabulary))
        ids = tf.where(in_range, ids, PAD_ID)
        texts = tf.strings.reduce_join(
            tf.ragged.map_flat_values(tf.gather, self._id_to_text, ids), axis=-1
        )
        if unbatched:
            texts = texts[0]
        return texts

    def compute_output_spec(self, input_spec):
        return keras.KerasTensor(
            input_spec.shape + (self.sequence_length,), dtype=self.compute_dtype
        )

    def save_assets(self, dir_path):
        with open(
            os.path.join(dir_path, CHARACTER_VOCABULARY_FILENAME), "w", encoding="utf-8"
        ) as file:
            json.dump(self.vocabulary, file, ensure_ascii=False)

    def load_assets(self, dir_path):
        self.set_vocabulary(os.path.join(dir_path, CHARACTER_VOCABULARY_FILENAME))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                # At most a few thousand characters: small enough to keep in
                # the config, so from_config works without the asset file.
                "vocabulary": self.vocabulary,
                "sequence_length": self.sequence_length,
                "normalization_form": self.normalization_form,
            }
        )
        return config
