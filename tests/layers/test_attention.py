import os

import keras
import numpy as np
import pytest

from keras_slam.layers.attention import POSITION_ENCODINGS, RelativePositionAttention
from keras_slam.presets.hf_w2v_bert import wav2vec2_bert_layer_weights
from tests import test_case

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HIDDEN, HEADS, FFN, LENGTH = 32, 4, 64, 20
# Hugging Face's name for each of our position encodings.
HF_POSITION_ENCODINGS = {"relative_key": "relative_key", "relative_sinusoidal": "relative"}


def tiny_hf_config(position_encoding, left_context=4, right_context=2, **kwargs):
    """A tiny random-weight `Wav2Vec2BertConfig` (built locally, eager attention)."""
    from transformers import Wav2Vec2BertConfig

    config = Wav2Vec2BertConfig(
        hidden_size=HIDDEN,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        position_embeddings_type=HF_POSITION_ENCODINGS[position_encoding],
        left_max_position_embeddings=left_context,
        right_max_position_embeddings=right_context,
        max_source_positions=128,
        **kwargs,
    )
    config._attn_implementation = "eager"
    return config


def randomize_(module, stddev=0.3):
    """Random weights everywhere, including HF's zero-initialised biases."""
    import torch

    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, stddev)
    return module


def make_inputs(rng, batch_size=3, length=LENGTH):
    return {
        "x": rng.normal(size=(batch_size, length, HIDDEN)).astype("float32"),
        "padding_mask": test_case.random_padding_mask(rng, batch_size, length, min_length=3),
    }


def build_attention(inputs, position_encoding="relative_key", query_chunk=None):
    layer = RelativePositionAttention(
        HIDDEN,
        HEADS,
        position_encoding=position_encoding,
        left_context=4,
        right_context=2,
        query_chunk=query_chunk,
    )
    layer(inputs["x"], inputs["padding_mask"])

    def call_fn(batch):
        return (layer(batch["x"], batch["padding_mask"]), batch["padding_mask"])

    return layer, call_fn


def build_relative_key(inputs):
    return build_attention(inputs, "relative_key")


def build_relative_sinusoidal(inputs):
    return build_attention(inputs, "relative_sinusoidal")


def build_rotary(inputs):
    return build_attention(inputs, "rotary")


def build_no_positions(inputs):
    return build_attention(inputs, "none")


def build_relative_key_in_query_chunks(inputs):
    return build_attention(inputs, "relative_key", query_chunk=7)


BUILDERS = {
    "relative_key": "tests.layers.test_attention:build_relative_key",
    "relative_sinusoidal": "tests.layers.test_attention:build_relative_sinusoidal",
    "rotary": "tests.layers.test_attention:build_rotary",
    "none": "tests.layers.test_attention:build_no_positions",
}
EXPECTED_NUM_WEIGHTS = {"relative_key": 9, "relative_sinusoidal": 11, "rotary": 8, "none": 8}


@pytest.mark.parametrize("position_encoding", POSITION_ENCODINGS)
def test_layer(seeded, position_encoding):
    inputs = make_inputs(seeded)
    outputs = test_case.run_layer_test(
        RelativePositionAttention(HIDDEN, HEADS, position_encoding=position_encoding),
        inputs,
        (3, LENGTH, HIDDEN),
        EXPECTED_NUM_WEIGHTS[position_encoding],
    )
    padded = inputs["padding_mask"] == 0
    assert np.all(test_case.to_numpy(outputs)[padded] == 0)


@pytest.mark.parametrize("position_encoding", POSITION_ENCODINGS)
def test_padding_invariance(seeded, position_encoding):
    inputs = make_inputs(seeded, batch_size=4)
    _, call_fn = test_case.resolve_builder(BUILDERS[position_encoding])(inputs)
    test_case.assert_padding_invariant(call_fn, inputs, {"x": "padding_mask"})


@pytest.mark.parametrize("position_encoding", POSITION_ENCODINGS)
def test_backend_parity(seeded, parity_worker, position_encoding):
    test_case.assert_backend_parity(
        BUILDERS[position_encoding], make_inputs(seeded), parity_worker=parity_worker
    )


def test_padding_invariance_in_query_chunks(seeded):
    inputs = make_inputs(seeded, batch_size=4)
    _, call_fn = build_relative_key_in_query_chunks(inputs)
    test_case.assert_padding_invariant(call_fn, inputs, {"x": "padding_mask"})


