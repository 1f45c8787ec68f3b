import functools

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_slam.data.instructions import pad_rows
from keras_slam.data.tokenizers import train_sentencepiece
from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.models.speech_language_model import (
    SpeechAdapter,
    SpeechLanguageModel,
    adapter_ctc_loss,
    response_loss,
    split_instruction_batch,
)
from recipes.lm import GEMMA_PIECES
from tests import test_case
from tests.conftest import reset_seeds_and_policy

TEXTS = ["transcribe the audio", "hello world", "a cat sat on the mat", "good day to you"]
FEATURE_DIM = 16
PADDED = {
    "speech_features": "speech_padding_mask",
    "prompt_token_ids": "prompt_padding_mask",
    "response_token_ids": "response_padding_mask",
}


@functools.cache
def tokenizer_proto():
    return train_sentencepiece(
        TEXTS, vocab_size=32, model_type="char", control_symbols=[], **GEMMA_PIECES
    )


def make_language_model():
    tokenizer = keras_hub.models.GemmaTokenizer(proto=tokenizer_proto())
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
        head_dim=8,
    )
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(tokenizer, sequence_length=16)
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=preprocessor)


def make_speech_encoder():
    return SpeechEncoder(
        hidden_dim=16,
        num_layers=1,
        feature_dim=FEATURE_DIM,
        subsampling_filters=4,
        conformer=ConformerConfig(
            num_heads=2, ffn_dim=32, kernel_size=3, conv_norm_groups=4, dropout=0.0
        ),
    )


def make_slm(**kwargs):
    return SpeechLanguageModel(
        make_speech_encoder(),
        make_language_model(),
        adapter=dict(hidden_dim=16, stack_frames=2, num_layers=1, num_heads=2),
        **kwargs,
    )


def make_inputs(slm, rng, prompts, responses, frames=24, contexts=None):
    prompt_ids, prompt_mask = slm.tokenize_prompts(prompts, contexts)
    response_ids, response_mask = slm.tokenize_responses(responses)
    batch_size = len(prompts)
    return {
        "speech_features": rng.normal(size=(batch_size, frames, FEATURE_DIM)).astype("float32"),
        "speech_padding_mask": test_case.random_padding_mask(rng, batch_size, frames, 9),
        "prompt_token_ids": prompt_ids,
        "prompt_padding_mask": prompt_mask,
        "response_token_ids": response_ids,
        "response_padding_mask": response_mask,
    }


def call_fn_of(slm):
    def call_fn(inputs):
        outputs = slm(inputs)
        return {"logits": (outputs["logits"], outputs["padding_mask"])}

    return call_fn


def build_slm(inputs):
    slm = make_slm()
    call_fn = call_fn_of(slm)
    call_fn(inputs)
    return slm, call_fn


@pytest.fixture(scope="module")
def slm():
    reset_seeds_and_policy()
    return make_slm()


INSTRUCTIONS = ["transcribe the audio", "hello", "a cat"]
CONTEXTS = ["good day", None, "a mat"]


def batch(slm, seed=0, contexts=None):
    return make_inputs(
        slm,
        np.random.default_rng(seed),
        INSTRUCTIONS,
        ["hello world", "good day", "a"],
        contexts=contexts,
    )


def test_adapter_padding_invariant(seeded):
    adapter = SpeechAdapter(output_dim=8, hidden_dim=16, stack_frames=3, num_heads=2)
    rng = np.random.default_rng(0)
    inputs = {
        "sequence": rng.normal(size=(3, 10, 6)).astype("float32"),
        "padding_mask": test_case.random_padding_mask(rng, 3, 10),
    }

    def call_fn(inputs):
        return {"x": adapter(inputs["sequence"], inputs["padding_mask"])}

    test_case.assert_padding_invariant(call_fn, inputs, {"sequence": "padding_mask"})
    _, mask = adapter(inputs["sequence"], inputs["padding_mask"])
    lengths = inputs["padding_mask"].sum(axis=1)
    np.testing.assert_array_equal(test_case.to_numpy(mask).sum(axis=1), np.ceil(lengths / 3))


def test_task_padding_invariant_and_backend_parity(slm, parity_worker):
    inputs = batch(slm)
    test_case.assert_padding_invariant(call_fn_of(slm), inputs, PADDED)
    test_case.assert_backend_parity(
        "tests.models.test_speech_language_model:build_slm", inputs, parity_worker=parity_worker
    )


