"""SpeechLanguageModel on each keras-hub decoder-only family besides Gemma
(tiny random-weight LMs built here): only the adapter trains, the loss is
that of the response tokens of the item alone, cached greedy generation
equals uncached argmax decoding."""

import functools

import keras
import keras_hub
import numpy as np
import pytest

from keras_slam.data.tokenizers import train_sentencepiece
from keras_slam.models.speech_language_model import SpeechLanguageModel, split_instruction_batch
from keras_slam.optimizers import FiniteMean
from recipes.lm import GEMMA_PIECES
from tests import test_case
from tests.conftest import reset_seeds_and_policy
from tests.models.test_speech_language_model import (
    TEXTS,
    _greedy_reference,
    _reference_log_likelihoods,
    assert_decoder_is_the_backbone,
    batch,
    make_speech_encoder,
)

LLAMA_PIECES = dict(GEMMA_PIECES, eos_piece="</s>", bos_piece="<s>")
DECODER = dict(num_layers=1, hidden_dim=16, intermediate_dim=32)


def byte_level_vocabulary():
    """GPT-2 / Qwen style BPE: "<|endoftext|>" (id 0, also pad), the
    characters of TEXTS (space as "Ġ"), one merge."""
    characters = sorted({"Ġ" if c == " " else c for c in "".join(TEXTS)})
    tokens = ["<|endoftext|>", *characters, "th"]
    return {token: i for i, token in enumerate(tokens)}, ["t h"]


def causal_lm(family, tokenizer, **backbone_args):
    """keras_hub.models.<family>CausalLM of a tiny random-weight backbone."""
    backbone = getattr(keras_hub.models, f"{family}Backbone")(
        vocabulary_size=tokenizer.vocabulary_size(), **DECODER, **backbone_args
    )
    preprocessor = getattr(keras_hub.models, f"{family}CausalLMPreprocessor")(
        tokenizer, sequence_length=16
    )
    return getattr(keras_hub.models, f"{family}CausalLM")(
        backbone=backbone, preprocessor=preprocessor
    )


def make_llama():
    proto = train_sentencepiece(
        TEXTS, vocab_size=32, model_type="char", control_symbols=[], **LLAMA_PIECES
    )
    tokenizer = keras_hub.models.LlamaTokenizer(proto=proto)
    return causal_lm("Llama", tokenizer, num_query_heads=2, num_key_value_heads=1)


def make_qwen():
    tokenizer = keras_hub.models.QwenTokenizer(*byte_level_vocabulary())
    return causal_lm("Qwen", tokenizer, num_query_heads=2, num_key_value_heads=1)


def make_gpt2():
    tokenizer = keras_hub.models.GPT2Tokenizer(*byte_level_vocabulary())
    return causal_lm("GPT2", tokenizer, num_heads=2, dropout=0.0, max_sequence_length=128)


FAMILIES = {"llama": make_llama, "qwen": make_qwen, "gpt2": make_gpt2}


def slm_with(make_lm):
    """An SLM of the tiny speech encoder and `make_lm()` (adapter: stacking + projection)."""
    reset_seeds_and_policy()
    return SpeechLanguageModel(
        make_speech_encoder(), make_lm(), adapter=dict(hidden_dim=16, stack_frames=2, num_layers=0)
    )


@functools.cache
def family_slm(family):
    return slm_with(FAMILIES[family])


@pytest.mark.parametrize("family", FAMILIES)
def test_response_loss_and_greedy_generation(family):
    slm = family_slm(family)
    assert_decoder_is_the_backbone(slm)
    inputs = batch(slm)
    x, y = split_instruction_batch(inputs)
    loss = float(test_case.to_numpy(slm.compute_loss(x, y, slm(x))))
    reference = np.concatenate([_reference_log_likelihoods(slm, inputs, i) for i in range(3)])
    np.testing.assert_allclose(loss, -reference.mean(), rtol=1e-5)

    args = [inputs[k] for k in PROMPT_ARGUMENTS]
    first = slm.generate_token_ids(*args, max_new_tokens=4)
    np.testing.assert_array_equal(first, slm.generate_token_ids(*args, max_new_tokens=4))
    pad_id = slm.language_model.preprocessor.tokenizer.pad_token_id
    for i in range(len(first)):
        expected = _greedy_reference(slm, inputs, i, 4)
        expected += [pad_id] * (4 - len(expected))  # after the end token
        assert first[i].tolist() == expected, i


PROMPT_ARGUMENTS = (
    "speech_features",
    "speech_padding_mask",
    "prompt_token_ids",
    "prompt_padding_mask",
)


@pytest.mark.parametrize("family", FAMILIES)
def test_only_adapter_trains(family):
    check_only_adapter_trains(family_slm(family))


def check_only_adapter_trains(slm):
    """After `fit`, the frozen weights are bit-identical and every adapter
    weight moved; only the adapter's variables are trainable."""
    assert {v.path for v in slm.trainable_variables} == {
        v.path for v in slm.adapter.trainable_variables
    }
    frozen = [*slm.speech_encoder.weights, *slm.language_model.weights]
    before = [test_case.to_numpy(v) for v in frozen]
    adapter_before = [test_case.to_numpy(v) for v in slm.adapter.weights]
    slm.compile(optimizer=keras.optimizers.Adam(1e-2))
    # Logged like every task's loss (this raised "add state" on the built SLM).
    assert isinstance(slm._loss_tracker, FiniteMean)
    x, y = split_instruction_batch(batch(slm, seed=1))
    slm.fit(x, y, batch_size=3, epochs=1, verbose=0)
    for variable, value in zip(frozen, before):
        np.testing.assert_array_equal(test_case.to_numpy(variable), value, err_msg=variable.path)
    assert all(
        np.any(test_case.to_numpy(v) != b) for v, b in zip(slm.adapter.weights, adapter_before)
    )
