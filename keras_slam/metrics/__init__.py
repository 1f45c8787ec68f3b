"""Error rates, BLEU, codebook usage and classification metrics."""

from keras_slam.metrics.bleu import bleu_by_language, corpus_bleu
from keras_slam.metrics.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    plot_confusion_matrix,
)
from keras_slam.metrics.codebook import CodebookUsage
from keras_slam.metrics.error_rates import (
    character_error_rate,
    error_rates_by_language,
    word_error_rate,
)
