"""Log-mel filterbank front end: waveform + padding mask -> features + frame mask."""

import sys
import types

import keras
import keras_hub
import numpy as np

from keras_slam.layers.padding import zero_padded_frames
from keras_slam.utils.keras_private import get_preset_loader

# Settings of Hugging Face's `SeamlessM4TFeatureExtractor`, the w2v-BERT 2.0
# front end: Kaldi-compatible fbank on int16-scaled audio, per-utterance
# per-bin normalisation, two 10 ms frames stacked into one 160-dim 20 ms frame.
W2V_BERT_2_0_FRONTEND = dict(
    sample_rate=16000,
    num_mel_bins=80,
    frame_length=400,
    frame_step=160,
    fft_length=512,
    window="povey",
    power=2.0,
    min_frequency=20.0,
    max_frequency=8000.0,
    mel_scale="kaldi",
    waveform_scale=32768.0,
    preemphasis=0.97,
    remove_dc_offset=True,
    log_floor=1.192092955078125e-07,
    normalize_per_bin=True,
    stack_frames=2,
)

# Added to the per-bin variance before the square root, as Hugging Face does.
_VARIANCE_EPSILON = 1e-7


def normalize_per_bin(ops, features, real_frame):
    """Per utterance and bin: mean 0, unbiased variance 1 over the real frames.

    Args:
        ops: `keras.ops` or the TensorFlow spelling (`_ops_for`).
        features: (B, T, F) float32.
        real_frame: (B, T) bool, real frames a prefix.
    Returns:
        (normalised (B, T, F), zero at padding; mean (B, F); std (B, F) =
        sqrt(unbiased variance + 1e-7)), the statistics over real frames (0
        and sqrt(1e-7) for a row without any).
    """
    weights = ops.cast(real_frame, "float32")[..., None]
    count = ops.sum(weights, axis=1, keepdims=True)
    # Sums run over deviations from the first (real) frame, not over raw
    # log energies (~15 after int16 scaling): float32 rounding then stays
    # small and does not depend on how much padding follows.
    first = features[:, :1] * weights[:, :1]
    deviation = (features - first) * weights
    mean = ops.sum(deviation, axis=1, keepdims=True) / ops.maximum(count, 1.0)
    centered = (deviation - mean) * weights
    # Unbiased (ddof=1) as Hugging Face; one real frame divides by 1.
    variance = ops.sum(centered * centered, axis=1, keepdims=True) / ops.maximum(count - 1.0, 1.0)
    std = ops.sqrt(variance + _VARIANCE_EPSILON)
    return centered / std, (first + mean)[:, 0], std[:, 0]


def _hertz_to_mel(hertz, mel_scale):
    if mel_scale == "htk":
        return 2595.0 * np.log10(1.0 + hertz / 700.0)
    return 1127.0 * np.log(1.0 + hertz / 700.0)


def mel_filterbank(num_mel_bins, fft_length, sample_rate, min_frequency, max_frequency, mel_scale):
    """(fft_length // 2 + 1, num_mel_bins) float64 triangular filters.

    Triangles are linear in mel (as Kaldi and `tf.signal` build them), with
    centres evenly spaced in mel between the band edges; no area norm.
    """
    if mel_scale not in ("htk", "kaldi"):
        raise ValueError(f"mel_scale must be 'htk' or 'kaldi', got {mel_scale!r}")
    edges = np.linspace(
        _hertz_to_mel(min_frequency, mel_scale),
        _hertz_to_mel(max_frequency, mel_scale),
        num_mel_bins + 2,
    )
    bin_hertz = np.arange(fft_length // 2 + 1) * sample_rate / fft_length
    bin_mel = _hertz_to_mel(bin_hertz, mel_scale)[:, None]
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel - lower) / (centre - lower)
    falling = (upper - bin_mel) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def analysis_window(name, length):
    """(length,) float64 window: periodic Hann, or Kaldi's symmetric Povey."""
    if name == "hann":
        return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)
    if name == "povey":
        symmetric_hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / (length - 1))
        return symmetric_hann**0.85
    raise ValueError(f"window must be 'hann' or 'povey', got {name!r}")