@pytest.mark.parametrize("attention_dropout", [0.0, 1e-9])  # 1e-9: the explicit-softmax path
@pytest.mark.parametrize("position_encoding", POSITION_ENCODINGS)
def test_query_chunks_keep_outputs_and_gradients(seeded, position_encoding, attention_dropout):
    """Chunks of 7 query rows (20 = 7 + 7 + 6) give the unchunked outputs and weight gradients."""
    inputs = make_inputs(seeded)
    layers = [build_attention(inputs, position_encoding, chunk)[0] for chunk in (None, 7)]
    layers[1].set_weights(layers[0].get_weights())
    outputs, gradients = [], []
    for layer in layers:
        layer.attention_dropout = attention_dropout

        def loss_fn(layer=layer):
            y = layer(inputs["x"], inputs["padding_mask"], training=True)
            return keras.ops.sum(keras.ops.square(y) * keras.ops.arange(HIDDEN, dtype="float32"))

        outputs.append(test_case.to_numpy(layer(inputs["x"], inputs["padding_mask"])))
        gradients.append(test_case.gradients(layer.trainable_weights, loss_fn, compiled=False))
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)
    assert max(np.abs(g).max() for g in gradients[0]) > 0
    # Gradients reach ~200 (the key bias's is 0 up to that rounding): the
    # sums' fp32 rounding differs by ~1e-7 of the largest.
    scale = max(np.abs(g).max() for g in gradients[0])
    for whole, chunked in zip(*gradients):
        np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("query_chunk", [None, 7])
@pytest.mark.parametrize("position_encoding", POSITION_ENCODINGS)
def test_model_predicts_at_two_lengths(seeded, position_encoding, query_chunk):
    """A second length makes TensorFlow retrace with T unknown (query chunks
    then fall back to one, as in keras-hub tasks' graphs); every backend
    predicts the layer's eager outputs at both lengths."""
    inputs = make_inputs(seeded)
    layer = build_attention(inputs, position_encoding, query_chunk)[0]
    x, padding_mask = keras.Input((None, HIDDEN)), keras.Input((None,))
    model = keras.Model([x, padding_mask], layer(x, padding_mask))
    for length in (LENGTH, LENGTH - 7):
        batch = [inputs["x"][:, :length], inputs["padding_mask"][:, :length]]
        eager = test_case.to_numpy(layer(*batch))
        np.testing.assert_allclose(model.predict(batch, verbose=0), eager, atol=1e-5)


def test_query_chunk_is_in_the_config():
    layer = RelativePositionAttention(HIDDEN, HEADS, query_chunk=7)
    assert RelativePositionAttention.from_config(layer.get_config()).query_chunk == 7
    with pytest.raises(ValueError, match="query_chunk"):
        RelativePositionAttention(HIDDEN, HEADS, query_chunk=0)


def test_serialization_roundtrip(seeded):
    inputs = make_inputs(seeded)
    layer, _ = build_relative_sinusoidal(inputs)
    test_case.assert_serialization_roundtrip(
        layer,
        lambda obj: lambda batch: (obj(batch["x"], batch["padding_mask"]), batch["padding_mask"]),
        inputs,
    )


@pytest.mark.parametrize("position_encoding", POSITION_ENCODINGS)
def test_mixed_bfloat16_finite(seeded, position_encoding):
    test_case.assert_mixed_precision_finite(BUILDERS[position_encoding], make_inputs(seeded))


@pytest.mark.parametrize("position_encoding", ["relative_key", "rotary", "none"])
def test_dropout_path_matches_fused_path(seeded, position_encoding):
    """The explicit-softmax path (used for attention dropout) is the same math
    as `dot_product_attention` (with a bias, or with a key mask)."""
    inputs = make_inputs(seeded)
    layer, call_fn = build_attention(inputs, position_encoding)
    fused = test_case.to_numpy(call_fn(inputs)[0])
    layer.attention_dropout = 1e-9  # takes the dropout path, drops nothing
    plain = layer(inputs["x"], inputs["padding_mask"], training=True)
    np.testing.assert_allclose(test_case.to_numpy(plain), fused, atol=1e-5)


