"""SpeechTranslator beyond one eager call: generation compiled once, summary,
layout map, loss scaled for tf.distribute, other Tasks built beside it
(issue 14 leftovers)."""

import re

import keras
import numpy as np
import pytest

from keras_slam.models import speech_translator as speech_translator_module
from keras_slam.models.layout_map import layout_rules
from keras_slam.models.speech_translator import SpeechTranslator
from tests import test_case
from tests.conftest import reset_seeds_and_policy
from tests.models.test_speech_translator import (
    SOURCES,
    TARGETS,
    make_translator,
    speech,
    teacher_forced,
)
from tests.models.test_subclassed_task import make_recognizer


@pytest.fixture(scope="module")
def translator():
    reset_seeds_and_policy()
    return make_translator()


def test_generate_compiles_once_per_input_shape(translator, monkeypatch):
    """Before: JAX traced the sampler loop (and so the decoder step) again at
    every `generate`, and TensorFlow ran it eagerly; now one trace (jit,
    tf.function) per batch shape serves every call."""
    traces = []
    decode_step = translator._decode_step

    def counting_decode_step(token_ids, index, cache):
        traces.append(tuple(token_ids.shape))
        return decode_step(token_ids, index, cache)

    monkeypatch.setattr(translator, "_decode_step", counting_decode_step)
    rng = np.random.default_rng(0)
    outputs = [translator.generate(speech(rng), max_length=6) for _ in range(3)]
    batches = [speech(rng, batch_size=2) for _ in range(2)]
    outputs += [translator.generate(batch, max_length=6) for batch in batches]
    if keras.config.backend() in ("jax", "tensorflow"):
        assert traces == [(3, 1), (2, 1)], traces
    else:  # torch, eager: the step runs in Python at every generated position
        assert len(traces) >= len(outputs), traces
    assert [output.shape for output in outputs] == [(3, 6)] * 3 + [(2, 6)] * 2


def test_compiled_generate_sees_new_weights(translator):
    """The weights are arguments of the compiled function, not constants:
    a final norm that outputs e_0 and an EOS embedding with a large e_0
    component make every row stop at once."""
    batch = speech(np.random.default_rng(1))
    before = translator.generate(batch, max_length=6)
    assert not np.all(before[:, 1] == translator.eos_id), before
    norm = translator.decoder_layer_norm
    embeddings = translator.decoder_embedding.token_embedding.embeddings
    saved = [keras.ops.convert_to_numpy(w) for w in (norm.gamma, norm.beta, embeddings)]
    try:
        norm.gamma.assign(np.zeros_like(saved[0]))
        norm.beta.assign(np.eye(len(saved[1]), dtype="float32")[0])
        table = saved[2].copy()
        table[translator.eos_id, 0] = 100.0
        embeddings.assign(table)
        after = translator.generate(batch, max_length=6)
    finally:
        for weight, value in zip((norm.gamma, norm.beta, embeddings), saved):
            weight.assign(value)
    np.testing.assert_array_equal(after[:, 1], translator.eos_id)
    np.testing.assert_array_equal(after[:, 2:], 0)
    np.testing.assert_array_equal(translator.generate(batch, max_length=6), before)


def test_summary_of_a_built_translator(translator, capsys):
    # Before: TypeError, TransformerDecoder.compute_output_shape() got an
    # unexpected keyword argument 'encoder_sequence_shape'.
    translator.summary()
    out = capsys.readouterr().out
    assert "decoder_layer_0 (TransformerDecoder)" in out
    assert f"Total params: {translator.count_params():,}" in out


def test_every_decoder_weight_has_one_layout_rule(translator):
    rules = layout_rules()
    for weight in translator.weights:
        matching = [pattern for pattern in rules if re.fullmatch(pattern, weight.path)]
        assert len(matching) <= 1, (weight.path, matching)
        if len(weight.shape) >= 2:
            assert matching, f"{weight.path} {weight.shape} has no layout rule"
            assert len(rules[matching[0]]) == len(weight.shape), weight.path
    devices = [f"cpu:{i}" for i in range(8)]
    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
    layout_map = SpeechTranslator.get_layout_map(mesh)
    path = "decoder_layer_0/cross_attention/query/kernel"
    assert layout_map[path].axes == ("batch", "model", None)


def test_loss_is_scaled_for_distribution(translator, monkeypatch):
    """compute_loss returns the loss through Keras' per-replica scaling (as
    the recognizer's does), so tf.distribute's sum over replicas is a mean."""
    x, y = teacher_forced(translator, translator.preprocessor.tokenize_sources(SOURCES), TARGETS)
    unscaled = float(keras.ops.convert_to_numpy(translator.compute_loss(x, y, training=False)))
    monkeypatch.setattr(speech_translator_module, "scale_loss_for_distribution", lambda x: x / 2)
    scaled = float(keras.ops.convert_to_numpy(translator.compute_loss(x, y, training=False)))
    np.testing.assert_allclose(scaled, unscaled / 2, rtol=1e-6)


def test_tasks_built_before_and_after_keep_working(seeded):
    """keras-hub rewrites the Task bases that every Task shares (see
    `SubclassedTask`). Before: a recognizer built after the translator gave
    it Functional's `call` ("no attribute '_inputs'") and made its summary
    fail, and the translator stripped `call` from a recognizer built before
    it."""
    recognizer = make_recognizer()
    features = {
        "speech_features": seeded.normal(size=(2, 12, 16)).astype("float32"),
        "speech_padding_mask": np.ones((2, 12), "float32"),
    }
    expected = test_case.to_numpy(recognizer(features)["logits"])
    translator = make_translator()
    x, _ = teacher_forced(translator, translator.preprocessor.tokenize_sources(SOURCES), TARGETS)
    before = test_case.to_numpy(translator(x))
    make_recognizer()
    np.testing.assert_allclose(test_case.to_numpy(translator(x)), before, atol=1e-6)
    translator.summary()  # Before: "no attribute '_operations'" (seen as Functional).
    after = recognizer.predict(features, verbose=0)["logits"]
    np.testing.assert_allclose(after, expected, atol=1e-6)
