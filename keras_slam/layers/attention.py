"""Multi-head self-attention with relative positions (Conformer, w2v-BERT 2.0)."""

import math

import keras
import keras_hub
from keras import ops

from keras_slam.layers.flat_dense import FlatDense
from keras_slam.layers.initializers import clone_initializer
from keras_slam.layers.padding import zero_padded_frames

POSITION_ENCODINGS = ("relative_key", "relative_sinusoidal", "rotary", "none")
# Position encodings with no (T, T) logit bias: they reach fused kernels.
_BIAS_FREE_ENCODINGS = ("rotary", "none")

# Added to the logits of padded keys: far below any real logit, so padded keys
# get weight exactly 0, yet finite in float32 and bfloat16 (no inf - inf NaN).
_PADDED_KEY_LOGIT = -1e9


def sinusoidal_relative_positions(length, dim, dtype="float32"):
    """Sinusoids of the relative positions `length - 1, ..., -(length - 1)`.

    Transformer-XL / ESPnet / Hugging Face layout: even channels sin, odd
    channels cos, frequencies `10000 ** (-2k / dim)`; row `r` encodes the
    position `length - 1 - r` (query index minus key index).

    Returns:
        (2 * length - 1, dim) tensor.
    """
    positions = ops.cast(ops.arange(length - 1, -length, -1), "float32")
    inverse_frequencies = ops.exp(
        ops.cast(ops.arange(0, dim, 2), "float32") * (-math.log(10000.0) / dim)
    )
    angles = positions[:, None] * inverse_frequencies[None, :]
    interleaved = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
    return ops.cast(ops.reshape(interleaved, (-1, dim)), dtype)


def _skew(per_column, left_pad, right_pad, first, key_length):
    """Rows read along diagonals, gather-free: `[..., r, j] = per_column[..., r, j - r + first - left_pad]`.

    Transformer-XL's pad/reshape trick: each row is padded to `stride + 1`
    columns, the rows are flattened and read back with a row stride of
    `stride`, so row r starts r columns further left. Only pads, slices and
    reshapes (cheap on CPU, where a (T, T) gather and its scatter-add
    gradient are not). Where `j - r + first - left_pad` falls outside
    `[0, W)` the value is another entry of `per_column` (finite, not
    meaningful): callers select it away. The callers choose the pads so that
    `first + key_length <= stride`; they may be symbolic (a dynamic T), so
    nothing here compares them.

    Args:
        per_column: (B, H, Q, W).
        left_pad, right_pad: columns of padding on each side of a row.
        first: the padded column row 0 reads for key 0.
        key_length: K, the number of keys.
    Returns:
        (B, H, Q, K).
    """
    batch, heads, rows, width = ops.shape(per_column)
    stride = left_pad + width + right_pad - 1
    padded = ops.pad(per_column, ((0, 0), (0, 0), (0, 0), (left_pad, right_pad)))
    flat = ops.reshape(padded, (batch, heads, rows * (stride + 1)))[:, :, : rows * stride]
    return ops.reshape(flat, (batch, heads, rows, stride))[..., first : first + key_length]


def relative_shift(logits_per_offset, query_start=0):
    """Query x key logits from logits per key-minus-query offset, gather-free.

    Args:
        logits_per_offset: (B, H, Q, 2T - 1) for the queries
            `query_start, ..., query_start + Q - 1` of T; column c holds the
            offset (key index - query index) `c - (T - 1)`.
        query_start: index of the first query row among the T.
    Returns:
        (B, H, Q, T): `[..., r, j] = logits_per_offset[..., r, j - (query_start + r) + T - 1]`.
    """
    length = (ops.shape(logits_per_offset)[-1] + 1) // 2
    # first + K = 2T - 1 - query_start <= W: one column of padding (stride W).
    return _skew(logits_per_offset, 0, 1, length - 1 - query_start, length)


def clipped_relative_logits(logits_per_distance, left_context, key_length=None, query_start=0):
    """Query x key logits from logits per clipped distance, gather-free.

    Only the band `-left_context <= j - i <= right_context` varies; it is
    skewed into place (`_skew`) over rows of about K + R columns. Keys
    beyond the band select the first or last distance's logit.

    Args:
        logits_per_distance: (B, H, Q, R), R = left + right context + 1,
            for the queries `query_start, ..., query_start + Q - 1`; column
            r is the offset (key index - query index) `r - left_context`.
        left_context: offsets below `-left_context` use column 0.
        key_length: K, the number of keys (default Q: all queries at once).
        query_start: index of the first query row.
    Returns:
        (B, H, Q, K): `[..., r, j] = logits_per_distance[..., r, clip(j - i) + left_context]`
        with i = query_start + r.
    """
    rows, width = ops.shape(logits_per_distance)[2], ops.shape(logits_per_distance)[3]
    key_length = rows if key_length is None else key_length
    right_context = width - 1 - left_context
    # Column j - i + left_context: chunks past the left context start left of
    # column 0 (left padding); K columns on the right keep every key in the row.
    left_pad = max(0, query_start - left_context)
    band = _skew(
        logits_per_distance, left_pad, key_length, left_context - query_start + left_pad, key_length
    )
    offset = ops.arange(key_length)[None, :] - ops.arange(query_start, query_start + rows)[:, None]
    return ops.where(
        offset < -left_context,
        logits_per_distance[..., :1],
        ops.where(offset > right_context, logits_per_distance[..., -1:], band),
    )


