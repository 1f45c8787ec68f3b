"""Quantizers: Hugging Face Gumbel quantizer, BEST-RQ known answers, padding, parity."""

import os

import keras
import numpy as np
import pytest

from keras_slam.layers.quantizers import GumbelVectorQuantizer, RandomProjectionQuantizer
from tests import test_case

os.environ.setdefault("HF_HUB_OFFLINE", "1")

NUM_GROUPS, NUM_CODES, CODE_DIM, INPUT_DIM = 2, 5, 6, 8


def hugging_face_quantizer():
    import torch
    from transformers import Wav2Vec2Config
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2GumbelVectorQuantizer

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        conv_dim=(INPUT_DIM,),
        conv_stride=(1,),
        conv_kernel=(1,),
        num_codevector_groups=NUM_GROUPS,
        num_codevectors_per_group=NUM_CODES,
        codevector_dim=CODE_DIM,
    )
    quantizer = Wav2Vec2GumbelVectorQuantizer(config)
    with torch.no_grad():
        quantizer.codevectors.normal_()
        quantizer.weight_proj.bias.normal_()
    return quantizer


def copy_weights(reference, layer, inputs):
    layer(inputs)
    layer.logits_projection.kernel.assign(reference.weight_proj.weight.detach().numpy().T)
    layer.logits_projection.bias.assign(reference.weight_proj.bias.detach().numpy())
    codevectors = reference.codevectors.detach().numpy()
    layer.codevectors.assign(codevectors.reshape(NUM_GROUPS, NUM_CODES, -1))