def test_only_adapter_trains_and_frozen_weights_unchanged(slm):
    adapter_paths = {v.path for v in slm.adapter.trainable_variables}
    assert {v.path for v in slm.trainable_variables} == adapter_paths
    frozen = [*slm.speech_encoder.weights, *slm.language_model.weights]
    assert not any(v.trainable for v in slm.speech_encoder.trainable_variables)
    before = {v.path: test_case.to_numpy(v) for v in frozen}
    adapter_before = [test_case.to_numpy(v) for v in slm.adapter.trainable_variables]

    inputs = batch(slm)
    x, y = split_instruction_batch(inputs)
    grads = test_case.gradients(
        slm.trainable_variables,
        lambda: slm.compute_loss(x, y, slm(x, training=True)),
    )
    assert all(np.any(g != 0) for g in grads)

    batches = [batch(slm, seed) for seed in (1, 2)]
    batches[1]["speech_features"] = batches[1]["speech_features"][:, :16]
    batches[1]["speech_padding_mask"] = batches[1]["speech_padding_mask"][:, :16]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(batches),
        output_signature={
            k: tf.TensorSpec((None, None) + v.shape[2:], v.dtype) for k, v in batches[0].items()
        },
    ).map(split_instruction_batch)
    slm.compile(optimizer=keras.optimizers.Adam(1e-2))
    slm.fit(dataset, epochs=1, verbose=0)
    for v in frozen:
        np.testing.assert_array_equal(test_case.to_numpy(v), before[v.path], err_msg=v.path)
    after = [test_case.to_numpy(v) for v in slm.adapter.trainable_variables]
    assert all(np.any(a != b) for a, b in zip(after, adapter_before))


def _reference_log_likelihoods(slm, inputs, i):
    """Response-token log-likelihoods of item i, run alone and unpadded."""
    real = {k: inputs[k][i : i + 1] for k in inputs}
    prompt_length = int(real["prompt_padding_mask"].sum())
    response_length = int(real["response_padding_mask"].sum())
    speech, speech_mask = slm.encode(real["speech_features"], real["speech_padding_mask"])
    speech = test_case.to_numpy(speech)[:, : int(test_case.to_numpy(speech_mask).sum())]
    prompt = test_case.to_numpy(slm.embed_tokens(real["prompt_token_ids"][:, :prompt_length]))
    response_ids = real["response_token_ids"][:, :response_length]
    response = test_case.to_numpy(slm.embed_tokens(response_ids))
    sequence = np.concatenate([prompt, speech, response], axis=1)
    backbone = slm.language_model.backbone
    hidden = slm.hooks.decoder(backbone, sequence, np.ones(sequence.shape[:2], bool))
    logits = test_case.to_numpy(backbone.token_embedding(hidden, reverse=True))[0]
    first = prompt.shape[1] + speech.shape[1] - 1
    logits = logits[first : first + response_length].astype("float64")
    log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    return log_probs[np.arange(response_length), response_ids[0]]


def test_prompt_context_slot(slm):
    """The context's ids follow the instruction's; None leaves them out."""
    tokenizer = slm.language_model.preprocessor.tokenizer
    start = slm.hooks.prompt_start_ids(tokenizer)

    def ids(text):
        return [int(i) for i in test_case.to_numpy(tokenizer(text))]

    for contexts in (None, CONTEXTS):
        prompt_ids, prompt_mask = slm.tokenize_prompts(INSTRUCTIONS, contexts)
        for i, instruction in enumerate(INSTRUCTIONS):
            context = None if contexts is None else contexts[i]
            expected = start + ids(instruction)
            if context is not None:
                expected += ids(f"Context: {context}\n")
            assert [int(t) for t in prompt_ids[i, : int(prompt_mask[i].sum())]] == expected
    with pytest.raises(ValueError, match="contexts"):
        slm.tokenize_prompts(INSTRUCTIONS, CONTEXTS[:2])
    with pytest.raises(ValueError, match="no {context} field"):
        SpeechLanguageModel(make_speech_encoder(), make_language_model(), context_template="x")