def _tensorflow_ops(tf):
    """The `keras.ops` this layer uses, spelled with TensorFlow ops.

    For TF tensors under the JAX and torch backends (a `tf.data` map), where
    `keras.ops` cannot take them. `tf` is the module already loaded by the
    caller: the layer itself never imports TensorFlow.
    """

    def shape(x):
        dynamic = tf.shape(x)
        return tuple(dynamic[i] if dim is None else dim for i, dim in enumerate(x.shape))

    def rfft(x, fft_length):
        spectrum = tf.signal.rfft(x, [fft_length])
        return tf.math.real(spectrum), tf.math.imag(spectrum)

    return types.SimpleNamespace(
        any=tf.reduce_any,
        arange=tf.range,
        cast=tf.cast,
        concatenate=tf.concat,
        convert_to_tensor=tf.convert_to_tensor,
        isfinite=tf.math.is_finite,
        log=tf.math.log,
        logical_and=tf.logical_and,
        logical_not=tf.logical_not,
        logical_or=tf.logical_or,
        matmul=tf.linalg.matmul,
        maximum=tf.maximum,
        mean=tf.reduce_mean,
        ones_like=tf.ones_like,
        pad=tf.pad,
        reshape=tf.reshape,
        rfft=rfft,
        shape=shape,
        sqrt=tf.sqrt,
        sum=tf.reduce_sum,
        where=tf.where,
    )


def _ops_for(waveform):
    """`keras.ops`, or their TensorFlow spelling for a TF tensor on another backend."""
    tf = sys.modules.get("tensorflow")
    if (
        tf is not None
        and isinstance(waveform, tf.Tensor)
        and keras.config.backend() != "tensorflow"
    ):
        return _tensorflow_ops(tf)
    return keras.ops