@pytest.mark.parametrize("normalize_inputs", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_gumbel_matches_hugging_face(seeded, monkeypatch, training, normalize_inputs):
    """HF's quantizer on the inputs, or on their layer norm (as its pre-training model feeds it)."""
    import torch

    inputs = seeded.normal(size=(2, 7, INPUT_DIM)).astype("float32")
    mask = np.zeros((2, 7), "float32")
    mask[0, 1:5] = 1
    mask[1, 3:7] = 1
    noise = seeded.gumbel(size=(2, 7, NUM_GROUPS, NUM_CODES)).astype("float32")

    reference = hugging_face_quantizer()
    layer = GumbelVectorQuantizer(
        NUM_GROUPS, NUM_CODES, CODE_DIM, temperature_decay=0.999, normalize_inputs=normalize_inputs
    )
    copy_weights(reference, layer, inputs)
    reference_inputs = torch.from_numpy(inputs)
    if normalize_inputs:
        reference_inputs = torch.nn.functional.layer_norm(reference_inputs, (INPUT_DIM,), eps=1e-5)
    layer.step.assign(700)
    temperature = max(2.0 * 0.999**700, 0.1)
    np.testing.assert_allclose(test_case.to_numpy(layer.temperature()), temperature, rtol=1e-5)
    reference.temperature = temperature
    reference.train(training)

    # torch's gumbel_softmax draws E ~ Exp(1) and uses g = -log(E): give it exp(-noise).
    flat_exponentials = torch.from_numpy(np.exp(-noise).reshape(-1, NUM_CODES))

    def fixed_exponential(self, *args, **kwargs):
        return self.copy_(flat_exponentials)

    monkeypatch.setattr(torch.Tensor, "exponential_", fixed_exponential)
    with torch.no_grad():
        expected, expected_perplexity = reference(
            reference_inputs, mask_time_indices=torch.from_numpy(mask > 0)
        )
        logits = reference.weight_proj(reference_inputs).numpy()
    quantized, code_ids, perplexity, _ = layer(
        inputs, padding_mask=mask, training=training, gumbel_noise=noise
    )
    np.testing.assert_allclose(test_case.to_numpy(quantized), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        test_case.to_numpy(perplexity), float(expected_perplexity), rtol=1e-5
    )
    logits = logits.reshape(2, 7, NUM_GROUPS, NUM_CODES) + (noise if training else 0.0)
    np.testing.assert_array_equal(test_case.to_numpy(code_ids), logits.argmax(-1))
    assert int(test_case.to_numpy(layer.step)) == 700 + int(training)


def kernel_gradient(layer, inputs):
    """d sum(quantized**2) / d kernel with the backend's own autodiff."""
    backend = test_case.backend()
    if backend == "jax":
        import jax

        def loss_fn(trainable):
            (quantized, *_), _ = layer.stateless_call(
                trainable, [v.value for v in layer.non_trainable_variables], inputs, training=True
            )
            return (quantized**2).sum()

        gradients = jax.grad(loss_fn)([v.value for v in layer.trainable_variables])
        kernel_index = [v.path for v in layer.trainable_variables].index(
            layer.logits_projection.kernel.path
        )
        return np.asarray(gradients[kernel_index])
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            quantized, *_ = layer(inputs, training=True)
            loss = tf.reduce_sum(quantized**2)
        return tape.gradient(loss, layer.logits_projection.kernel.value).numpy()
    quantized, *_ = layer(inputs, training=True)
    (quantized**2).sum().backward()
    return layer.logits_projection.kernel.value.grad.numpy()


def test_gumbel_straight_through_gradient_reaches_logits(seeded):
    inputs = seeded.normal(size=(1, 4, INPUT_DIM)).astype("float32")
    layer = GumbelVectorQuantizer(NUM_GROUPS, NUM_CODES, CODE_DIM, seed=1)
    layer(inputs)
    gradient = kernel_gradient(layer, inputs)
    assert gradient.shape == (INPUT_DIM, NUM_GROUPS * NUM_CODES)
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0


def test_temperature_anneal_known_answer():
    layer = GumbelVectorQuantizer(
        1, 4, 4, start_temperature=2.0, end_temperature=0.1, temperature_decay=0.5
    )
    layer(np.zeros((1, 3, 2), "float32"))
    for step in (0, 1, 3, 4, 5, 100):
        layer.step.assign(step)
        expected = max(2.0 * 0.5**step, 0.1)
        np.testing.assert_allclose(test_case.to_numpy(layer.temperature()), expected, rtol=1e-6)
    layer.step.assign(0)
    layer(np.zeros((1, 3, 2), "float32"), training=False)
    assert int(test_case.to_numpy(layer.step)) == 0
    layer(np.zeros((1, 3, 2), "float32"), training=True)
    layer(np.zeros((1, 3, 2), "float32"), training=True)
    assert int(test_case.to_numpy(layer.step)) == 2


def gumbel_inputs(rng):
    return {
        "inputs": rng.normal(size=(3, 9, INPUT_DIM)).astype("float32"),
        "padding_mask": test_case.random_padding_mask(rng, 3, 9, min_length=3),
        "noise": rng.gumbel(size=(3, 9, NUM_GROUPS, NUM_CODES)).astype("float32"),
    }


def build_gumbel(inputs):
    layer = GumbelVectorQuantizer(NUM_GROUPS, NUM_CODES, CODE_DIM, seed=3)
    layer(inputs["inputs"])

    def call_fn(batch):
        mask = batch["padding_mask"]
        quantized, code_ids, perplexity, frame_perplexity = layer(
            batch["inputs"], padding_mask=mask
        )
        noisy, noisy_ids, noisy_perplexity, noisy_frame_perplexity = layer(
            batch["inputs"], padding_mask=mask, training=True, gumbel_noise=batch["noise"]
        )
        return dict(
            quantized=(quantized, mask),
            code_ids=(code_ids, mask),
            perplexity=perplexity,
            frame_perplexity=frame_perplexity,
            noisy=(noisy, mask),
            noisy_ids=(noisy_ids, mask),
            noisy_perplexity=noisy_perplexity,
            noisy_frame_perplexity=noisy_frame_perplexity,
        )

    return layer, call_fn


def test_gumbel_layer_shapes_and_weights(seeded):
    inputs = gumbel_inputs(seeded)
    layer = GumbelVectorQuantizer(NUM_GROUPS, NUM_CODES, CODE_DIM)
    outputs = layer(inputs["inputs"], padding_mask=inputs["padding_mask"])
    assert [tuple(x.shape) for x in outputs] == [(3, 9, CODE_DIM), (3, 9, NUM_GROUPS), (), ()]
    assert [tuple(x) for x in layer.compute_output_shape((3, 9, INPUT_DIM))] == [
        (3, 9, CODE_DIM),
        (3, 9, NUM_GROUPS),
        (),
        (),
    ]
    assert len(layer.trainable_weights) == 3
    assert [w.name for w in layer.non_trainable_weights] == ["step"]


def test_gumbel_padding_invariant(seeded):
    inputs = gumbel_inputs(seeded)
    _, call_fn = build_gumbel(inputs)

    def per_frame(batch):
        outputs = call_fn(batch)
        return {key: value for key, value in outputs.items() if "perplexity" not in key}

    # The call advances the temperature step: eager items.
    test_case.assert_padding_invariant(
        per_frame, inputs, {"inputs": "padding_mask", "noise": "padding_mask"}, compile_items=False
    )
    # Perplexity counts only real frames: garbage padding leaves it unchanged.
    trimmed = {key: value[:1, :5] for key, value in inputs.items()}
    padded = {key: value[:1].copy() for key, value in inputs.items()}
    padded["padding_mask"][:, 5:] = 0
    padded["inputs"][:, 5:] = 100.0
    for key in ("perplexity", "noisy_perplexity", "frame_perplexity", "noisy_frame_perplexity"):
        np.testing.assert_allclose(
            test_case.to_numpy(call_fn(trimmed)[key]),
            test_case.to_numpy(call_fn(padded)[key]),
            rtol=1e-6,
        )


def test_gumbel_serialization_keeps_step(seeded):
    inputs = gumbel_inputs(seeded)
    layer, _ = build_gumbel(inputs)
    layer.step.assign(12345)

    def call_fn_of(obj):
        def call_fn(batch):
            quantized, code_ids, perplexity, _ = obj(
                batch["inputs"], padding_mask=batch["padding_mask"]
            )
            return dict(
                quantized=quantized,
                code_ids=code_ids,
                perplexity=perplexity,
                temperature=obj.temperature(),
            )

        return call_fn

    test_case.assert_serialization_roundtrip(
        layer, call_fn_of, {"inputs": inputs["inputs"], "padding_mask": inputs["padding_mask"]}
    )


def test_gumbel_backend_parity(seeded, parity_worker):
    test_case.assert_backend_parity(
        "tests.layers.test_quantizers:build_gumbel",
        gumbel_inputs(seeded),
        parity_worker=parity_worker,
    )


def test_gumbel_mixed_precision_finite(seeded):
    test_case.assert_mixed_precision_finite(
        "tests.layers.test_quantizers:build_gumbel", gumbel_inputs(seeded)
    )
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = GumbelVectorQuantizer(NUM_GROUPS, NUM_CODES, CODE_DIM)
    quantized, _, perplexity, frame_perplexity = layer(
        gumbel_inputs(seeded)["inputs"], training=True
    )
    assert keras.backend.standardize_dtype(quantized.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(perplexity.dtype) == "float32"
    assert keras.backend.standardize_dtype(frame_perplexity.dtype) == "float32"


def test_gumbel_codes_ignore_input_scale(seeded):
    """Layer-normalised inputs: shrinking the features cannot flatten the code choice."""
    inputs = gumbel_inputs(seeded)
    layer = GumbelVectorQuantizer(NUM_GROUPS, NUM_CODES, CODE_DIM)
    outputs = [
        layer(
            inputs["inputs"] * scale,
            inputs["padding_mask"],
            training=True,
            gumbel_noise=inputs["noise"],
        )
        for scale in (1.0, 0.1)
    ]
    for full, shrunk in zip(outputs[0], outputs[1]):
        np.testing.assert_allclose(
            test_case.to_numpy(full), test_case.to_numpy(shrunk), rtol=1e-3, atol=1e-4
        )
    raw = GumbelVectorQuantizer(NUM_GROUPS, NUM_CODES, CODE_DIM, normalize_inputs=False)
    raw(inputs["inputs"])
    raw.set_weights(layer.get_weights())
    _, _, perplexity, frame_perplexity = raw(
        inputs["inputs"] * 1e-3, inputs["padding_mask"], training=True
    )
    # Without the norm, shrunk inputs give near-uniform frames: both perplexities near G * V.
    np.testing.assert_allclose(
        test_case.to_numpy(frame_perplexity), NUM_GROUPS * NUM_CODES, rtol=1e-2
    )
    np.testing.assert_allclose(test_case.to_numpy(perplexity), NUM_GROUPS * NUM_CODES, rtol=1e-2)


def numpy_best_rq(features, padding_mask, codebook_size, code_dim, stack_size, seed):
    """Reference built straight from the BEST-RQ recipe with numpy."""
    batch_size, length, dim = features.shape
    rng = np.random.default_rng(seed)
    limit = np.sqrt(6.0 / (dim * stack_size + code_dim))
    projection = rng.uniform(-limit, limit, size=(dim * stack_size, code_dim))
    codebook = rng.standard_normal(size=(codebook_size, code_dim))
    codebook /= np.linalg.norm(codebook, axis=-1, keepdims=True)
    stacks = -(-length // stack_size)
    ids = np.zeros((batch_size, stacks), "int64")
    real = np.zeros((batch_size, stacks), "float32")
    for b in range(batch_size):
        for s in range(stacks):
            frames = (
                features[b, s * stack_size : (s + 1) * stack_size]
                * padding_mask[b, s * stack_size : (s + 1) * stack_size, None]
            )
            frames = np.concatenate([frames, np.zeros((stack_size - len(frames), dim))])
            vector = frames.reshape(-1) @ projection
            vector /= max(np.linalg.norm(vector), 1e-12)
            ids[b, s] = np.argmin(np.linalg.norm(codebook - vector, axis=-1))
            real[b, s] = padding_mask[b, s * stack_size : (s + 1) * stack_size].max()
    return ids, real, projection, codebook


def best_rq_inputs(rng):
    return {
        "inputs": rng.normal(size=(3, 10, 5)).astype("float32"),
        "padding_mask": test_case.random_padding_mask(rng, 3, 10, min_length=3),
    }


def build_best_rq(inputs):
    layer = RandomProjectionQuantizer(codebook_size=64, code_dim=8, stack_size=4, seed=7)
    layer(inputs["inputs"])

    def call_fn(batch):
        code_ids, target_mask = layer(batch["inputs"], padding_mask=batch["padding_mask"])
        return dict(code_ids=(code_ids, target_mask), target_mask=target_mask)

    return layer, call_fn


def test_best_rq_known_answer(seeded):
    inputs = best_rq_inputs(seeded)
    layer, call_fn = build_best_rq(inputs)
    ids, real, projection, codebook = numpy_best_rq(
        inputs["inputs"], inputs["padding_mask"], 64, 8, 4, 7
    )
    code_ids, target_mask = layer(inputs["inputs"], padding_mask=inputs["padding_mask"])
    np.testing.assert_array_equal(test_case.to_numpy(target_mask), real)
    np.testing.assert_array_equal(test_case.to_numpy(code_ids)[real > 0], ids[real > 0])
    # The frozen tensors are the numpy ones, identical on every backend.
    np.testing.assert_allclose(test_case.to_numpy(layer.projection), projection, rtol=1e-6)
    np.testing.assert_allclose(test_case.to_numpy(layer.codebook), codebook, rtol=1e-6)
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 2
    assert len(set(ids.ravel())) > 3


def test_best_rq_default_sizes():
    layer = RandomProjectionQuantizer()
    code_ids, target_mask = layer(np.ones((2, 9, 80), "float32"))
    assert tuple(code_ids.shape) == (2, 3) and tuple(target_mask.shape) == (2, 3)
    assert tuple(layer.codebook.shape) == (8192, 16) and tuple(layer.projection.shape) == (320, 16)
    np.testing.assert_allclose(
        np.linalg.norm(test_case.to_numpy(layer.codebook), axis=-1), 1.0, rtol=1e-5
    )


def test_best_rq_padding_invariant(seeded):
    inputs = best_rq_inputs(seeded)
    inputs["inputs"][inputs["padding_mask"] == 0] = 1e3  # garbage on padding
    _, call_fn = build_best_rq(inputs)

    def per_target(batch):
        outputs = call_fn(batch)
        return {"code_ids": outputs["code_ids"]}

    test_case.assert_padding_invariant(per_target, inputs, {"inputs": "padding_mask"})


def test_best_rq_serialization(seeded):
    inputs = best_rq_inputs(seeded)
    layer, _ = build_best_rq(inputs)
    test_case.assert_serialization_roundtrip(
        layer,
        lambda obj: lambda batch: obj(batch["inputs"], padding_mask=batch["padding_mask"]),
        inputs,
    )


def test_best_rq_backend_parity(seeded, parity_worker):
    test_case.assert_backend_parity(
        "tests.layers.test_quantizers:build_best_rq",
        best_rq_inputs(seeded),
        atol=0,
        parity_worker=parity_worker,
    )


def test_best_rq_mixed_precision(seeded):
    test_case.assert_mixed_precision_finite(
        "tests.layers.test_quantizers:build_best_rq", best_rq_inputs(seeded)
    )


@pytest.mark.parametrize("length", [9, 12])
def test_best_rq_with_lengths_known_only_at_run_time(seeded, length):
    """A step traced without the time length (TensorFlow, several buckets)
    gives the eager targets and target mask, the end zero-filled."""
    inputs = seeded.normal(size=(2, length, 8)).astype("float32")
    padding_mask = test_case.random_padding_mask(seeded, 2, length, min_length=3)
    layer = RandomProjectionQuantizer(codebook_size=64, code_dim=8, stack_size=4, seed=7)
    expected = keras.tree.map_structure(
        test_case.to_numpy, layer(inputs, padding_mask=padding_mask)
    )
    actual = test_case.call_with_unknown_lengths(
        lambda x, m: layer(x, padding_mask=m), inputs, padding_mask
    )
    for a, b in zip(actual, expected):
        np.testing.assert_array_equal(a, b)
    assert expected[0].shape == (2, 3)
    np.testing.assert_array_equal(expected[1], stack_frame_mask_reference(padding_mask, 4))


def stack_frame_mask_reference(mask, stack_size):
    stacks = -(-mask.shape[1] // stack_size)
    padded = np.pad(mask, ((0, 0), (0, stacks * stack_size - mask.shape[1])))
    return padded.reshape(mask.shape[0], stacks, stack_size).max(-1)
