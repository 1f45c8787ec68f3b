"""SLAM / mSLAM backbone presets (`SLAMBackbone.from_preset(name)`).

The model configs of the paper recipes too: `recipes/slam.py` reads them
here. `keras_slam.models` registers this table into
`keras_slam.utils.preset_utils`.
"""

from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.utils.preset_utils import PresetSpec

_SLAM_PAPER = "Bapna et al. 2021, SLAM, arXiv 2110.10329"
_MSLAM_PAPER = "Bapna et al. 2022, mSLAM, arXiv 2202.01374"

# SLAM / mSLAM 600M: dim 1024, 8 speech + 16 shared Conformer layers, FFN
# 4096, 8 heads, depthwise kernel 5 with GroupNorm (PAPERS.md; the
# `ConformerConfig` defaults are SLAM's block).
_SLAM_600M = dict(
    hidden_dim=1024,
    num_speech_layers=8,
    num_shared_layers=16,
    conformer=ConformerConfig(num_heads=8, ffn_dim=4096),
)

# Test/demo size: runs on a CPU in milliseconds.
_TINY = dict(
    hidden_dim=32,
    num_speech_layers=1,
    num_shared_layers=1,
    subsampling_filters=8,
    conformer=ConformerConfig(num_heads=2, ffn_dim=64, conv_norm_groups=4),
)

backbone_presets = {
    "slam_tiny": PresetSpec(
        SLAMBackbone,
        dict(vocabulary_size=128, **_TINY),
        "Tiny SLAM backbone (dim 32, 1 speech + 1 shared layer) for tests and demos.",
        _SLAM_PAPER,
    ),
    "mslam_tiny": PresetSpec(
        SLAMBackbone,
        dict(vocabulary_size=96, **_TINY),
        "Tiny mSLAM backbone (character vocabulary of 96) for tests and demos.",
        _MSLAM_PAPER,
    ),
    "slam_600m": PresetSpec(
        SLAMBackbone,
        dict(vocabulary_size=32000, **_SLAM_600M),
        "SLAM 600M: 8 speech + 16 shared Conformer layers, dim 1024, "
        "SentencePiece 32k text vocabulary.",
        _SLAM_PAPER,
        paper_params=0.6e9,
    ),
    "mslam_600m": PresetSpec(
        SLAMBackbone,
        dict(vocabulary_size=4096, **_SLAM_600M),
        "mSLAM 600M: the SLAM 600M layout with a 4096-character vocabulary over 101 languages.",
        _MSLAM_PAPER,
        paper_params=0.6e9,
    ),
    "mslam_2b": PresetSpec(
        SLAMBackbone,
        dict(
            vocabulary_size=4096,
            hidden_dim=1408,
            num_speech_layers=8,
            num_shared_layers=32,
            conformer=ConformerConfig(num_heads=16, ffn_dim=4 * 1408),
        ),
        "mSLAM 2B: 8 speech + 32 shared Conformer layers, dim 1408.",
        _MSLAM_PAPER,
        paper_params=1.84e9,
    ),
}
