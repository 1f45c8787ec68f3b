"""SpeechLanguageModel on keras-hub encoder-decoder LMs (BART, T5; tiny
random-weight models built here): [prompt | speech] go into the LM's
encoder, the response is the decoder's target. The references run keras-hub's
own `Seq2SeqLM.call_encoder` / `call_decoder_with_cache` per item, unpadded."""

import functools

import keras_hub
import numpy as np
import pytest

from keras_slam.data.tokenizers import train_sentencepiece
from keras_slam.models.speech_language_model import split_instruction_batch
from tests import test_case
from tests.models.test_slm_families import (
    PROMPT_ARGUMENTS,
    byte_level_vocabulary,
    check_only_adapter_trains,
    slm_with,
)
from tests.models.test_speech_language_model import TEXTS, batch

SEQ2SEQ = dict(num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, dropout=0.0)
T5_PIECES = dict(
    pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>"
)


def make_bart():
    vocabulary, merges = byte_level_vocabulary()
    vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, **{t: i + 3 for t, i in vocabulary.items()}}
    tokenizer = keras_hub.models.BartTokenizer(vocabulary, merges)
    backbone = keras_hub.models.BartBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), **SEQ2SEQ, max_sequence_length=128
    )
    preprocessor = keras_hub.models.BartSeq2SeqLMPreprocessor(tokenizer)
    return keras_hub.models.BartSeq2SeqLM(backbone=backbone, preprocessor=preprocessor)


def make_t5():
    proto = train_sentencepiece(
        TEXTS, vocab_size=32, model_type="char", control_symbols=[], **T5_PIECES
    )
    tokenizer = keras_hub.models.T5Tokenizer(proto=proto)
    backbone = keras_hub.models.T5Backbone(
        vocabulary_size=tokenizer.vocabulary_size(), **SEQ2SEQ, tie_embedding_weights=True
    )
    preprocessor = keras_hub.models.T5Seq2SeqLMPreprocessor(tokenizer)
    return keras_hub.models.T5Seq2SeqLM(backbone=backbone, preprocessor=preprocessor)


FAMILIES = {"bart": make_bart, "t5": make_t5}


@functools.cache
def seq2seq_slm(family):
    return slm_with(FAMILIES[family])


def _encoder_output(slm, inputs, i):
    """Item i alone: [prompt | speech] embeddings through the LM's encoder."""
    prompt_length = int(inputs["prompt_padding_mask"][i].sum())
    speech, mask = slm.encode(
        inputs["speech_features"][i : i + 1], inputs["speech_padding_mask"][i : i + 1]
    )
    speech = test_case.to_numpy(speech)[:, : int(test_case.to_numpy(mask).sum())]
    prompt_ids = inputs["prompt_token_ids"][i : i + 1, :prompt_length]
    prompt = test_case.to_numpy(slm.embed_tokens(prompt_ids))
    sequence = np.concatenate([prompt, speech], axis=1)
    mask = np.ones(sequence.shape[:2], "int32")
    return slm.hooks.encoder(slm.language_model.backbone, sequence, mask), mask


def _reference_logits(slm, encoder_output, encoder_mask, decoder_ids):
    """keras-hub's own decoder on `decoder_ids` (1, L), fresh caches."""
    lm = slm.language_model
    length, heads = decoder_ids.shape[1], slm.hooks.cache_heads(lm.backbone)
    shape = (1, lm.backbone.num_layers, 2)
    self_cache = np.zeros((*shape, length, *heads), "float32")
    cross_cache = np.zeros((*shape, encoder_mask.shape[1], *heads), "float32")
    logits, *_ = lm.call_decoder_with_cache(
        encoder_output, encoder_mask, decoder_ids, self_cache, 0, cross_cache, 0
    )
    return test_case.to_numpy(logits)[0].astype("float64")


@pytest.mark.parametrize("family", FAMILIES)
def test_seq2seq_response_loss_and_greedy_generation(family):
    slm = seq2seq_slm(family)
    lm = slm.language_model
    # The hooks' encoder on embedded tokens is keras-hub's encoder on the ids.
    prompt_ids = np.array([slm.prompt_ids("hello world")], "int32")
    np.testing.assert_allclose(
        test_case.to_numpy(
            slm.hooks.encoder(lm.backbone, slm.embed_tokens(prompt_ids), prompt_ids >= 0)
        ),
        test_case.to_numpy(lm.call_encoder(prompt_ids, np.ones_like(prompt_ids))),
        atol=1e-5,
    )

    inputs = batch(slm)
    x, y = split_instruction_batch(inputs)
    loss = float(test_case.to_numpy(slm.compute_loss(x, y, slm(x))))
    start = slm.hooks.decoder_start_ids(lm.preprocessor.tokenizer)
    reference, greedy = [], []
    for i in range(3):
        encoder_output, encoder_mask = _encoder_output(slm, inputs, i)
        length = int(inputs["response_padding_mask"][i].sum())
        response = inputs["response_token_ids"][i, :length]
        decoder_ids = np.array([[*start, *response]], "int32")
        logits = _reference_logits(slm, encoder_output, encoder_mask, decoder_ids)
        logits = logits[len(start) - 1 : -1]
        log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        reference.append(log_probs[np.arange(length), response])
        # Uncached greedy: rerun the decoder on all tokens so far.
        tokens = list(start)
        while len(tokens) < len(start) + 4 and tokens[-1] != lm.preprocessor.tokenizer.end_token_id:
            step = _reference_logits(slm, encoder_output, encoder_mask, np.array([tokens], "int32"))
            tokens.append(int(np.argmax(step[-1])))
        greedy.append(tokens[len(start) :])
    np.testing.assert_allclose(loss, -np.concatenate(reference).mean(), rtol=1e-5)

    generated = slm.generate_token_ids(*[inputs[k] for k in PROMPT_ARGUMENTS], max_new_tokens=4)
    tokenizer = lm.preprocessor.tokenizer
    for i, expected in enumerate(greedy):
        if tokenizer.end_token_id in expected:  # "<eos>" and after come out as pad
            expected = expected[: expected.index(tokenizer.end_token_id)]
        expected += [tokenizer.pad_token_id] * (4 - len(expected))
        assert generated[i].tolist() == expected, (i, generated[i], expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_seq2seq_only_adapter_trains(family):
    check_only_adapter_trains(seq2seq_slm(family))
