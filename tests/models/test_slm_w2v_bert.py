"""SpeechLanguageModel on an imported w2v-BERT 2.0 encoder: a tiny random
Hugging Face `Wav2Vec2BertModel`, converted to a keras-slam preset, is the
frozen encoder (its outputs are the converted encoder's), and the task
preset references it."""

import numpy as np

from keras_slam.models.speech_language_model import SpeechLanguageModel
from keras_slam.presets import hf_w2v_bert
from tests import test_case
from tests.conftest import reset_seeds_and_policy
from tests.models.test_speech_language_model import make_language_model
from tests.presets.test_hf_w2v_bert import hf_config, padded_features, save_hf_model


def test_imported_w2v_bert_is_the_frozen_encoder(tmp_path):
    reset_seeds_and_policy()
    save_hf_model(tmp_path / "hf", hf_config(num_hidden_layers=1), with_ctc=False)
    encoder_preset = hf_w2v_bert.convert_to_preset(tmp_path / "hf", tmp_path / "encoder")
    make_language_model().save_to_preset(str(tmp_path / "lm"))
    slm = SpeechLanguageModel.from_frozen_presets(
        encoder_preset, str(tmp_path / "lm"), adapter=dict(hidden_dim=16, num_layers=0)
    )
    converted = hf_w2v_bert.convert_checkpoint(tmp_path / "hf")
    features, mask = padded_features(np.random.default_rng(0))
    encodings, encodings_mask = slm.frozen_encodings(features, mask)
    expected = converted.encoder({"speech_features": features, "speech_padding_mask": mask})
    real = mask.astype(bool)
    np.testing.assert_allclose(
        test_case.to_numpy(encodings)[real],
        test_case.to_numpy(expected["sequence_output"])[real],
        atol=1e-5,
    )
    np.testing.assert_array_equal(test_case.to_numpy(encodings_mask), mask)
    assert {v.path for v in slm.trainable_variables} == {
        v.path for v in slm.adapter.trainable_variables
    }

    prompt_ids, prompt_mask = slm.tokenize_prompts(["hello", "a cat", "good day to you"])
    generated = slm.generate_token_ids(features, mask, prompt_ids, prompt_mask, 3)
    slm.save_to_preset(str(tmp_path / "slm"), reference_frozen=True)
    assert not (tmp_path / "slm" / "speech_encoder").exists()
    restored = SpeechLanguageModel.from_preset(str(tmp_path / "slm"))
    np.testing.assert_array_equal(
        restored.generate_token_ids(features, mask, prompt_ids, prompt_mask, 3), generated
    )
