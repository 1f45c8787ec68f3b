"""Span masking for masked speech and text modelling, and mask embeddings.

`compute_span_mask` draws the (B, T) mask with `keras.random` and fixed
shapes, so it runs inside a jitted step; T may be unknown until run time
(a TensorFlow step traced for batches of several length buckets). Each real frame t with
t <= length - span_length (t = 0 if the utterance is shorter than a span)
starts a span with probability p; a span covers span_length frames, spans
may overlap, and padding is never masked (right padding assumed). If fewer
than `min_spans` spans start, the missing ones are added at random allowed
starts (the smallest of the same uniform draws that decided the starts, so
utterances that already have enough spans are untouched).

Expected masked fraction of a long utterance: 1 - (1 - p)**span_length
(frames in the first and last span_length - 1 positions are masked a little
less often). w2v-BERT: p = 0.065, span 10 -> ~49%. Given a target
`mask_rate` r the start probability is p = 1 - (1 - r)**(1 / span_length):
SpanBERT-style text MLM with r = 0.15, span 5 -> p ~ 0.032; span 20 (mSLAM
characters) -> p ~ 0.0081. (SpanBERT draws geometric span lengths; here the
length is fixed, as in w2v-BERT.)
"""

import keras
from keras import ops


def mask_rate_to_start_probability(mask_rate, span_length):
    """Start probability p whose expected masked fraction is `mask_rate`."""
    if not 0.0 <= mask_rate < 1.0:
        raise ValueError(f"mask_rate must be in [0, 1), got {mask_rate}.")
    return 1.0 - (1.0 - mask_rate) ** (1.0 / span_length)


def _resolve_start_probability(start_probability, mask_rate, span_length):
    if span_length < 1:
        raise ValueError(f"span_length must be at least 1, got {span_length}.")
    if (start_probability is None) == (mask_rate is None):
        raise ValueError("Give exactly one of start_probability and mask_rate.")
    if mask_rate is not None:
        return mask_rate_to_start_probability(mask_rate, span_length)
    return start_probability


def compute_span_mask(
    padding_mask,
    span_length=10,
    start_probability=None,
    mask_rate=None,
    min_spans=0,
    seed=None,
):
    """Random span mask over the real frames.

    Args:
        padding_mask: (B, T), 1 = real (right-padded).
        span_length: frames per span (w2v-BERT 10, SpanBERT text 5 or 20).
        start_probability: p, chance that an allowed frame starts a span
            (w2v-BERT 0.065).
        mask_rate: alternatively the expected masked fraction (see module
            docstring); give exactly one of the two.
        min_spans: minimum spans per utterance (capped by the allowed starts).
        seed: int, SeedGenerator or backend seed for `keras.random`.
    Returns:
        (B, T) float32, 1 = masked (always 0 on padding).
    """
    probability = _resolve_start_probability(start_probability, mask_rate, span_length)
    real = ops.cast(padding_mask, "float32") > 0
    lengths = ops.sum(ops.cast(real, "int32"), axis=1, keepdims=True)
    positions = ops.arange(ops.shape(real)[1], dtype="int32")[None, :]
    last_start = ops.maximum(lengths - span_length, 0)
    allowed = ops.logical_and(positions <= last_start, positions < lengths)
    draws = keras.random.uniform(ops.shape(real), seed=seed)
    # Disallowed frames get a draw above every real one (uniform is < 1).
    draws = ops.where(allowed, draws, 2.0)
    starts = draws < probability
    if min_spans > 0:
        # Extra disallowed columns let k = min_spans hold for any length.
        candidates = ops.pad(draws, ((0, 0), (0, min_spans)), constant_values=2.0)
        smallest = -ops.top_k(-candidates, k=min_spans)[0]
        starts = ops.logical_or(starts, draws <= smallest[:, -1:])
    starts = ops.logical_and(starts, allowed)
    # A frame is masked if a span started within the previous span_length
    # frames: a windowed count of starts from a cumulative sum.
    started = ops.cumsum(ops.cast(starts, "int32"), axis=1)
    before_window = ops.pad(started, ((0, 0), (span_length, 0)))[:, :-span_length]
    masked = ops.logical_and(started - before_window > 0, real)
    return ops.cast(masked, "float32")


@keras.saving.register_keras_serializable(package="keras_slam")
class SpanMasking(keras.layers.Layer):
    """`compute_span_mask` with its own SeedGenerator (state saved, jit-safe).

    Args: as `compute_span_mask` (span_length, start_probability or
        mask_rate, min_spans) plus `seed` for the SeedGenerator.
    Call args:
        padding_mask: (B, T), 1 = real.
    Returns:
        (B, T) float32 mask, 1 = masked.
    """

    def __init__(
        self,
        span_length=10,
        start_probability=None,
        mask_rate=None,
        min_spans=0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _resolve_start_probability(start_probability, mask_rate, span_length)
        self.span_length = span_length
        self.start_probability = start_probability
        self.mask_rate = mask_rate
        self.min_spans = min_spans
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, padding_mask):
        return compute_span_mask(
            padding_mask,
            span_length=self.span_length,
            start_probability=self.start_probability,
            mask_rate=self.mask_rate,
            min_spans=self.min_spans,
            seed=self.seed_generator,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            span_length=self.span_length,
            start_probability=self.start_probability,
            mask_rate=self.mask_rate,
            min_spans=self.min_spans,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_slam")
class MaskEmbedding(keras.layers.Layer):
    """Replaces masked frames by a learned vector or by Gaussian noise.

    Args:
        mode: "learned" (wav2vec 2.0 / w2v-BERT: one trainable vector,
            uniform [0, 1) init as in fairseq) or "noise" (BEST-RQ: fresh
            N(0, noise_stddev**2) noise per masked frame).
        noise_stddev: standard deviation in "noise" mode (0.1).
        seed: seed of the noise SeedGenerator.

    Call args:
        inputs: (B, T, D).
        masked_frames: (B, T), 1 = replace.
    Returns:
        (B, T, D), same dtype as the compute dtype.
    """

    def __init__(self, mode="learned", noise_stddev=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("learned", "noise"):
            raise ValueError(f"mode must be 'learned' or 'noise', got {mode!r}.")
        self.mode = mode
        self.noise_stddev = noise_stddev
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if mode == "noise" else None

    def build(self, input_shape):
        if self.mode == "learned":
            self.mask_vector = self.add_weight(
                shape=(input_shape[-1],),
                initializer=keras.initializers.RandomUniform(0.0, 1.0),
                name="mask_vector",
            )

    def call(self, inputs, masked_frames):
        inputs = ops.cast(inputs, self.compute_dtype)
        if self.mode == "learned":
            replacement = ops.broadcast_to(
                ops.cast(self.mask_vector, self.compute_dtype), ops.shape(inputs)
            )
        else:
            replacement = keras.random.normal(
                ops.shape(inputs),
                stddev=self.noise_stddev,
                dtype=self.compute_dtype,
                seed=self.seed_generator,
            )
        return ops.where(ops.cast(masked_frames, "bool")[:, :, None], replacement, inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, noise_stddev=self.noise_stddev, seed=self.seed)
        return config