@keras.saving.register_keras_serializable(package="keras_slam")
class RelativePositionAttention(keras.layers.Layer):
    """Multi-head self-attention with relative position logits.

    `position_encoding`:
    - "relative_key" (w2v-BERT 2.0): a learned `distance_embedding` of
      `left_context + right_context + 1` rows; the key-minus-query distance
      is clipped to `[-left_context, right_context]` and
      `logits += q . E[distance] / sqrt(head_dim)`.
    - "relative_sinusoidal" (Conformer / Transformer-XL): sinusoids of the
      query-minus-key distance through `position_dense` (no bias), learned
      biases `pos_bias_u` (content) and `pos_bias_v` (position):
      `logits = ((q + u) . k + (q + v) . P[i - j]) / sqrt(head_dim)`.
    - "rotary" (RoPE, Su et al. 2021): keras-hub's `RotaryEmbedding` turns
      the channel pairs (k, k + d/2) of each head's query and key at
      position t by `t * 10000 ** (-2k / d)`, so `q . k` depends on the
      positions only through their difference; no position weights.
      Quality (`recipes.slam --config w2v_bert_tiny`, 300 steps, JAX, seed
      0, mean of the last 5 of 30 epochs): contrastive loss 3.016 against
      relative_sinusoidal's 3.014 (within noise, epoch std 0.003); w2v MLM
      loss 4.111 against 4.048 (epoch std 0.022): rotary learns the masked
      prediction slightly slower at this size.
    - "none": plain scaled dot-product attention.

    "rotary" and "none" add no (T, T) bias, so they run through
    `keras.ops.dot_product_attention` with a key mask and
    `flash_attention=None` (fused kernels where the backend has them).

    Padded keys get zero weight; padded query rows output zeros.

    Args:
        hidden_dim: model width D (= num_heads * head_dim).
        num_heads: number of heads H.
        position_encoding: one of "relative_key", "relative_sinusoidal",
            "rotary", "none".
        left_context, right_context: clipping range of "relative_key".
        attention_dropout: dropout on the attention probabilities.
        kernel_initializer: initializer of the projections.
        query_chunk: if set, attend `query_chunk` query rows at a time
            (the last chunk may be shorter), so the logits, probabilities
            and their gradients exist as (B, H, query_chunk, T) pieces
            instead of one (B, H, T, T) tensor; the softmax probabilities
            kept for backward still add up to (B, H, T, T) unless the block
            is rematerialised. Same outputs and gradients. Needs a static T
            (one chunk otherwise).

    Call args:
        x: (B, T, D).
        padding_mask: (B, T), 1 = real frame, 0 = pad.
        training: enables dropout.
    Returns:
        (B, T, D).
    """

    def __init__(
        self,
        hidden_dim,
        num_heads,
        position_encoding="relative_key",
        left_context=64,
        right_context=8,
        attention_dropout=0.0,
        kernel_initializer="glorot_uniform",
        query_chunk=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"position_encoding must be one of {POSITION_ENCODINGS}, got {position_encoding!r}"
            )
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        if query_chunk is not None and query_chunk < 1:
            raise ValueError(f"query_chunk must be a positive int or None, got {query_chunk}")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.position_encoding = position_encoding
        self.left_context = left_context
        self.right_context = right_context
        self.attention_dropout = attention_dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.query_chunk = query_chunk
        self.head_dim = hidden_dim // num_heads

        def dense(name, use_bias=True):
            return FlatDense(
                hidden_dim,
                use_bias=use_bias,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy,
                name=name,
            )

        self.query_dense = dense("query_dense")
        self.key_dense = dense("key_dense")
        self.value_dense = dense("value_dense")
        self.output_dense = dense("output_dense")
        if position_encoding == "relative_sinusoidal":
            self.position_dense = dense("position_dense", use_bias=False)
        if position_encoding == "rotary":
            if self.head_dim % 2:
                raise ValueError(f"rotary positions need an even head_dim, got {self.head_dim}")
            # (B, T, H, d): rotates along T, channel pairs along d.
            self.rotary_embedding = keras_hub.layers.RotaryEmbedding(
                sequence_axis=1, feature_axis=-1, dtype=self.dtype_policy, name="rotary_embedding"
            )
        self.probability_dropout = keras.layers.Dropout(
            attention_dropout, dtype=self.dtype_policy, name="probability_dropout"
        )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        for layer in (self.query_dense, self.key_dense, self.value_dense):
            layer.build(input_shape)
        self.output_dense.build(input_shape[:-1] + (self.hidden_dim,))
        if self.position_encoding == "relative_key":
            self.distance_embedding = self.add_weight(
                shape=(self.left_context + self.right_context + 1, self.head_dim),
                initializer=keras.initializers.RandomNormal(stddev=1.0),
                name="distance_embedding",
            )
        elif self.position_encoding == "relative_sinusoidal":
            self.position_dense.build((None, self.hidden_dim))
            head_shape = (self.num_heads, self.head_dim)
            self.pos_bias_u = self.add_weight(
                shape=head_shape, initializer="glorot_uniform", name="pos_bias_u"
            )
            self.pos_bias_v = self.add_weight(
                shape=head_shape, initializer="glorot_uniform", name="pos_bias_v"
            )
        self.built = True

    def _split_heads(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        return ops.reshape(x, (batch, length, self.num_heads, self.head_dim))

    def _offset_positions(self, length):
        """(2T - 1, H, d) projected sinusoids; row r is the offset (key - query) r - (T - 1)."""
        sinusoids = sinusoidal_relative_positions(length, self.hidden_dim, self.compute_dtype)
        return ops.reshape(self.position_dense(sinusoids), (-1, self.num_heads, self.head_dim))

    def _position_logits(self, query, query_start, key_length, offset_positions):
        """(B, H, Q, K) position logits of the query rows, unscaled, and the content query.

        `query` (B, Q, H, d) holds the rows `query_start, ..., query_start + Q - 1`.
        """
        if self.position_encoding == "relative_key":
            embedding = ops.cast(self.distance_embedding, query.dtype)
            per_distance = ops.einsum("bthd,rd->bhtr", query, embedding)
            logits = clipped_relative_logits(
                per_distance, self.left_context, key_length, query_start
            )
            return logits, query
        pos_bias_v = ops.cast(self.pos_bias_v, query.dtype)
        per_offset = ops.einsum("bthd,rhd->bhtr", query + pos_bias_v, offset_positions)
        pos_bias_u = ops.cast(self.pos_bias_u, query.dtype)
        return relative_shift(per_offset, query_start), query + pos_bias_u

    def _attend(self, query, query_start, key, value, padding_mask, offset_positions, training):
        """(B, Q, H, d) attended values of the query rows (B, Q, H, d) starting at `query_start`."""
        scale = 1.0 / math.sqrt(self.head_dim)
        mask = ops.cast(padding_mask, query.dtype)
        # (B, 1, 1, T): pushes padded keys out of every softmax.
        bias = ((1.0 - mask) * _PADDED_KEY_LOGIT)[:, None, None, :]
        if self.position_encoding not in _BIAS_FREE_ENCODINGS:
            key_length = ops.shape(key)[1]
            position_logits, query = self._position_logits(
                query, query_start, key_length, offset_positions
            )
            bias = bias + position_logits * scale

        if training and self.attention_dropout > 0:
            logits = ops.einsum("bthd,bshd->bhts", query, key) * scale + bias
            probabilities = ops.softmax(ops.cast(logits, "float32"), axis=-1)
            probabilities = self.probability_dropout(
                ops.cast(probabilities, query.dtype), training=training
            )
            return ops.einsum("bhts,bshd->bthd", probabilities, value)
        if self.position_encoding in _BIAS_FREE_ENCODINGS:
            real_key = ops.greater(padding_mask, 0)
            # An all-padding item attends to every key (its output is zeroed
            # below): an all-False mask row is NaN in some fused kernels.
            no_real_key = ops.logical_not(ops.any(real_key, axis=1, keepdims=True))
            key_mask = ops.logical_or(real_key, no_real_key)[:, None, None, :]
            return ops.dot_product_attention(
                query, key, value, mask=key_mask, scale=scale, flash_attention=None
            )
        # Fused attention where the backend has it (cuDNN/SDPA on GPU).
        return ops.dot_product_attention(query, key, value, bias=bias, scale=scale)

    def call(self, x, padding_mask, training=False):
        # A padded frame's NaN/inf would reach real queries through
        # 0 (softmax weight) * NaN (value).
        x = zero_padded_frames(x, padding_mask)
        query = self._split_heads(self.query_dense(x))
        key = self._split_heads(self.key_dense(x))
        value = self._split_heads(self.value_dense(x))
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        if self.position_encoding == "rotary":
            query, key = self.rotary_embedding(query), self.rotary_embedding(key)
        offset_positions = None
        if self.position_encoding == "relative_sinusoidal":
            offset_positions = self._offset_positions(length)
        # Query chunks need a static T (as every XLA step has); else one chunk.
        chunked = isinstance(length, int) and bool(self.query_chunk)
        chunk = self.query_chunk if chunked else length
        starts = range(0, length, chunk) if chunked else (0,)
        attended = [
            self._attend(
                query[:, start : start + chunk],
                start,
                key,
                value,
                padding_mask,
                offset_positions,
                training,
            )
            for start in starts
        ]
        attended = attended[0] if len(attended) == 1 else ops.concatenate(attended, axis=1)
        attended = ops.reshape(attended, (batch, length, self.hidden_dim))
        return zero_padded_frames(self.output_dense(attended), padding_mask)

    def compute_output_shape(self, x_shape, padding_mask_shape=None):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            position_encoding=self.position_encoding,
            left_context=self.left_context,
            right_context=self.right_context,
            attention_dropout=self.attention_dropout,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            query_chunk=self.query_chunk,
        )
        return config
