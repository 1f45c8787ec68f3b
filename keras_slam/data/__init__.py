"""TFRecord schema, writers, tf.data pipelines and tokenizers."""

from keras_slam.data.pipeline import (
    Buckets,
    list_shards,
    mix_streams,
    read_records,
    speech_dataset,
    text_dataset,
)
from keras_slam.data.tokenizers import (
    CharacterTokenizer,
    SentencePieceTokenizer,
    build_character_vocabulary,
    train_sentencepiece,
)
from keras_slam.data.writers import write_shards
