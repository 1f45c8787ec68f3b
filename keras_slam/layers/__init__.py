"""Backend-agnostic building blocks (keras.ops only)."""

from keras_slam.layers.attention import RelativePositionAttention
from keras_slam.layers.conformer import (
    ConformerBlock,
    ConformerConfig,
    ConformerConvolution,
    ConformerEncoder,
    ConformerFeedForward,
    MaskedGroupNormalization,
)
from keras_slam.layers.conv_subsampling import ConvSubsampling
from keras_slam.layers.log_mel import W2V_BERT_2_0_FRONTEND, LogMelSpectrogram
from keras_slam.layers.masking import MaskEmbedding, SpanMasking, compute_span_mask
from keras_slam.layers.pooling import ClassificationHead, SequencePooling
from keras_slam.layers.quantizers import GumbelVectorQuantizer, RandomProjectionQuantizer
from keras_slam.layers.spec_augment import SpecAugment