@keras.saving.register_keras_serializable(package="keras_slam")
class LogMelSpectrogram(keras_hub.layers.AudioConverter):
    """Log-mel filterbank features with a frame mask, for models and tf.data.

    Frames are cut Kaldi "snip edges" style: frame `t` covers samples
    `[t * frame_step, t * frame_step + frame_length)` and is real only when
    all of them are real, so padding never changes a real frame. Per frame:
    remove DC offset (optional) -> pre-emphasis (optional) -> window ->
    |rfft|^power -> mel filterbank -> log(max(mel, log_floor)). Optionally
    each utterance is normalised per mel bin over its real frames (mean 0,
    unbiased variance 1) and `stack_frames` consecutive frames are
    concatenated. Padded frames come out as zeros.

    The defaults are SLAM's (80 bins, 25 ms Hann window, 10 ms hop, FFT 512);
    `LogMelSpectrogram.w2v_bert_2_0()` gives Hugging Face's
    `SeamlessM4TFeatureExtractor` features.

    A keras-hub `AudioConverter`: a preprocessor saves it to a preset as
    `audio_converter.json` and loads it back. The same layer runs inside
    `tf.data.Dataset.map` under every Keras backend: called on TF tensors
    under JAX or torch it computes with the TensorFlow spelling of the same
    ops (`_tensorflow_ops`). Its computation is always float32.

    Non-finite audio: an utterance with a NaN/inf real sample (or whose
    features overflow) gets an all-zero frame mask and zero features, so it
    drops out of every loss instead of spreading NaN; a pipeline can count
    such items as `num_frames(length) > 0` with an empty frame mask.

    Args:
        sample_rate: audio sample rate in Hz.
        num_mel_bins: mel filters F.
        frame_length: window length in samples.
        frame_step: hop in samples.
        fft_length: FFT size (>= frame_length, frames zero-padded).
        window: "hann" (periodic) or "povey" (Kaldi, symmetric Hann^0.85).
        power: 2.0 for a power spectrum, 1.0 for magnitude.
        min_frequency, max_frequency: band edges of the filterbank in Hz.
        mel_scale: "htk" (2595 log10(1 + f/700)) or "kaldi" (1127 ln(1 + f/700)).
        waveform_scale: multiplies the waveform first (32768 = int16 range).
        preemphasis: coefficient p of x[n] - p x[n-1] within each frame; 0 = off.
        remove_dc_offset: subtract each frame's mean before pre-emphasis.
        log_floor: mel energies are clipped to at least this before the log.
        normalize_per_bin: per-utterance, per-bin mean/variance normalisation.
        stack_frames: consecutive frames concatenated into one output frame.

    Call args:
        waveform: (B, S) float audio.
        padding_mask: (B, S), 1 for real samples, 0 for padding; default all real.

    Returns:
        features: (B, T, stack_frames * num_mel_bins) float32, with
            T = (1 + (S - frame_length) // frame_step) // stack_frames.
        frame_mask: (B, T) float32, 1 for real frames.
    """

    def __init__(
        self,
        sample_rate=16000,
        num_mel_bins=80,
        frame_length=400,
        frame_step=160,
        fft_length=512,
        window="hann",
        power=2.0,
        min_frequency=125.0,
        max_frequency=7600.0,
        mel_scale="htk",
        waveform_scale=1.0,
        preemphasis=0.0,
        remove_dc_offset=False,
        log_floor=1e-6,
        normalize_per_bin=False,
        stack_frames=1,
        **kwargs,
    ):
        # Features are computed in float32 whatever the global policy is;
        # the model casts them on entry.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if fft_length < frame_length:
            raise ValueError(f"fft_length ({fft_length}) must be >= frame_length ({frame_length})")
        if power not in (1.0, 2.0):
            raise ValueError(f"power must be 1.0 or 2.0, got {power}")
        if not 0 < min_frequency < max_frequency <= sample_rate / 2:
            raise ValueError(
                "need 0 < min_frequency < max_frequency <= sample_rate / 2, got "
                f"{min_frequency}, {max_frequency}, {sample_rate}"
            )
        self.sample_rate = sample_rate
        self.num_mel_bins = num_mel_bins
        self.frame_length = frame_length
        self.frame_step = frame_step
        self.fft_length = fft_length
        self.window = window
        self.power = power
        self.min_frequency = min_frequency
        self.max_frequency = max_frequency
        self.mel_scale = mel_scale
        self.waveform_scale = waveform_scale
        self.preemphasis = preemphasis
        self.remove_dc_offset = remove_dc_offset
        self.log_floor = log_floor
        self.normalize_per_bin = normalize_per_bin
        self.stack_frames = stack_frames
        # Constants, not weights: rebuilt from the config, cast to the ops in use.
        self._window_values = analysis_window(window, frame_length).astype("float32")
        self._mel_matrix = mel_filterbank(
            num_mel_bins, fft_length, sample_rate, min_frequency, max_frequency, mel_scale
        ).astype("float32")
        self.built = True

    @classmethod
    def w2v_bert_2_0(cls, **kwargs):
        """The w2v-BERT 2.0 front end (`W2V_BERT_2_0_FRONTEND`): 160-dim, 20 ms frames."""
        return cls(**{**W2V_BERT_2_0_FRONTEND, **kwargs})

    def _frames_before_stacking(self, num_samples):
        frames = (num_samples - self.frame_length) // self.frame_step + 1
        # max(frames, 0) with operators only, so it works on ints and on
        # tf / jax / torch / numpy tensors alike.
        return (frames + abs(frames)) // 2

    def num_frames(self, num_samples):
        """Real output frames for `num_samples` real samples (int or int tensor)."""
        return self._frames_before_stacking(num_samples) // self.stack_frames

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """The front end saved in `preset` (its `audio_converter.json`).

        One class serves every speech backbone, so unlike keras-hub's
        `AudioConverter.from_preset` no subclass is looked up by backbone.
        """
        return get_preset_loader(preset).load_audio_converter(cls, **kwargs)

    def audio_shape(self):
        """(frames, features) of one preprocessed utterance."""
        return (None, self.stack_frames * self.num_mel_bins)

    def _split_frames(self, ops, waveform, num_frames):
        """(B, S) -> (B, T, frame_length) by reshaping into hops, no gather.

        Frame t is hops t .. t + k - 1 concatenated and cut to frame_length
        (k = ceil(frame_length / frame_step)); the zeros appended here only
        fill the tail of the last hop, which no frame reaches.
        """
        hops_per_frame = -(-self.frame_length // self.frame_step)
        num_hops = num_frames + hops_per_frame - 1
        waveform = ops.pad(waveform, [[0, 0], [0, self.frame_step * hops_per_frame]])[
            :, : num_hops * self.frame_step
        ]
        hops = ops.reshape(waveform, (-1, num_hops, self.frame_step))
        frames = ops.concatenate(
            [hops[:, i : i + num_frames] for i in range(hops_per_frame)], axis=-1
        )
        return frames[..., : self.frame_length]

    def call(self, waveform, padding_mask=None):
        ops = _ops_for(waveform)
        if len(waveform.shape) != 2:
            raise ValueError(
                f"{self.name}: waveform must be (batch, samples), got shape {tuple(waveform.shape)}"
            )
        num_samples = ops.shape(waveform)[1]
        if isinstance(num_samples, int) and num_samples < self.frame_length:
            raise ValueError(
                f"{self.name}: waveform has {num_samples} samples, fewer than one "
                f"frame ({self.frame_length})"
            )
        waveform = ops.cast(waveform, "float32")
        if padding_mask is None:
            padding_mask = ops.ones_like(waveform)
        elif len(padding_mask.shape) != 2:
            raise ValueError(
                f"{self.name}: padding_mask must be (batch, samples), got shape "
                f"{tuple(padding_mask.shape)}"
            )
        real_sample = ops.cast(padding_mask, "float32") > 0
        finite_sample = ops.isfinite(waveform)
        bad_sample = ops.logical_and(real_sample, ops.logical_not(finite_sample))
        # NaN/inf anywhere (even in padding) must not enter the arithmetic.
        waveform = ops.where(finite_sample, waveform, 0.0) * self.waveform_scale

        num_frames = self._frames_before_stacking(num_samples)
        frames = self._split_frames(ops, waveform, num_frames)
        if self.remove_dc_offset:
            frames = frames - ops.mean(frames, axis=-1, keepdims=True)
        if self.preemphasis:
            frames = ops.concatenate(
                [
                    frames[..., :1] * (1.0 - self.preemphasis),
                    frames[..., 1:] - self.preemphasis * frames[..., :-1],
                ],
                axis=-1,
            )
        frames = frames * ops.convert_to_tensor(self._window_values)
        real, imag = ops.rfft(frames, fft_length=self.fft_length)
        spectrum = real * real + imag * imag
        if self.power == 1.0:
            spectrum = ops.sqrt(spectrum)
        mel = ops.matmul(spectrum, ops.convert_to_tensor(self._mel_matrix))
        log_mel = ops.log(ops.maximum(mel, self.log_floor))

        lengths = ops.sum(ops.cast(real_sample, "int32"), axis=1)
        frame_index = ops.arange(num_frames)
        real_frame = frame_index[None, :] < self._frames_before_stacking(lengths)[:, None]
        overflow = ops.logical_and(real_frame[..., None], ops.logical_not(ops.isfinite(log_mel)))
        valid_item = ops.logical_not(
            ops.logical_or(ops.any(bad_sample, axis=1), ops.any(overflow, axis=(1, 2)))
        )
        real_frame = ops.logical_and(real_frame, valid_item[:, None])
        features = ops.where(real_frame[..., None], log_mel, 0.0)
        if self.normalize_per_bin:
            features = normalize_per_bin(ops, features, real_frame)[0]

        num_output_frames = num_frames // self.stack_frames
        features = ops.reshape(
            features[:, : num_output_frames * self.stack_frames],
            (-1, num_output_frames, self.stack_frames * self.num_mel_bins),
        )
        # An output frame is real when all of its stacked frames are, i.e.
        # when its last one is (real frames form a prefix).
        frame_mask = real_frame[:, self.stack_frames - 1 :: self.stack_frames]
        return features, ops.cast(frame_mask, "float32")

    def compute_output_shape(self, waveform_shape, padding_mask_shape=None):
        num_samples = waveform_shape[1]
        frames = None if num_samples is None else self.num_frames(num_samples)
        return (
            (waveform_shape[0], frames, self.stack_frames * self.num_mel_bins),
            (waveform_shape[0], frames),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            sample_rate=self.sample_rate,
            num_mel_bins=self.num_mel_bins,
            frame_length=self.frame_length,
            frame_step=self.frame_step,
            fft_length=self.fft_length,
            window=self.window,
            power=self.power,
            min_frequency=self.min_frequency,
            max_frequency=self.max_frequency,
            mel_scale=self.mel_scale,
            waveform_scale=self.waveform_scale,
            preemphasis=self.preemphasis,
            remove_dc_offset=self.remove_dc_offset,
            log_floor=self.log_floor,
            normalize_per_bin=self.normalize_per_bin,
            stack_frames=self.stack_frames,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_slam")
class PerBinNormalization(keras.layers.Layer):
    """The front end's per-utterance normalisation inside a model, keeping
    the statistics it removes (`normalize_per_bin`).

    Reads features *without* that normalisation (`LogMelSpectrogram(
    normalize_per_bin=False)`): per utterance, each feature column is
    normalised over the real frames, as the front end does per mel bin
    (identical for `stack_frames=1`), and its mean and std come out as an
    utterance vector: the voice, channel and spectral envelope that the
    normalised features no longer show. float32 inside.

    Call args:
        features: (B, T, F).
        padding_mask: (B, T), 1 = real frame (a prefix), 0 = pad.
    Returns:
        (normalised (B, T, F) in the features' dtype, zero at padding;
        statistics (B, 2F) float32: [mean, std] per column).
    """

    def call(self, features, padding_mask):
        # A select, so that NaN/inf at padded frames never reach the sums.
        features = zero_padded_frames(keras.ops.cast(features, "float32"), padding_mask)
        normalized, mean, std = normalize_per_bin(
            keras.ops, features, keras.ops.greater(padding_mask, 0)
        )
        return keras.ops.cast(normalized, features.dtype), keras.ops.concatenate([mean, std], -1)

    def compute_output_spec(self, features, padding_mask):
        statistics = (features.shape[0], 2 * features.shape[-1])
        return (
            keras.KerasTensor(features.shape, features.dtype),
            keras.KerasTensor(statistics, "float32"),
        )