@pytest.mark.parametrize("contexts", [None, CONTEXTS], ids=["no_context", "context"])
def test_loss_is_on_response_tokens_only(slm, contexts):
    inputs = batch(slm, contexts=contexts)
    x, y = split_instruction_batch(inputs)
    loss = float(test_case.to_numpy(slm.compute_loss(x, y, slm(x))))
    reference = np.concatenate(
        [_reference_log_likelihoods(slm, inputs, i) for i in range(len(inputs["prompt_token_ids"]))]
    )
    np.testing.assert_allclose(loss, -reference.mean(), rtol=1e-5)
    if contexts is not None:
        # The LM reads the context: the response logits change with it.
        plain = slm(split_instruction_batch(batch(slm))[0])["logits"]
        assert not np.allclose(test_case.to_numpy(plain), test_case.to_numpy(slm(x)["logits"]))
    # Labels outside the response (its padding) do not count.
    garbage = dict(y)
    pad = inputs["response_padding_mask"] == 0
    garbage["response_token_ids"] = np.where(pad, 5, inputs["response_token_ids"])
    assert pad.any()
    logits = slm(x)["logits"]
    np.testing.assert_allclose(
        test_case.to_numpy(response_loss(garbage["response_token_ids"], pad == 0, logits)),
        loss,
        rtol=1e-6,
    )


def _greedy_reference(slm, inputs, i, max_new_tokens, length=64):
    """Uncached greedy decoding of item i: argmax, append, rerun the whole
    sequence (held in a fixed-length buffer so JAX compiles each op once)."""
    tokenizer = slm.language_model.preprocessor.tokenizer
    prompt_length = int(inputs["prompt_padding_mask"][i].sum())
    speech, mask = slm.encode(
        inputs["speech_features"][i : i + 1], inputs["speech_padding_mask"][i : i + 1]
    )
    speech = test_case.to_numpy(speech)[:, : int(test_case.to_numpy(mask).sum())]
    prompt_ids = inputs["prompt_token_ids"][i : i + 1, :prompt_length]
    prefix = np.concatenate([test_case.to_numpy(slm.embed_tokens(prompt_ids)), speech], 1)
    sequence = np.zeros((1, length, prefix.shape[-1]), "float32")
    sequence[:, : prefix.shape[1]] = prefix
    backbone = slm.language_model.backbone
    tokens, end = [], prefix.shape[1]
    for _ in range(max_new_tokens):
        real = np.arange(length)[None] < end
        hidden = test_case.to_numpy(slm.hooks.decoder(backbone, sequence, real))
        logits = test_case.to_numpy(backbone.token_embedding(hidden[:, end - 1], reverse=True))
        token = int(np.argmax(logits[0]))
        if token == tokenizer.end_token_id:
            break
        tokens.append(token)
        sequence[:, end] = test_case.to_numpy(slm.embed_tokens(np.array([[token]], "int32")))[0]
        end += 1
    return tokens


def assert_decoder_is_the_backbone(slm):
    """The hooks' decoder on embedded tokens is keras-hub's backbone on the ids."""
    ids = np.array([slm.prompt_ids("hello world")], "int32")
    backbone = slm.language_model.backbone
    np.testing.assert_allclose(
        test_case.to_numpy(slm.hooks.decoder(backbone, slm.embed_tokens(ids), ids >= 0)),
        test_case.to_numpy(backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)})),
        atol=1e-5,
    )


@pytest.mark.parametrize("contexts", [None, CONTEXTS], ids=["no_context", "context"])
def test_greedy_generation_matches_stepwise_argmax(slm, contexts):
    assert_decoder_is_the_backbone(slm)
    inputs = batch(slm, contexts=contexts)
    args = [
        inputs[k]
        for k in ("speech_features", "speech_padding_mask", "prompt_token_ids")
        + ("prompt_padding_mask",)
    ]
    first = slm.generate_token_ids(*args, max_new_tokens=6)
    second = slm.generate_token_ids(*args, max_new_tokens=6)
    np.testing.assert_array_equal(first, second)
    pad_id = slm.language_model.preprocessor.tokenizer.pad_token_id
    for i in range(len(first)):
        generated = [int(t) for t in first[i] if t != pad_id]
        assert generated == _greedy_reference(slm, inputs, i, 6), i
    speech = {k: inputs[k] for k in ("speech_features", "speech_padding_mask")}
    texts = slm.generate(speech, INSTRUCTIONS, max_new_tokens=6, context=contexts)
    assert texts == slm.detokenize(first)


