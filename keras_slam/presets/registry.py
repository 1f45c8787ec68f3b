"""Named keras-slam presets, registered with keras-hub.

Each preset is a backbone class and its config, plus metadata: a
description, the paper, the parameter count the paper (or the published
checkpoint) gives, and `weights`: "random" for presets whose weights are not
published (all of them today) or the handle of a published preset
directory. Registration uses keras-hub's `register_presets`, so
`SLAMBackbone.presets` lists them; `from_preset(name)` (through
`loading.PresetMixin`) builds them:

    backbone = SLAMBackbone.from_preset("slam_tiny")   # warns: random weights
    encoder = SpeechEncoder.from_preset("w2v_bert_2_0", load_weights=False)

A task class builds its backbone from the preset and itself around it,
passing on the remaining keyword arguments.
"""

import dataclasses
import warnings

from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_encoder import W2V_BERT_2_CONFIG
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.models.speech_encoder import count_parameters
from keras_slam.presets import loading
from keras_slam.utils.keras_private import register_presets

RANDOM_WEIGHTS = "random"


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
# 4096, 8 heads, depthwise kernel 5 with GroupNorm (PAPERS.md).
_SLAM_600M = dict(
    hidden_dim=1024,
    num_speech_layers=8,
    num_shared_layers=16,
    num_heads=8,
    ffn_dim=4096,
    kernel_size=5,
)

# Test/demo size: runs on a CPU in milliseconds.
_TINY = dict(
    hidden_dim=32,
    num_speech_layers=1,
    num_shared_layers=1,
    num_heads=2,
    ffn_dim=64,
    kernel_size=5,
    subsampling_filters=8,
    conv_norm_groups=4,
)

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
            num_heads=16,
            ffn_dim=5632,
            kernel_size=5,
        ),
        "mSLAM 2B: 8 speech + 32 shared Conformer layers, dim 1408.",
        _MSLAM_PAPER,
        paper_params=1.84e9,
    ),
    "w2v_bert_2_0": PresetSpec(
        SpeechEncoder,
        dict(W2V_BERT_2_CONFIG),
        "The architecture of Meta's w2v-BERT 2.0 (Hugging Face "
        "facebook/w2v-bert-2.0) as a SpeechEncoder: 24 Conformer layers, dim "
        "1024. For its weights, convert the checkpoint with "
        "`keras-slam convert-w2v-bert` or `from_preset('hf://facebook/w2v-bert-2.0')`.",
        "Barrault et al. 2023, Seamless; w2v-BERT: Chung et al. 2021, arXiv 2108.06209",
        paper_params=580e6,
    ),
}


def build(cls, name, load_weights=True, dtype=None, **kwargs):
    """`cls.from_preset(name)` for a named preset.

    Args:
        cls: the calling class: the preset's backbone class (or a base of
            it), or a task whose `backbone_cls` it is.
        name: a key of `PRESETS`.
        load_weights: False skips the published weights (and the warning).
        dtype: dtype policy.
        **kwargs: backbone config overrides, or task arguments.
    """
    spec = PRESETS[name]
    if spec.weights != RANDOM_WEIGHTS:
        return loading.from_preset(cls, spec.weights, load_weights=load_weights, dtype=dtype, **kwargs)
    if load_weights:
        warnings.warn(
            f"preset {name!r} has no published weights: "
            f"{spec.backbone_cls.__name__} is randomly initialised"
        )
    if issubclass(spec.backbone_cls, cls):
        return spec.backbone_cls(**{**spec.config, **kwargs}, dtype=dtype)
    task_backbone = getattr(cls, "backbone_cls", None)
    if task_backbone is not None and issubclass(spec.backbone_cls, task_backbone):
        return cls(backbone=spec.backbone_cls(**spec.config, dtype=dtype), **kwargs)
    raise ValueError(
        f"preset {name!r} is a {spec.backbone_cls.__name__}; {cls.__name__} "
        "cannot be built from it"
    )


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


def _register():
    for backbone_cls in {spec.backbone_cls for spec in PRESETS.values()}:
        # keras-hub requires a handle; ours are resolved by `build`, never
        # by keras-hub's downloader.
        register_presets(
            {
                name: {"metadata": spec.metadata(name), "kaggle_handle": f"keras_slam://{name}"}
                for name, spec in PRESETS.items()
                if spec.backbone_cls is backbone_cls
            },
            backbone_cls,
        )


_register()
