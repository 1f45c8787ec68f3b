"""Conformer block and encoder (Gulati et al. 2020; SLAM; w2v-BERT 2.0).

One block, pre-norm residual units in macaron order:

    x = x + 1/2 * FFN1(x)
    x = x + Dropout(MHSA(LayerNorm(x)))
    x = x + Conv(x)
    x = x + 1/2 * FFN2(x)
    y = LayerNorm(x)

FFN(x) = Dropout(W2 Dropout(swish(W1 LayerNorm(x))))
Conv(x) = Dropout(P2 swish(Norm(Depthwise(GLU(P1 LayerNorm(x))))))

Padded frames are zeroed before the depthwise convolution, never enter
normalisation statistics or attention, and are zero in every output.

`ConformerConfig` holds a block's hyper-parameters once; every stack of
blocks (`ConformerEncoder`, the speech tower, the backbones) takes one.
"""

import dataclasses
from functools import partial

import keras
from keras import ops

from keras_slam.layers.attention import RelativePositionAttention
from keras_slam.layers.flat_dense import FlatDense
from keras_slam.layers.initializers import clone_initializer
from keras_slam.layers.padding import zero_padded_frames

CONV_NORMS = ("group", "layer", "batch")
CONV_PADDINGS = ("same", "causal")


@keras.saving.register_keras_serializable(package="keras_slam")
class FiniteBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization whose moving statistics skip a non-finite batch.

    A batch with NaN/inf in a real frame gives non-finite batch statistics;
    the training step is then skipped (`keras_slam.optimizers`), and so is
    the moving-average update: moving mean and variance keep their values
    unless every new value is finite.
    """

    def call(self, inputs, training=None, mask=None):
        if not training or not self.trainable:
            return super().call(inputs, training=training, mask=mask)
        statistics = (self.moving_mean, self.moving_variance)
        previous = [ops.copy(variable.value) for variable in statistics]
        outputs = super().call(inputs, training=training, mask=mask)
        finite = ops.all(
            ops.stack([ops.all(ops.isfinite(variable.value)) for variable in statistics])
        )
        for variable, old in zip(statistics, previous):
            variable.assign(ops.where(finite, variable.value, old))
        return outputs


@keras.saving.register_keras_serializable(package="keras_slam")
class MaskedGroupNormalization(keras.layers.Layer):
    """GroupNorm over (time, channels in group) of the real frames only.

    Lingvo-style GroupNorm on (B, T, C) frames: the channels are split into
    `groups`; each item and group is normalised with the mean and variance
    of its real frames. Statistics are in float32.

    Call args:
        x: (B, T, C).
        padding_mask: (B, T), 1 = real frame.
    Returns:
        (B, T, C).
    """

    def __init__(self, groups, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups
        self.epsilon = epsilon

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        channels = input_shape[-1]
        if channels % self.groups:
            raise ValueError(
                f"{self.name}: {channels} channels are not divisible into {self.groups} groups"
            )
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")
        self.built = True

    def call(self, x, padding_mask):
        batch, length, channels = ops.shape(x)
        grouped = ops.reshape(
            ops.cast(zero_padded_frames(x, padding_mask), "float32"),
            (batch, length, self.groups, channels // self.groups),
        )
        mask = ops.cast(padding_mask, "float32")[:, :, None, None]
        count = ops.sum(mask, axis=(1, 3), keepdims=True) * (channels // self.groups)
        count = ops.maximum(count, 1.0)
        mean = ops.sum(grouped, axis=(1, 3), keepdims=True) / count
        centered = (grouped - mean) * mask
        variance = ops.sum(ops.square(centered), axis=(1, 3), keepdims=True) / count
        normalized = (grouped - mean) * ops.rsqrt(variance + self.epsilon)
        normalized = ops.reshape(normalized, (batch, length, channels))
        outputs = normalized * ops.cast(self.gamma, "float32") + ops.cast(self.beta, "float32")
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="keras_slam")
class ConformerFeedForward(keras.layers.Layer):
    """Pre-norm feed-forward module: LayerNorm -> Dense -> act -> Dense.

    Call args:
        x: (B, T, D).
    Returns:
        (B, T, D), not yet scaled by 1/2 or added to the residual.
    """

    def __init__(
        self,
        hidden_dim,
        ffn_dim,
        activation="swish",
        dropout=0.0,
        activation_dropout=0.0,
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.ffn_dim = ffn_dim
        self.activation = keras.activations.get(activation)
        self.dropout = dropout
        self.activation_dropout = activation_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        policy = self.dtype_policy
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="layer_norm"
        )
        self.intermediate_dense = FlatDense(
            ffn_dim,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=policy,
            name="intermediate_dense",
        )
        self.intermediate_dropout = keras.layers.Dropout(
            activation_dropout, dtype=policy, name="intermediate_dropout"
        )
        self.output_dense = FlatDense(
            hidden_dim,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=policy,
            name="output_dense",
        )
        self.output_dropout = keras.layers.Dropout(dropout, dtype=policy, name="output_dropout")

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.layer_norm.build(input_shape)
        self.intermediate_dense.build(input_shape)
        self.output_dense.build(input_shape[:-1] + (self.ffn_dim,))
        self.built = True

    def call(self, x, training=False):
        x = self.intermediate_dense(self.layer_norm(x))
        # Recomputed in the backward pass: training keeps the (B, T, F)
        # input and output only, not the activation's intermediates too.
        x = keras.remat(self.activation)(x) if training else self.activation(x)
        x = self.intermediate_dropout(x, training=training)
        return self.output_dropout(self.output_dense(x), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            ffn_dim=self.ffn_dim,
            activation=keras.activations.serialize(self.activation),
            dropout=self.dropout,
            activation_dropout=self.activation_dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_slam")
class ConformerConvolution(keras.layers.Layer):
    """Conformer convolution module with padding-safe depthwise conv and norm.

    LayerNorm -> pointwise_conv1 (C -> 2C) -> GLU -> zero padded frames ->
    depthwise conv -> norm -> swish -> pointwise_conv2 -> dropout.

    The pointwise convolutions are Dense layers (kernel (C, C')); the
    depthwise convolution is a sum of `kernel_size` shifted, per-channel
    scaled copies (`depthwise_kernel`, (kernel_size, C)), which XLA fuses
    and which is ~40x faster than a grouped convolution on CPU.

    Args:
        hidden_dim: channels C.
        kernel_size: depthwise kernel width (5 in SLAM, 31 in w2v-BERT 2.0).
        conv_padding: "same" (centred, odd kernel_size) or "causal" (left
            pad kernel_size - 1, w2v-BERT 2.0).
        conv_norm: "group" (masked GroupNorm, SLAM), "layer" (per frame,
            w2v-BERT 2.0 `depthwise_layer_norm`) or "batch" (BatchNorm with
            statistics over real frames; a non-finite batch leaves the
            moving statistics unchanged).
        conv_norm_groups: groups of the "group" norm.
        pointwise_bias: bias in both pointwise convolutions (Hugging Face
            w2v-BERT 2.0 has none).

    Call args:
        x: (B, T, C).
        padding_mask: (B, T), 1 = real frame.
    Returns:
        (B, T, C), zero at padded frames.
    """

    def __init__(
        self,
        hidden_dim,
        kernel_size=5,
        conv_padding="same",
        conv_norm="group",
        conv_norm_groups=32,
        pointwise_bias=True,
        activation="swish",
        dropout=0.0,
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if conv_padding not in CONV_PADDINGS:
            raise ValueError(f"conv_padding must be one of {CONV_PADDINGS}, got {conv_padding!r}")
        if conv_padding == "same" and kernel_size % 2 == 0:
            raise ValueError(f"conv_padding='same' needs an odd kernel_size, got {kernel_size}")
        if conv_norm not in CONV_NORMS:
            raise ValueError(f"conv_norm must be one of {CONV_NORMS}, got {conv_norm!r}")
        self.hidden_dim = hidden_dim
        self.kernel_size = kernel_size
        self.conv_padding = conv_padding
        self.conv_norm = conv_norm
        self.conv_norm_groups = conv_norm_groups
        self.pointwise_bias = pointwise_bias
        self.activation = keras.activations.get(activation)
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        policy = self.dtype_policy
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="layer_norm"
        )
        self.pointwise_conv1 = FlatDense(
            2 * hidden_dim,
            use_bias=pointwise_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=policy,
            name="pointwise_conv1",
        )
        if conv_norm == "group":
            self.depthwise_norm = MaskedGroupNormalization(
                conv_norm_groups, epsilon=layer_norm_epsilon, dtype=policy, name="depthwise_norm"
            )
        elif conv_norm == "layer":
            self.depthwise_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, dtype=policy, name="depthwise_norm"
            )
        else:
            self.depthwise_norm = FiniteBatchNormalization(
                epsilon=layer_norm_epsilon, dtype=policy, name="depthwise_norm"
            )
        self.pointwise_conv2 = FlatDense(
            hidden_dim,
            use_bias=pointwise_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=policy,
            name="pointwise_conv2",
        )
        self.output_dropout = keras.layers.Dropout(dropout, dtype=policy, name="output_dropout")

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.layer_norm.build(input_shape)
        self.pointwise_conv1.build(input_shape)
        self.depthwise_kernel = self.add_weight(
            shape=(self.kernel_size, self.hidden_dim),
            initializer=clone_initializer(self.kernel_initializer),
            name="depthwise_kernel",
        )
        self.depthwise_norm.build(input_shape)
        self.pointwise_conv2.build(input_shape)
        self.built = True

    def _depthwise_conv(self, x):
        if self.conv_padding == "causal":
            left, right = self.kernel_size - 1, 0
        else:
            left = right = (self.kernel_size - 1) // 2
        length = ops.shape(x)[1]
        padded = ops.pad(x, ((0, 0), (left, right), (0, 0)))
        kernel = ops.cast(self.depthwise_kernel, x.dtype)
        outputs = padded[:, :length, :] * kernel[0]
        for tap in range(1, self.kernel_size):
            outputs = outputs + padded[:, tap : tap + length, :] * kernel[tap]
        return outputs

    def _normalize(self, x, padding_mask, training):
        if self.conv_norm == "group":
            return self.depthwise_norm(x, padding_mask)
        if self.conv_norm == "batch":
            return self.depthwise_norm(x, training=training, mask=padding_mask)
        return self.depthwise_norm(x)

    def call(self, x, padding_mask, training=False):
        x = self.pointwise_conv1(self.layer_norm(x))
        values, gates = ops.split(x, 2, axis=-1)
        x = zero_padded_frames(values * ops.sigmoid(gates), padding_mask)
        x = self._normalize(self._depthwise_conv(x), padding_mask, training)
        x = self.pointwise_conv2(self.activation(x))
        return zero_padded_frames(self.output_dropout(x, training=training), padding_mask)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            kernel_size=self.kernel_size,
            conv_padding=self.conv_padding,
            conv_norm=self.conv_norm,
            conv_norm_groups=self.conv_norm_groups,
            pointwise_bias=self.pointwise_bias,
            activation=keras.activations.serialize(self.activation),
            dropout=self.dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@dataclasses.dataclass(frozen=True)
class ConformerConfig:
    """The hyper-parameters of a Conformer block, besides its width D.

    One config serves every block of a model: `ConformerBlock`,
    `ConformerEncoder`, `SpeechTower`, `SpeechEncoder` and `SLAMBackbone`
    take it as `conformer=` (a `ConformerConfig` or its dict) and store it
    in `get_config` as a plain dict (`to_dict`), so presets and `.keras`
    files hold JSON. Vary one field with `dataclasses.replace`.

    The defaults are SLAM's block (Bapna et al. 2021, PAPERS.md): depthwise
    kernel 5, centred, GroupNorm, and "relative_sinusoidal" positions, the
    Transformer-XL relative positions of the Conformer (Gulati et al. 2020)
    that SLAM builds on. w2v-BERT 2.0 (Hugging Face `Wav2Vec2Bert`) sets
    kernel 31, causal padding, LayerNorm, no pointwise bias and clipped
    "relative_key" positions.

    Attributes:
        num_heads: attention heads (D must be divisible by it).
        ffn_dim: inner width of both feed-forward modules.
        kernel_size, conv_padding, conv_norm, conv_norm_groups,
            pointwise_bias: see `ConformerConvolution`.
        position_encoding: "relative_sinusoidal", "relative_key", "rotary"
            (fused attention kernels where the backend has them) or "none";
            see `RelativePositionAttention`.
        left_context, right_context: clip "relative_key"'s distances.
        dropout: on each module's output (FFN, MHSA, conv); the towers also
            apply it to their front end and text embedding.
        attention_dropout: on the attention probabilities.
        activation_dropout: inside the feed-forward modules.
        layer_norm_epsilon: of every LayerNorm (and the conv norm).
        activation: Keras name of the feed-forward and conv activation.
        kernel_initializer: Keras name of the kernels' initializer.
        remat: rematerialise each block (`keras.remat`): the backward pass
            recomputes a block's activations instead of keeping them, so
            a stack keeps only the blocks' inputs (about one (B, T, D)
            tensor per block; `keras_slam.utils.memory_plan`) for ~1/3
            more compute. Outputs and gradients are unchanged.
        attention_query_chunk: attend this many query rows at a time
            (`RelativePositionAttention(query_chunk=...)`): the attention's
            (B, H, T, T) logits and gradients exist in (B, H, chunk, T)
            pieces. Same outputs and gradients; with `remat` it lowers a
            training step's peak memory. None: all rows at once.
    """

    num_heads: int
    ffn_dim: int
    kernel_size: int = 5
    conv_padding: str = "same"
    conv_norm: str = "group"
    conv_norm_groups: int = 32
    pointwise_bias: bool = True
    position_encoding: str = "relative_sinusoidal"
    left_context: int = 64
    right_context: int = 8
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    layer_norm_epsilon: float = 1e-5
    activation: str = "swish"
    kernel_initializer: str = "glorot_uniform"
    remat: bool = False
    attention_query_chunk: int | None = None

    @classmethod
    def coerce(cls, value):
        """`value` (a `ConformerConfig` or its dict) as a `ConformerConfig`.

        Raises:
            TypeError: for any other type.
            ValueError: naming the dict's unknown or missing fields.
        """
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(
                f"conformer must be a ConformerConfig or a dict, got {type(value).__name__}"
            )
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(value) - set(fields))
        missing = sorted(
            name
            for name, field in fields.items()
            if name not in value and field.default is dataclasses.MISSING
        )
        if unknown or missing:
            raise ValueError(
                f"conformer config {value}: unknown fields {unknown}, missing "
                f"fields {missing}; the fields are {list(fields)}"
            )
        return cls(**value)

    def to_dict(self):
        """The fields as a JSON-ready dict (what `get_config` stores)."""
        return dataclasses.asdict(self)


@keras.saving.register_keras_serializable(package="keras_slam")
class ConformerBlock(keras.layers.Layer):
    """One Conformer block (formula in the module docstring).

    Args:
        hidden_dim: model width D.
        conformer: `ConformerConfig` (or its dict).

    Call args:
        x: (B, T, D).
        padding_mask: (B, T), 1 = real frame.
        training: enables dropout and batch statistics.
    Returns:
        (B, T, D), zero at padded frames.
    """

    def __init__(self, hidden_dim, conformer, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.conformer = ConformerConfig.coerce(conformer)
        config = self.conformer
        policy = self.dtype_policy

        def feed_forward(name):
            return ConformerFeedForward(
                hidden_dim,
                config.ffn_dim,
                activation=config.activation,
                dropout=config.dropout,
                activation_dropout=config.activation_dropout,
                layer_norm_epsilon=config.layer_norm_epsilon,
                kernel_initializer=config.kernel_initializer,
                dtype=policy,
                name=name,
            )

        self.ffn1 = feed_forward("ffn1")
        self.self_attention_layer_norm = keras.layers.LayerNormalization(
            epsilon=config.layer_norm_epsilon,
            dtype=policy,
            name="self_attention_layer_norm",
        )
        self.self_attention = RelativePositionAttention(
            hidden_dim,
            config.num_heads,
            position_encoding=config.position_encoding,
            left_context=config.left_context,
            right_context=config.right_context,
            attention_dropout=config.attention_dropout,
            kernel_initializer=config.kernel_initializer,
            query_chunk=config.attention_query_chunk,
            dtype=policy,
            name="self_attention",
        )
        self.self_attention_dropout = keras.layers.Dropout(
            config.dropout, dtype=policy, name="self_attention_dropout"
        )
        self.convolution = ConformerConvolution(
            hidden_dim,
            kernel_size=config.kernel_size,
            conv_padding=config.conv_padding,
            conv_norm=config.conv_norm,
            conv_norm_groups=config.conv_norm_groups,
            pointwise_bias=config.pointwise_bias,
            activation=config.activation,
            dropout=config.dropout,
            layer_norm_epsilon=config.layer_norm_epsilon,
            kernel_initializer=config.kernel_initializer,
            dtype=policy,
            name="convolution",
        )
        self.ffn2 = feed_forward("ffn2")
        self.final_layer_norm = keras.layers.LayerNormalization(
            epsilon=config.layer_norm_epsilon, dtype=policy, name="final_layer_norm"
        )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        for layer in (
            self.ffn1,
            self.self_attention_layer_norm,
            self.self_attention,
            self.convolution,
            self.ffn2,
            self.final_layer_norm,
        ):
            layer.build(input_shape)
        self.built = True

    def call(self, x, padding_mask, training=False):
        x = x + 0.5 * self.ffn1(x, training=training)
        attended = self.self_attention(
            self.self_attention_layer_norm(x), padding_mask, training=training
        )
        x = x + self.self_attention_dropout(attended, training=training)
        x = x + self.convolution(x, padding_mask, training=training)
        x = x + 0.5 * self.ffn2(x, training=training)
        return zero_padded_frames(self.final_layer_norm(x), padding_mask)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, conformer=self.conformer.to_dict())
        return config


@keras.saving.register_keras_serializable(package="keras_slam")
class ConformerEncoder(keras.layers.Layer):
    """A stack of `num_layers` ConformerBlocks named `conformer_block_{i}`.

    Args:
        num_layers: number of blocks.
        hidden_dim: model width D.
        conformer: `ConformerConfig` (or its dict) of every block.

    Call args:
        x: (B, T, D).
        padding_mask: (B, T), 1 = real frame.
        training: enables dropout and batch statistics.
    Returns:
        (B, T, D), zero at padded frames.
    """

    def __init__(self, num_layers, hidden_dim, conformer, **kwargs):
        super().__init__(**kwargs)
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.conformer = ConformerConfig.coerce(conformer)
        self.blocks = [
            ConformerBlock(
                hidden_dim,
                self.conformer,
                dtype=self.dtype_policy,
                name=f"conformer_block_{i}",
            )
            for i in range(num_layers)
        ]

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        for block in self.blocks:
            block.build(input_shape)
        self.built = True

    def call(self, x, padding_mask, training=False):
        x = zero_padded_frames(x, padding_mask)
        for block in self.blocks:
            if self.conformer.remat:
                x = keras.remat(partial(block, training=training))(x, padding_mask)
            else:
                x = block(x, padding_mask, training=training)
        return x

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_layers=self.num_layers,
            hidden_dim=self.hidden_dim,
            conformer=self.conformer.to_dict(),
        )
        return config
