"""Error rates, BLEU and codebook usage."""

from keras_slam.metrics.bleu import bleu_by_language, corpus_bleu
from keras_slam.metrics.codebook import CodebookUsage
from keras_slam.metrics.error_rates import (
    character_error_rate,
    error_rates_by_language,
    word_error_rate,
)
