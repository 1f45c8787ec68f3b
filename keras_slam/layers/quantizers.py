"""Target quantizers for speech self-supervision.

- `GumbelVectorQuantizer`: the learned wav2vec 2.0 / w2v-BERT quantizer
  (G groups of V codes, straight-through hard Gumbel-softmax), the same
  computation as Hugging Face `Wav2Vec2GumbelVectorQuantizer`.
- `RandomProjectionQuantizer`: BEST-RQ's frozen random projection and
  codebook; it makes targets, it does not learn.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_slam.layers.flat_dense import FlatDense
from keras_slam.layers.padding import zero_padded_frames

# A module import: `keras_slam.metrics` imports the layers package while it
# loads (its codebook metrics use `masked_mean`), so names are read at call time.
from keras_slam.metrics import codebook


@keras.saving.register_keras_serializable(package="keras_slam")
class GumbelVectorQuantizer(keras.layers.Layer):
    """Product quantizer with straight-through Gumbel-softmax code choice.

    Frames are projected to G*V logits; each group picks one of its V
    codevectors (dim code_dim / G) and the picks are concatenated. In
    training the pick is the hard Gumbel-softmax sample (forward one-hot,
    gradient of the soft sample); in inference it is the argmax.

    The temperature is `max(start * decay**step, end)`. `step` is a
    non-trainable int32 variable (saved with the weights) that every call
    with `training=True` advances by one after using it, so call the layer
    once per training step (or set `step` yourself).

    The logits see the inputs layer-normalised (no scale or offset), as
    wav2vec 2.0 and Hugging Face quantize layer-normed features: otherwise
    the network can flatten every frame's code distribution by shrinking
    the features, the cheapest way to raise the diversity loss's
    perplexity, and the targets become Gumbel noise.

    Perplexity, as in Hugging Face: in training from the soft distribution
    softmax(logits) (without noise), in inference from the one-hot picks;
    averaged over the frames where `padding_mask` is 1 and summed over
    groups. Pass the real frames (w2v-BERT) or the masked real frames
    (Hugging Face `Wav2Vec2ForPreTraining` passes `mask_time_indices`).
    `frame_perplexity` (see `keras_slam.metrics.codebook.frame_perplexity`)
    is the per-frame counterpart over the same frames: near G when each
    frame commits to a code, near the perplexity when codes are noise.

    Args:
        num_groups: G (w2v-BERT 1, wav2vec 2.0 2).
        num_codes: V, codes per group (w2v-BERT 1024, wav2vec 2.0 320).
        code_dim: size of the output vectors, divisible by G.
        start_temperature, end_temperature, temperature_decay: the anneal.
        seed: seed of the layer's Gumbel-noise SeedGenerator.
        normalize_inputs: layer-normalise the inputs before the logits
            (True; False gives Hugging Face's quantizer on raw inputs).

    Call args:
        inputs: (B, T, D) features.
        padding_mask: optional (B, T), frames counted in the perplexity.
        training: Gumbel sample (True) or argmax (False).
        gumbel_noise: optional (B, T, G, V) Gumbel(0, 1) noise used instead
            of sampling (tests inject the noise a reference implementation
            draws).

    Returns:
        quantized: (B, T, code_dim) in the compute dtype,
        code_ids: (B, T, G) int32,
        perplexity: scalar float32,
        frame_perplexity: scalar float32.
    """

    def __init__(
        self,
        num_groups=1,
        num_codes=1024,
        code_dim=1024,
        start_temperature=2.0,
        end_temperature=0.1,
        temperature_decay=0.999995,
        seed=None,
        normalize_inputs=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if code_dim % num_groups:
            raise ValueError(f"code_dim {code_dim} must be divisible by num_groups {num_groups}.")
        self.num_groups = num_groups
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.start_temperature = start_temperature
        self.end_temperature = end_temperature
        self.temperature_decay = temperature_decay
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.normalize_inputs = normalize_inputs
        self.input_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, center=False, scale=False, dtype=self.dtype_policy, name="input_norm"
        )
        self.logits_projection = FlatDense(
            num_groups * num_codes,
            kernel_initializer=keras.initializers.RandomNormal(stddev=1.0),
            dtype=self.dtype_policy,
            name="logits_projection",
        )

    def build(self, input_shape):
        self.input_norm.build(input_shape)
        self.logits_projection.build(input_shape)
        self.codevectors = self.add_weight(
            shape=(self.num_groups, self.num_codes, self.code_dim // self.num_groups),
            initializer=keras.initializers.RandomUniform(0.0, 1.0),
            name="codevectors",
        )
        self.step = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="step"
        )

    def temperature(self):
        """Current Gumbel temperature, scalar float32."""
        step = ops.cast(self.step, "float32")
        decayed = self.start_temperature * ops.exp(step * math.log(self.temperature_decay))
        return ops.maximum(decayed, self.end_temperature)

    def call(self, inputs, padding_mask=None, training=None, gumbel_noise=None):
        batch_size, length = ops.shape(inputs)[0], ops.shape(inputs)[1]
        if self.normalize_inputs:
            inputs = self.input_norm(inputs)
        logits = ops.cast(self.logits_projection(inputs), "float32")
        logits = ops.reshape(logits, (batch_size, length, self.num_groups, self.num_codes))
        if training:
            if gumbel_noise is None:
                uniform = keras.random.uniform(
                    ops.shape(logits),
                    minval=np.finfo("float32").tiny,
                    maxval=1.0,
                    seed=self.seed_generator,
                )
                gumbel_noise = -ops.log(-ops.log(uniform))
            noisy = (logits + ops.cast(gumbel_noise, "float32")) / self.temperature()
            self.step.assign(self.step + 1)
            code_ids = ops.argmax(noisy, axis=-1)
            soft = ops.softmax(noisy, axis=-1)
            hard = ops.one_hot(code_ids, self.num_codes, dtype="float32")
            code_probs = hard + soft - ops.stop_gradient(soft)
            frame_probs = ops.softmax(logits, axis=-1)
        else:
            code_ids = ops.argmax(logits, axis=-1)
            code_probs = ops.one_hot(code_ids, self.num_codes, dtype="float32")
            frame_probs = code_probs
        codevectors = ops.cast(self.codevectors, "float32")
        quantized = ops.einsum("btgv,gvd->btgd", code_probs, codevectors)
        quantized = ops.reshape(quantized, (batch_size, length, self.code_dim))
        return (
            ops.cast(quantized, self.compute_dtype),
            ops.cast(code_ids, "int32"),
            codebook.codebook_perplexity(frame_probs, padding_mask),
            codebook.frame_perplexity(frame_probs, padding_mask),
        )

    def compute_output_shape(self, input_shape):
        return (
            (*input_shape[:2], self.code_dim),
            (*input_shape[:2], self.num_groups),
            (),
            (),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            num_groups=self.num_groups,
            num_codes=self.num_codes,
            code_dim=self.code_dim,
            start_temperature=self.start_temperature,
            end_temperature=self.end_temperature,
            temperature_decay=self.temperature_decay,
            seed=self.seed,
            normalize_inputs=self.normalize_inputs,
        )
        return config


def stack_frame_mask(mask, stack_size):
    """(B, T) mask -> (B, ceil(T / stack_size)): a stack is 1 if any frame is."""
    mask = ops.cast(mask, "float32")
    return ops.max(stack_frames(mask[:, :, None], mask, stack_size), axis=-1)


def stack_frames(inputs, padding_mask, stack_size):
    """Concatenates consecutive frames, padding zeroed, the end zero-filled.

    T may be unknown until run time (TensorFlow graphs of variable-length
    batches); D must be static.

    Args:
        inputs: (B, T, D); padding_mask: (B, T), 1 = real.
        stack_size: frames per stack.
    Returns:
        (B, ceil(T / stack_size), stack_size * D) float32.
    """
    inputs = zero_padded_frames(ops.cast(inputs, "float32"), padding_mask)
    batch_size, length, dim = ops.shape(inputs)[0], ops.shape(inputs)[1], inputs.shape[2]
    stacked_length = (length + stack_size - 1) // stack_size
    # Pad by the most any length needs, then keep whole stacks.
    inputs = ops.pad(inputs, ((0, 0), (0, stack_size - 1), (0, 0)))[
        :, : stacked_length * stack_size
    ]
    return ops.reshape(inputs, (batch_size, stacked_length, stack_size * dim))


@keras.saving.register_keras_serializable(package="keras_slam")
class RandomProjectionQuantizer(keras.layers.Layer):
    """BEST-RQ targets: nearest code of a frozen random projection.

    `stack_size` consecutive frames (padding zeroed, the end zero-filled to a
    multiple) are concatenated, projected by a frozen Xavier-uniform matrix
    to `code_dim`, L2-normalised and matched to the nearest row of a frozen
    L2-normalised Gaussian codebook (largest cosine = smallest L2 distance
    between unit vectors). Both tensors come from `numpy.random
    .default_rng(seed)`, so every backend builds the same ones; they are
    non-trainable weights, saved and restored with the model. Inputs are
    expected normalised per feature (the log-mel front end does it).

    Args:
        codebook_size: number of codes (8192).
        code_dim: codebook dimension (16).
        stack_size: frames per target (4: 10 ms features -> 40 ms targets).
        seed: integer seed of the numpy generator.

    Call args:
        inputs: (B, T, D) features.
        padding_mask: optional (B, T), 1 = real.

    Returns:
        code_ids: (B, ceil(T / stack_size)) int32 (no gradient),
        target_padding_mask: (B, ceil(T / stack_size)) float32, 1 where the
            stack holds at least one real frame.
    """

    def __init__(self, codebook_size=8192, code_dim=16, stack_size=4, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.stack_size = stack_size
        self.seed = seed

    def build(self, input_shape):
        stacked_dim = input_shape[-1] * self.stack_size
        rng = np.random.default_rng(self.seed)
        limit = math.sqrt(6.0 / (stacked_dim + self.code_dim))
        projection = rng.uniform(-limit, limit, size=(stacked_dim, self.code_dim))
        codebook = rng.standard_normal(size=(self.codebook_size, self.code_dim))
        codebook /= np.linalg.norm(codebook, axis=-1, keepdims=True)
        self.projection = self.add_weight(
            shape=projection.shape,
            initializer=lambda shape, dtype=None: projection.astype("float32"),
            trainable=False,
            dtype="float32",
            name="projection",
        )
        self.codebook = self.add_weight(
            shape=codebook.shape,
            initializer=lambda shape, dtype=None: codebook.astype("float32"),
            trainable=False,
            dtype="float32",
            name="codebook",
        )

    def call(self, inputs, padding_mask=None):
        if padding_mask is None:
            padding_mask = ops.ones(ops.shape(inputs)[:2], "float32")
        stacked = stack_frames(ops.stop_gradient(inputs), padding_mask, self.stack_size)
        projected = ops.matmul(stacked, self.projection)
        norm = ops.sqrt(ops.sum(ops.square(projected), axis=-1, keepdims=True))
        projected = projected / ops.maximum(norm, 1e-12)
        similarity = ops.matmul(projected, ops.transpose(self.codebook))
        code_ids = ops.cast(ops.argmax(similarity, axis=-1), "int32")
        return code_ids, stack_frame_mask(padding_mask, self.stack_size)

    def compute_output_shape(self, input_shape):
        length = input_shape[1]
        stacked = None if length is None else -(-length // self.stack_size)
        return (input_shape[0], stacked), (input_shape[0], stacked)

    def get_config(self):
        config = super().get_config()
        config.update(
            codebook_size=self.codebook_size,
            code_dim=self.code_dim,
            stack_size=self.stack_size,
            seed=self.seed,
        )
        return config