def test_preset_round_trip_copied_and_referenced(slm, tmp_path):
    inputs = batch(slm)
    expected = test_case.normalize_outputs(call_fn_of(slm)(inputs))
    slm.save_to_preset(tmp_path / "copied")
    assert (tmp_path / "copied" / "language_model" / "config.json").exists()
    restored = SpeechLanguageModel.from_preset(str(tmp_path / "copied"))
    actual = test_case.normalize_outputs(call_fn_of(restored)(inputs))
    test_case.assert_outputs_close(expected, actual, atol=1e-6)

    with pytest.raises(ValueError, match="from_frozen_presets"):
        slm.save_to_preset(tmp_path / "referenced", reference_frozen=True)
    referencing = SpeechLanguageModel.from_frozen_presets(
        str(tmp_path / "copied" / "speech_encoder"),
        str(tmp_path / "copied" / "language_model"),
        adapter=slm.adapter_config,
        context_template="Words: {context}. ",
    )
    for target, source in zip(referencing.adapter.weights, slm.adapter.weights):
        target.assign(source)
    referencing.save_to_preset(tmp_path / "referenced", reference_frozen=True)
    assert not (tmp_path / "referenced" / "language_model").exists()
    restored = SpeechLanguageModel.from_preset(str(tmp_path / "referenced"))
    actual = test_case.normalize_outputs(call_fn_of(restored)(inputs))
    test_case.assert_outputs_close(expected, actual, atol=1e-6)
    assert restored.context_template == "Words: {context}. "
    assert restored.prompt_ids("hello", "a mat") == referencing.prompt_ids("hello", "a mat")
    assert restored.prompt_ids("hello", "a mat") != slm.prompt_ids("hello", "a mat")


def test_ctc_auxiliary_is_keras_ctc_on_tied_embeddings_and_trains_only_the_adapter(tmp_path):
    reset_seeds_and_policy()
    slm = make_slm(ctc_loss_weight=0.5)
    inputs = make_inputs(
        slm, np.random.default_rng(3), INSTRUCTIONS, ["hello world", "good day", "a"], frames=64
    )
    transcripts = ["cat", "a", "to"]
    labels, label_mask = pad_rows([slm.transcript_ids(t) for t in transcripts])
    inputs.update(transcript_token_ids=labels, transcript_padding_mask=label_mask)
    x, y = split_instruction_batch(inputs)
    assert set(y) == {
        "response_token_ids",
        "response_padding_mask",
        "transcript_token_ids",
        "transcript_padding_mask",
    }
    outputs = slm(x)
    speech, speech_mask = slm.encode(x["speech_features"], x["speech_padding_mask"])
    speech, speech_mask = test_case.to_numpy(speech), test_case.to_numpy(speech_mask)
    table = test_case.to_numpy(slm.language_model.backbone.token_embedding.embeddings)
    blank = test_case.to_numpy(slm.adapter.blank_logits(speech))
    logits = test_case.to_numpy(outputs["ctc_logits"])
    vocabulary = table.shape[0]
    assert logits.shape == speech.shape[:2] + (vocabulary + 1,)
    np.testing.assert_allclose(logits[..., :vocabulary], speech @ table.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits[..., vocabulary:], blank, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(test_case.to_numpy(outputs["ctc_padding_mask"]), speech_mask)

    # loss - response loss = 0.5 * mean(keras CTC / label length).
    total = test_case.to_numpy(slm.compute_loss(x, y, outputs))
    response = test_case.to_numpy(
        response_loss(y["response_token_ids"], y["response_padding_mask"], outputs["logits"])
    )
    label_lengths = label_mask.sum(axis=1).astype("int32")
    reference = test_case.to_numpy(
        keras.ops.ctc_loss(
            labels,
            logits,
            label_lengths,
            speech_mask.sum(axis=1).astype("int32"),
            mask_index=vocabulary,
        )
    )
    assert np.all(np.isfinite(reference)) and np.all(reference > 0)
    np.testing.assert_allclose(
        total - response, 0.5 * np.mean(reference / label_lengths), rtol=1e-4
    )

    # The blank projection is an adapter variable: the only ones trained,
    # every one reached by the auxiliary alone, and saved with the preset.
    adapter_paths = {v.path for v in slm.adapter.trainable_variables}
    assert any("blank_projection" in path for path in adapter_paths)
    assert {v.path for v in slm.trainable_variables} == adapter_paths

    def auxiliary():
        outputs = slm(x, training=True)
        return adapter_ctc_loss(
            labels, label_mask, outputs["ctc_logits"], outputs["ctc_padding_mask"]
        )

    grads = test_case.gradients(slm.trainable_variables, auxiliary)
    assert all(np.any(g != 0) for g in grads)
    slm.save_to_preset(tmp_path / "preset")
    restored = SpeechLanguageModel.from_preset(str(tmp_path / "preset"))
    assert restored.ctc_loss_weight == 0.5
    np.testing.assert_allclose(
        test_case.to_numpy(restored(x)["ctc_logits"]), logits, rtol=1e-5, atol=1e-5
    )
