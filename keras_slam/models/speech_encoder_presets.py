"""SpeechEncoder presets (`SpeechEncoder.from_preset(name)`).

`keras_slam.models` registers this table into
`keras_slam.utils.preset_utils`.
"""

from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.utils.preset_utils import PresetSpec

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

backbone_presets = {
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
