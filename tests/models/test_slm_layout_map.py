"""SpeechLanguageModel layout map: every matrix of the SLM (frozen speech
encoder, adapter, frozen keras-hub LM) has exactly one layout."""

import keras
import keras_hub
import pytest

from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_language_model import SpeechLanguageModel
from tests.conftest import reset_seeds_and_policy
from tests.models.distribution_worker import BACKBONE
from tests.models.test_slm_families import make_llama
from tests.models.test_slm_seq2seq import make_bart
from tests.models.test_speech_language_model import make_language_model, make_speech_encoder

ADAPTER = dict(hidden_dim=16, stack_frames=2, num_layers=1, num_heads=2)


def gemma_slm():
    return SpeechLanguageModel(make_speech_encoder(), make_language_model(), adapter=ADAPTER)


def llama_slm():
    return SpeechLanguageModel(SLAMBackbone(**BACKBONE), make_llama(), adapter=ADAPTER)


@pytest.mark.parametrize("build", [gemma_slm, llama_slm])
def test_every_slm_matrix_has_one_layout(build):
    reset_seeds_and_policy()
    slm = build()
    devices = [f"cpu:{i}" for i in range(8)]
    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
    layout_map = SpeechLanguageModel.get_layout_map(mesh, type(slm.language_model.backbone))
    for weight in slm.weights:
        # Keras' own lookup: raises when two rules match one path.
        layout = layout_map[weight.path]
        if len(weight.shape) >= 2:
            assert layout is not None, f"{weight.path} {weight.shape} has no layout"
            assert len(layout.axes) == len(weight.shape), weight.path
    # The LM's own keras-hub rules, the adapter's and the speech encoder's.
    lm_map = type(slm.language_model.backbone).get_layout_map(mesh)
    assert (
        layout_map["token_embedding/embeddings"].axes == lm_map["token_embedding/embeddings"].axes
    )
    query = "adapter/transformer_layer_0/self_attention_layer/query/kernel"
    assert layout_map[query].axes == ("batch", "model", None)
    assert layout_map["adapter/output_projection/kernel"].axes == ("batch", "model")


def test_slm_layout_map_of_an_lm_without_a_keras_hub_map():
    """BART has no keras-hub map: its weights are replicated unless a SLAM
    rule names them, and no rule of the wrong rank applies."""
    reset_seeds_and_policy()
    slm = SpeechLanguageModel(make_speech_encoder(), make_bart(), adapter=ADAPTER)
    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), [f"cpu:{i}" for i in range(8)])
    layout_map = SpeechLanguageModel.get_layout_map(mesh, keras_hub.models.BartBackbone)
    for weight in slm.weights:
        layout = layout_map[weight.path]
        assert layout is None or len(layout.axes) == len(weight.shape), weight.path
    assert layout_map["adapter/input_projection/kernel"].axes == ("batch", "model")