def numpy_rotary(x, positions):
    """Reference RoPE of (B, T, H, d) at `positions` (T,): pairs (k, k + d/2)."""
    half = x.shape[-1] // 2
    angles = positions[:, None] * 10000.0 ** (-np.arange(half) / half)
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    first, second = x[..., :half], x[..., half:]
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def test_rotary_matches_numpy_softmax_reference(seeded):
    inputs = make_inputs(seeded)
    layer, call_fn = build_rotary(inputs)
    x, real = inputs["x"], inputs["padding_mask"] > 0
    x = np.where(real[..., None], x, 0.0)
    weights = {w.path.split("/")[-2] + "/" + w.name: test_case.to_numpy(w) for w in layer.weights}

    def project(name):
        projected = x @ weights[f"{name}/kernel"] + weights[f"{name}/bias"]
        return projected.reshape(x.shape[:2] + (HEADS, HIDDEN // HEADS))

    positions = np.arange(LENGTH, dtype="float64")
    query = numpy_rotary(project("query_dense"), positions)
    key = numpy_rotary(project("key_dense"), positions)
    logits = np.einsum("bthd,bshd->bhts", query, key) / np.sqrt(HIDDEN // HEADS)
    logits = np.where(real[:, None, None, :], logits, -np.inf)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    attended = np.einsum("bhts,bshd->bthd", probabilities, project("value_dense"))
    attended = attended.reshape(x.shape[:2] + (HIDDEN,))
    expected = attended @ weights["output_dense/kernel"] + weights["output_dense/bias"]
    expected = np.where(real[..., None], expected, 0.0)
    np.testing.assert_allclose(test_case.to_numpy(call_fn(inputs)[0]), expected, atol=1e-5)


def test_rotary_scores_depend_only_on_position_differences(seeded):
    """Shifting every position by the same offset leaves q . k unchanged;
    a shifted query alone changes it."""
    layer, _ = build_rotary(make_inputs(seeded))
    query, key = (seeded.normal(size=(2, LENGTH, HEADS, HIDDEN // HEADS)) for _ in range(2))
    query, key = query.astype("float32"), key.astype("float32")

    def logits(query_offset, key_offset):
        positions = np.arange(LENGTH, dtype="float32")
        rotated_query = layer.rotary_embedding(query, positions=positions + query_offset)
        rotated_key = layer.rotary_embedding(key, positions=positions + key_offset)
        return test_case.to_numpy(keras.ops.einsum("bthd,bshd->bhts", rotated_query, rotated_key))

    np.testing.assert_allclose(logits(37.0, 37.0), logits(0.0, 0.0), atol=1e-4)
    assert np.abs(logits(3.0, 0.0) - logits(0.0, 0.0)).max() > 1e-2


def test_rotary_all_padding_item_stays_finite(seeded):
    inputs = make_inputs(seeded)
    inputs["padding_mask"][0] = 0
    _, call_fn = build_rotary(inputs)
    outputs = test_case.to_numpy(call_fn(inputs)[0])
    assert np.all(np.isfinite(outputs)) and np.all(outputs[0] == 0)


def test_rotary_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="even head_dim, got 3"):
        RelativePositionAttention(12, 4, position_encoding="rotary")


@pytest.mark.parametrize(
    "position_encoding, left_context, right_context",
    [("relative_key", 4, 2), ("relative_key", 64, 8), ("relative_sinusoidal", 64, 8)],
)
def test_matches_hugging_face(seeded, position_encoding, left_context, right_context):
    """Same weights as HF `Wav2Vec2BertSelfAttention` -> same outputs.

    With left/right 4/2 and T = 20 the distance clipping is exercised.
    """
    import torch
    from transformers.models.wav2vec2_bert import modeling_wav2vec2_bert as hf

    torch.manual_seed(0)
    config = tiny_hf_config(position_encoding, left_context, right_context)
    reference = randomize_(hf.Wav2Vec2BertSelfAttention(config)).eval()
    inputs = make_inputs(seeded)
    layer = RelativePositionAttention(
        HIDDEN, HEADS, position_encoding, left_context=left_context, right_context=right_context
    )
    layer(inputs["x"], inputs["padding_mask"])
    hf_weights = {key: value.numpy() for key, value in reference.state_dict().items()}
    variables = {v.path.split("/", 1)[1]: v for v in layer.weights}
    for ours, theirs, transform in wav2vec2_bert_layer_weights(position_encoding):
        if ours.startswith("self_attention/"):
            variables[ours.split("/", 1)[1]].assign(transform(hf_weights[theirs.split(".", 1)[1]]))

    x = torch.from_numpy(inputs["x"])
    mask = torch.from_numpy(inputs["padding_mask"])
    additive_mask = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
    positions = None
    if position_encoding == "relative_sinusoidal":
        positions = hf.Wav2Vec2BertRelPositionalEmbedding(config)(x)
    with torch.no_grad():
        expected, _ = reference(
            x, attention_mask=additive_mask, relative_position_embeddings=positions
        )
    actual = test_case.to_numpy(layer(inputs["x"], inputs["padding_mask"]))
    real = inputs["padding_mask"].astype(bool)
    np.testing.assert_allclose(actual[real], expected.numpy()[real], atol=1e-4)
