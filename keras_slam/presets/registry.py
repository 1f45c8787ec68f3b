"""Named keras-slam presets, registered into `keras_slam.utils.preset_utils`.

Each preset is a backbone class and its config, plus metadata: a
description, the paper, the parameter count the paper (or the published
checkpoint) gives, and `weights`: "random" for presets whose weights are not
published (all of them today) or the handle of a published preset
directory. Registration (on import; `import keras_slam.models` imports this
module) also lists them in keras-hub, so `SLAMBackbone.presets` shows them;
`from_preset(name)` builds them (`preset_utils.from_preset`):

    backbone = SLAMBackbone.from_preset("slam_tiny")   # warns: random weights
    encoder = SpeechEncoder.from_preset("w2v_bert_2_0", load_weights=False)

A task class builds its backbone from the preset and itself around it,
passing on the remaining keyword arguments.
"""

import dataclasses

from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.models.speech_encoder import count_parameters
from keras_slam.utils.preset_utils import RANDOM_WEIGHTS
from keras_slam.utils.preset_utils import register_named_presets


@dataclasses.dataclass(frozen=True)
class PresetSpec:
    """A named preset: `backbone_cls(**config)` and what it is."""

    backbone_cls: type
    config: dict
    description: str
    paper: str
    paper_params: float | None = None
    weights: str = RANDOM_WEIGHTS

    def metadata(self, name):
        """keras-hub's preset metadata, plus paper and weights.

        "params" is the paper's count (None for test sizes); computing ours
        builds the model, so `parameter_count()` does it on demand.
        """
        return {
            "description": self.description,
            "params": self.paper_params,
            "path": name,
            "paper": self.paper,
            "weights": self.weights,
        }

    def parameter_count(self):
        """Parameters of the built backbone, counted without allocating weights."""
        return count_parameters(self.backbone_cls, **self.config)


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

# Hugging Face `facebook/w2v-bert-2.0` (Wav2Vec2Bert): 160-dim stacked
# log-mel frames, 24 causal-conv Conformer layers with clipped relative keys.
_W2V_BERT_2_0 = dict(
    hidden_dim=1024,
    num_layers=24,
    feature_dim=160,
    front_end="stacked_features",
    conformer=ConformerConfig(
        num_heads=16,
        ffn_dim=4096,
        kernel_size=31,
        conv_padding="causal",
        conv_norm="layer",
        pointwise_bias=False,
        position_encoding="relative_key",
    ),
)

# The model configs of the presets and of the paper recipes
# (`recipes/slam.py` reads them here): name -> what `from_preset` builds.
PRESETS = {
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
        "mSLAM 600M: the SLAM 600M layout with a 4096-character vocabulary "
        "over 101 languages.",
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
    "w2v_bert_2_0": PresetSpec(
        SpeechEncoder,
        _W2V_BERT_2_0,
        "The architecture of Meta's w2v-BERT 2.0 (Hugging Face "
        "facebook/w2v-bert-2.0) as a SpeechEncoder: 24 Conformer layers, dim "
        "1024. For its weights, convert the checkpoint with "
        "`keras-slam convert-w2v-bert` or `from_preset('hf://facebook/w2v-bert-2.0')`.",
        "Barrault et al. 2023, Seamless; w2v-BERT: Chung et al. 2021, arXiv 2108.06209",
        paper_params=580e6,
    ),
}


def parameter_counts():
    """{name: (our count, the paper's count or None)}, no weight allocated."""
    return {name: (spec.parameter_count(), spec.paper_params) for name, spec in PRESETS.items()}


def format_parameter_counts():
    """A table of every preset's parameter count, ours beside the paper's."""
    lines = [f"{'preset':<14} {'class':<14} {'parameters':>15} {'paper':>9}  weights"]
    for name, spec in PRESETS.items():
        count = spec.parameter_count()
        paper = "" if spec.paper_params is None else f"{spec.paper_params / 1e9:.2f}B"
        lines.append(
            f"{name:<14} {spec.backbone_cls.__name__:<14} {count:>15,} {paper:>9}  {spec.weights}"
        )
    return "\n".join(lines)


register_named_presets(PRESETS)
