"""SLAM / mSLAM pre-training task: every objective, weighted, in one step.

One batch is a dict of optional sub-batches (keras_slam.data.pipeline):

    {"speech": {"speech_features", "speech_padding_mask"},
     "text":   {"token_ids", "token_padding_mask"},
     "paired": {"speech_features", "speech_padding_mask",
                "token_ids", "token_padding_mask"}}

Objectives (names as in `OBJECTIVES`, each on when listed in `objectives`):

- "contrastive" / "diversity" / "w2v_mlm" (speech; w2v-BERT, Chung et al.
  2021): the subsampled frames are span-masked (p = 0.065, span 10); the
  unmasked frames go to a `GumbelVectorQuantizer`; masked frames become the
  learned mask embedding and pass through the speech tower (the contrastive
  module): contrastive loss of its projected output against the quantized
  targets with K same-utterance masked distractors, plus the diversity loss;
  the shared encoder (the masked-prediction module) predicts the code ids at
  masked frames. Collapse (few codes, trivially predicted) can make these
  losses look good, so three views that it cannot fool are reported:
  `w2v_mlm_gain` = CE(masked frames' codes under the running code marginal
  of the last ~100 steps, `running_code_counts`) - w2v_mlm_loss, in nats,
  how much better than always predicting the code frequencies the encoder
  does (<= 0 for a collapsed or unpredictable codebook). The batch's own
  marginal was the baseline before; its entropy is biased low at these
  batch sizes: BEST-RQ on the main job's tiny backbone after 100 steps
  read -0.49 nats per batch, against -0.05 for the same model's CE vs the
  marginal pooled over 30 batches (3250 frames);
  `valid_negatives`, the mean number of contrastive negatives per masked
  frame that differ from the target (K when codes are diverse); and
  `codebook_usage` (a `CodebookUsage` metric), the fraction
  of codes chosen as targets at masked real frames over the last
  `codebook_usage_window_steps` steps, with `codebook_usage_frames`, how
  many frames that is; `keras_slam.callbacks.CodebookCollapseMonitor`
  acts on them.
  `codebook_perplexity` (what the diversity loss raises) and
  `codebook_frame_perplexity` (codes each frame hesitates between) are the
  soft views: collapse drives both to 1, flat noise-driven codes bring the
  second up to the first. With `speech_target="random_projection"` (BEST-RQ) the ids
  come from a frozen `RandomProjectionQuantizer` of the input features,
  masked frames become noise, and only "w2v_mlm" applies.
- "text_mlm" (text; SpanBERT): span masks (15%, span 5 SLAM / 20 mSLAM),
  BERT 80/10/10 corruption, cross-entropy at masked real tokens; LM head
  tied to the token embedding or separate.
- "tlm" (paired): ~75% of speech frames and ~50% of text tokens masked,
  speech ++ text packed through the shared encoder; predicts masked tokens
  and masked speech codes (the sum of the two cross-entropies).
- "stm" (paired): matched vs mismatched pairs, binary head on the masked
  mean of the joint encoding (or on the speech and text halves' means and
  their product and difference, `stm_pooling`). Each pair's `stm_negatives` mismatched texts
  are the transcripts of the present rows 1..K places after it, or of the
  K nearest to it in text length (`stm_negative_choice`;
  `keras_slam.objectives.stm.mismatched_partners`); they share the weight
  of one pair, so positives and negatives weigh the same.
- "ctc" (paired): CTC of the transcript on the speech half (speech-tower or
  shared-encoder output, `ctc_input`), per target token: each utterance's
  negative log-likelihood divided by its transcript length, averaged over
  the rows with speech and text (torch's `ctc_loss(reduction="mean")`), so
  its scale does not grow with the clip length and weight 1 suits it. Its
  head is a dense layer or the transposed token embedding (`tie_ctc_head`).

Loss weights are non-trainable float32 variables (`objective_weights`):
`set_objective_weights` changes them between steps without recompiling
(`keras_slam.callbacks.ObjectiveSchedule`). A sub-batch that is
missing, or fully masked, contributes exactly 0. All losses are float32.

All random choices (span masks, negatives, corruption, Gumbel noise) are
drawn from the task's SeedGenerators; `draw_masks` returns the masks and
negatives so that a test can fix them (`compute_objectives(..., draws=)`).
"""

import keras
import keras_hub
from keras import ops

from keras_slam.layers.flat_dense import FlatDense
from keras_slam.layers.masking import MaskEmbedding, compute_span_mask
from keras_slam.layers.padding import masked_mean
from keras_slam.layers.quantizers import (
    GumbelVectorQuantizer,
    RandomProjectionQuantizer,
    stack_frames,
)
from keras_slam.metrics.codebook import CodebookUsage, code_counts, marginal_cross_entropy
from keras_slam.models.layout_map import LayoutMapMixin
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.objectives.ctc import ctc_loss
from keras_slam.objectives.mlm import corrupt_tokens, masked_token_loss
from keras_slam.objectives.stm import mismatched_partners, stm_loss
from keras_slam.objectives.w2v_bert import (
    contrastive_loss,
    diversity_loss,
    masked_prediction_loss,
    sample_negative_indices,
)
from keras_slam.optimizers import FiniteMean, log_finite_losses, skip_non_finite_steps
from keras_slam.utils.keras_private import scale_loss_for_distribution
from keras_slam.utils.preset_utils import PresetMixin

OBJECTIVES = ("contrastive", "diversity", "w2v_mlm", "text_mlm", "tlm", "stm", "ctc")
DEFAULT_WEIGHTS = {
    "contrastive": 1.0,
    "diversity": 0.1,
    "w2v_mlm": 1.0,
    "text_mlm": 1.0,
    "tlm": 1.0,
    "stm": 1.0,
    "ctc": 1.0,
}
SPEECH_OBJECTIVES = ("contrastive", "diversity", "w2v_mlm")
# Every reported value (each a keras.metrics.Mean): the sub-batch it comes
# from and the objectives that produce it (any one of them suffices).
METRICS = {
    "contrastive_loss": ("speech", ("contrastive",)),
    "diversity_loss": ("speech", ("diversity",)),
    "w2v_mlm_loss": ("speech", ("w2v_mlm",)),
    "text_mlm_loss": ("text", ("text_mlm",)),
    "tlm_loss": ("paired", ("tlm",)),
    "stm_loss": ("paired", ("stm",)),
    "ctc_loss": ("paired", ("ctc",)),
    "contrastive_accuracy": ("speech", ("contrastive",)),
    "w2v_mlm_accuracy": ("speech", ("w2v_mlm",)),
    "text_mlm_accuracy": ("text", ("text_mlm",)),
    "tlm_text_accuracy": ("paired", ("tlm",)),
    "tlm_speech_accuracy": ("paired", ("tlm",)),
    "stm_accuracy": ("paired", ("stm",)),
    # Views of the speech objectives that collapse cannot fool.
    "valid_negatives": ("speech", ("contrastive",)),
    "w2v_mlm_gain": ("speech", ("w2v_mlm",)),
    # From the Gumbel quantizer only (speech_target="gumbel").
    "codebook_perplexity": ("speech", SPEECH_OBJECTIVES),
    "codebook_frame_perplexity": ("speech", SPEECH_OBJECTIVES),
}
SPEECH_TARGETS = ("gumbel", "random_projection")
QUANTIZER_INPUTS = ("frontend", "detached_frontend", "features")
CTC_INPUTS = ("speech_tower", "shared")
STM_NEGATIVE_CHOICES = ("next", "length_matched")
STM_POOLINGS = ("mean", "modality_means")
# `SLAMPretrainer.cross_modal_scores`: what the shared encoder reads beside the
# masked modality (nothing, the row's own other modality, another row's).
CROSS_MODAL_CONTEXTS = ("alone", "own", "other")
# Per-step decay of the running code counts behind `w2v_mlm_gain` (a memory
# of about 100 steps, so the baseline follows targets that drift).
CODE_COUNT_DECAY = 0.99


def _any_real(padding_mask):
    """(B, T) -> scalar float32 1.0 if any position is real."""
    return ops.cast(ops.sum(ops.cast(padding_mask, "float32")) > 0, "float32")


@keras.saving.register_keras_serializable(package="keras_slam")
class SLAMPretrainer(LayoutMapMixin, PresetMixin, keras_hub.models.Task):
    """Pre-trains a `SLAMBackbone` on any mix of speech, text and pairs.

    Args:
        backbone: a `SLAMBackbone`.
        objectives: which of `OBJECTIVES` to compute (static: decides the
            heads and the graph). Default: all.
        objective_weights: initial weights {name: float} (missing names
            take `DEFAULT_WEIGHTS`; diversity is 0.1 as in w2v-BERT).
        speech_target: "gumbel" (w2v-BERT) or "random_projection" (BEST-RQ).
        num_code_groups, num_codes, code_dim: Gumbel quantizer (G, V,
            codevector size; w2v-BERT 1 x 1024 of dim 1024). For BEST-RQ
            `num_codes` is the codebook size and `code_dim` its dimension.
        start_temperature, end_temperature, temperature_decay: Gumbel
            temperature anneal, per training step (2 -> 0.1).
        speech_mask_probability, speech_span_length: w2v-BERT span starts
            (0.065) and span length (10 frames). The tiny recipes use 0.05
            and 2 (`recipes.slam.TINY_SPEECH_MASKING`, measured there): at
            their size 10-frame spans leave masked prediction nothing to
            learn beyond the code frequencies.
        num_negatives: K contrastive distractors (100).
        contrastive_temperature: logit temperature (0.1).
        text_mask_rate, text_span_length: SpanBERT (0.15, 5; mSLAM 20).
        tlm_speech_mask_rate, tlm_text_mask_rate: TLM masking (0.75, 0.5).
        stm_negatives: mismatched texts scored per pair (K, static; 1).
            STM's shared-encoder pass reads (K + 1) x B packed sequences.
        stm_negative_choice: which present rows' texts are a pair's
            negatives (`STM_NEGATIVE_CHOICES`): "next" (the K rows after it)
            or "length_matched" (the K rows nearest to it in text length,
            so that the speech / text length ratio does not give them away;
            needs more than 2 pairs per batch to choose).
        stm_pooling: what STM's head reads from a pair's joint encoding
            (`STM_POOLINGS`): "mean" (the masked mean over its speech and
            text positions, (D,)) or "modality_means" (the means s of the
            speech positions and t of the text positions as [s, t, s * t,
            |s - t|], (4D,): a linear head on it can compare the halves,
            which it cannot do on their mean). With `tie_ctc_head` and 100
            CTC-only steps before 100 of TLM + STM + CTC (README, 2026-12-02)
            held-out STM stayed at the length rule's level (0.56 vs 0.57).
        mask_token_id: id written at masked text positions (2, the
            `<mask>` of `keras_slam.data.tokenizers`).
        first_regular_token_id: random replacements are drawn from
            [first_regular_token_id, vocabulary_size); 3 skips the
            tokenizers' reserved <pad>, <unk>, <mask>.
        mask_fraction, random_fraction: BERT corruption (0.8, 0.1).
        tie_lm_head: predict tokens with the transposed token embedding
            (True) or a separate dense head.
        tie_ctc_head: CTC's logits from the transposed token embedding
            (True: the CTC input frames are pulled toward the embeddings of
            their characters, the vectors the shared encoder reads as text)
            or from a separate dense head (False).
        ctc_input: "speech_tower" or "shared" (shared encoder over speech).
        blank_index: CTC blank (0, the padding id, never a real label).
        quantizer_input: what the Gumbel quantizer turns into targets:
            "frontend" (w2v-BERT: the front end's frames, trained by every
            loss that reaches the front end, so the targets move with
            them), "detached_frontend" (the same frames behind a
            stop-gradient), or "features" (fairseq2's w2v-BERT 2.0: the
            input features stacked to the frame rate and layer-normalised,
            behind a stop-gradient: targets that only the quantizer's own
            weights move). Default "features": on the w2v_bert_tiny recipe
            (JAX, 200 steps) its codes are used (usage 1.0, perplexity 44
            of 64) and committed (frame perplexity 1.3, so not Gumbel
            noise), masked prediction 6% accurate, gain -0.18 nats;
            "frontend" gives noise codes (frame perplexity 6.8, accuracy
            1.7%, gain -0.22) and "detached_frontend" a half-collapsed
            codebook (usage 0.44, perplexity 10, gain -0.08). These gains
            were read against each batch's own code marginal, which is
            biased low by about 0.45 nats here (see `w2v_mlm_gain` in the
            module docstring): none of the three is shown to beat the
            marginal, and none is shown to lose to it.
        target_projection_dim: None, or the size of a linear projection of
            the quantized targets before the contrastive cosine (fairseq
            `project_q`, fairseq2 `final_target_proj`); the context is
            projected to the same size. Default None: with "features"
            a 32-dim projection changed little in the same run (usage 1.0,
            accuracy 4.4%, gain -0.19).
        codebook_usage_window_steps: steps over which `codebook_usage`
            counts the codes in use (across epochs).
        seed: seed of the task's SeedGenerators.

    Call: `pretrainer(batch, training)` -> dict of float32 scalars: every
    `{objective}_loss`, the accuracies, `w2v_mlm_gain`, `valid_negatives`,
    the two codebook perplexities, and `{sub_batch}_present` flags; with a speech sub-batch also
    `speech_code_ids` (B, T', G) and `speech_code_mask` (B, T', 1 = masked
    real frame), which feed `codebook_usage`. `compute_loss` weights and
    sums the losses and updates the metrics.
    """

    backbone_cls = SLAMBackbone

    def __init__(
        self,
        backbone,
        objectives=OBJECTIVES,
        objective_weights=None,
        speech_target="gumbel",
        num_code_groups=1,
        num_codes=1024,
        code_dim=None,
        start_temperature=2.0,
        end_temperature=0.1,
        temperature_decay=0.999995,
        speech_mask_probability=0.065,
        speech_span_length=10,
        num_negatives=100,
        contrastive_temperature=0.1,
        text_mask_rate=0.15,
        text_span_length=5,
        tlm_speech_mask_rate=0.75,
        tlm_text_mask_rate=0.5,
        stm_negatives=1,
        stm_negative_choice="next",
        stm_pooling="mean",
        mask_token_id=2,
        first_regular_token_id=3,
        mask_fraction=0.8,
        random_fraction=0.1,
        tie_lm_head=True,
        tie_ctc_head=False,
        ctc_input="speech_tower",
        blank_index=0,
        quantizer_input="features",
        target_projection_dim=None,
        codebook_usage_window_steps=100,
        seed=None,
        compile=True,
        **kwargs,
    ):
        unknown = set(objectives) - set(OBJECTIVES)
        if unknown:
            raise ValueError(f"Unknown objectives {sorted(unknown)}; choose from {OBJECTIVES}")
        if speech_target not in SPEECH_TARGETS:
            raise ValueError(
                f"speech_target must be one of {SPEECH_TARGETS}, got {speech_target!r}"
            )
        if quantizer_input not in QUANTIZER_INPUTS:
            raise ValueError(
                f"quantizer_input must be one of {QUANTIZER_INPUTS}, got {quantizer_input!r}"
            )
        if stm_negatives < 1:
            raise ValueError(f"stm_negatives must be >= 1, got {stm_negatives}")
        if stm_negative_choice not in STM_NEGATIVE_CHOICES:
            raise ValueError(
                f"stm_negative_choice must be one of {STM_NEGATIVE_CHOICES}, "
                f"got {stm_negative_choice!r}"
            )
        if stm_pooling not in STM_POOLINGS:
            raise ValueError(f"stm_pooling must be one of {STM_POOLINGS}, got {stm_pooling!r}")
        if ctc_input not in CTC_INPUTS:
            raise ValueError(f"ctc_input must be one of {CTC_INPUTS}, got {ctc_input!r}")
        if speech_target == "random_projection":
            objectives = tuple(o for o in objectives if o not in ("contrastive", "diversity"))
        super().__init__(compile=False, **kwargs)

        # === Config ===
        self.objectives = tuple(o for o in OBJECTIVES if o in objectives)
        weights = dict(DEFAULT_WEIGHTS, **(objective_weights or {}))
        self.initial_objective_weights = {o: float(weights[o]) for o in self.objectives}
        self.speech_target = speech_target
        self.num_code_groups = num_code_groups if speech_target == "gumbel" else 1
        self.num_codes = num_codes
        hidden_dim = backbone.hidden_dim
        self.code_dim = code_dim or (hidden_dim if speech_target == "gumbel" else 16)
        self.start_temperature = start_temperature
        self.end_temperature = end_temperature
        self.temperature_decay = temperature_decay
        self.speech_mask_probability = speech_mask_probability
        self.speech_span_length = speech_span_length
        self.num_negatives = num_negatives
        self.contrastive_temperature = contrastive_temperature
        self.text_mask_rate = text_mask_rate
        self.text_span_length = text_span_length
        self.tlm_speech_mask_rate = tlm_speech_mask_rate
        self.tlm_text_mask_rate = tlm_text_mask_rate
        self.stm_negatives = stm_negatives
        self.stm_negative_choice = stm_negative_choice
        self.stm_pooling = stm_pooling
        self.mask_token_id = mask_token_id
        self.first_regular_token_id = first_regular_token_id
        self.mask_fraction = mask_fraction
        self.random_fraction = random_fraction
        self.tie_lm_head = tie_lm_head
        self.tie_ctc_head = tie_ctc_head
        self.ctc_input = ctc_input
        self.blank_index = blank_index
        self.quantizer_input = quantizer_input
        self.target_projection_dim = target_projection_dim
        self.codebook_usage_window_steps = codebook_usage_window_steps
        self.seed = seed
        # Input feature frames per target frame.
        self.target_stack_size = 4 if backbone.speech_front_end == "conv_subsampling" else 1

        # === Layers ===
        self.backbone = backbone
        dtype = backbone.dtype_policy
        frames_shape = (None, None, hidden_dim)
        self.mask_seed = keras.random.SeedGenerator(seed)
        self.speech_mask_embedding = MaskEmbedding(
            "learned" if speech_target == "gumbel" else "noise",
            seed=seed,
            dtype=dtype,
            name="speech_mask_embedding",
        )
        self.speech_mask_embedding.build(frames_shape)
        if speech_target == "gumbel":
            self.quantizer = GumbelVectorQuantizer(
                num_groups=num_code_groups,
                num_codes=num_codes,
                code_dim=self.code_dim,
                start_temperature=start_temperature,
                end_temperature=end_temperature,
                temperature_decay=temperature_decay,
                seed=seed,
                dtype=dtype,
                name="quantizer",
            )
            if quantizer_input == "features":
                self.quantizer.build((None, None, backbone.feature_dim * self.target_stack_size))
            else:
                self.quantizer.build(frames_shape)
            self.contrastive_projection = FlatDense(
                target_projection_dim or self.code_dim, dtype=dtype, name="contrastive_projection"
            )
            self.contrastive_projection.build(frames_shape)
            self.target_projection = None
            if target_projection_dim:
                self.target_projection = FlatDense(
                    target_projection_dim, dtype=dtype, name="target_projection"
                )
                self.target_projection.build((None, None, self.code_dim))
        else:
            self.quantizer = RandomProjectionQuantizer(
                codebook_size=num_codes,
                code_dim=self.code_dim,
                stack_size=self.target_stack_size,
                seed=seed or 0,
                dtype=dtype,
                name="quantizer",
            )
            self.quantizer.build((None, None, backbone.feature_dim))
        self.speech_code_head = FlatDense(
            self.num_code_groups * num_codes, dtype=dtype, name="speech_code_head"
        )
        self.speech_code_head.build(frames_shape)
        self.lm_head = None
        if not tie_lm_head:
            self.lm_head = FlatDense(backbone.vocabulary_size, dtype=dtype, name="lm_head")
            self.lm_head.build(frames_shape)
        self.stm_head = FlatDense(1, dtype=dtype, name="stm_head")
        self.stm_head.build((None, hidden_dim * (4 if stm_pooling == "modality_means" else 1)))
        self.ctc_head = None
        if not tie_ctc_head:
            self.ctc_head = FlatDense(backbone.vocabulary_size, dtype=dtype, name="ctc_head")
            self.ctc_head.build(frames_shape)

        # === Weights of the objectives, changed by schedules ===
        self.objective_weights = {
            name: self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(value),
                dtype="float32",
                trainable=False,
                name=f"{name}_weight",
            )
            for name, value in self.initial_objective_weights.items()
        }

        # Decayed counts of the target codes at masked frames (`w2v_mlm_gain`),
        # read in float32 under a mixed policy too (counts in the thousands).
        self.running_code_counts = self.add_weight(
            shape=(self.num_code_groups, num_codes),
            initializer="zeros",
            dtype="float32",
            trainable=False,
            autocast=False,
            name="running_code_counts",
        )

        # === Metrics ===
        self.objective_metrics = {
            name: FiniteMean(name=name)
            for name, (_, needs) in METRICS.items()
            if self._any_of(*needs)
            and (self.speech_target == "gumbel" or not name.startswith("codebook_"))
        }
        self.codebook_usage = None
        if self._any_of(*SPEECH_OBJECTIVES):
            self.codebook_usage = CodebookUsage(
                num_codes, self.num_code_groups, window_steps=codebook_usage_window_steps
            )
        self.built = True
        if compile:
            self.compile()

    # --- configuration helpers ---

    def _any_of(self, *names):
        return any(name in self.objectives for name in names)

    @property
    def sub_batches(self):
        """The sub-batches ("speech", "text", "paired") its objectives read;
        others in a batch are ignored, so a pipeline need not make them."""
        needed = {METRICS[f"{name}_loss"][0] for name in self.objectives}
        return tuple(name for name in ("speech", "text", "paired") if name in needed)

    def compile(self, optimizer="adam", **kwargs):
        """Compiles with Adam by default; the loss is `compute_loss`. Steps
        with a non-finite loss or gradient are skipped and counted
        (`keras_slam.optimizers.skip_non_finite_steps`)."""
        super().compile(optimizer=skip_non_finite_steps(optimizer), **kwargs)
        log_finite_losses(self)

    def set_objective_weights(self, weights):
        """Assigns {objective: weight}; no recompilation needed."""
        for name, value in weights.items():
            if name not in self.objective_weights:
                raise ValueError(f"Objective {name!r} is not enabled; enabled: {self.objectives}")
            self.objective_weights[name].assign(float(value))

    def get_objective_weights(self):
        return {name: float(ops.convert_to_numpy(v)) for name, v in self.objective_weights.items()}

    # --- random draws ---

    def draw_masks(self, inputs):
        """Span masks and negatives for a batch, as `compute_objectives` uses.

        Returns: {"speech": {"span_mask" (B, T'), "negatives" (B, T', K)},
        "text": {"span_mask"}, "paired": {"speech_span_mask",
        "text_span_mask"}} for the sub-batches present.
        """
        draws = {}
        if "speech" in inputs and self._any_of(*SPEECH_OBJECTIVES):
            batch = inputs["speech"]
            frame_mask = self._frame_mask(batch["speech_padding_mask"], batch["speech_features"])
            span_mask = compute_span_mask(
                frame_mask,
                span_length=self.speech_span_length,
                start_probability=self.speech_mask_probability,
                min_spans=1,
                seed=self.mask_seed,
            )
            draws["speech"] = {"span_mask": span_mask}
            if "contrastive" in self.objectives:
                draws["speech"]["negatives"] = sample_negative_indices(
                    span_mask, self.num_negatives, frame_mask, seed=self.mask_seed
                )
        if "text" in inputs and "text_mlm" in self.objectives:
            draws["text"] = {
                "span_mask": compute_span_mask(
                    inputs["text"]["token_padding_mask"],
                    span_length=self.text_span_length,
                    mask_rate=self.text_mask_rate,
                    min_spans=1,
                    seed=self.mask_seed,
                )
            }
        if "paired" in inputs and "tlm" in self.objectives:
            draws["paired"] = self.draw_paired_masks(inputs["paired"])
        return draws

    def draw_paired_masks(self, batch, seed=None, speech_mask_rate=None, text_mask_rate=None):
        """TLM's span masks of a paired batch: {"speech_span_mask" (B, T'),
        "text_span_mask" (B, L)}, at TLM's rates (`tlm_speech_mask_rate`,
        `tlm_text_mask_rate`) unless given, from `seed` (a SeedGenerator;
        default the task's)."""
        seed = seed or self.mask_seed
        frame_mask = self._frame_mask(batch["speech_padding_mask"], batch["speech_features"])
        return {
            "speech_span_mask": compute_span_mask(
                frame_mask,
                span_length=self.speech_span_length,
                mask_rate=speech_mask_rate or self.tlm_speech_mask_rate,
                min_spans=1,
                seed=seed,
            ),
            "text_span_mask": compute_span_mask(
                batch["token_padding_mask"],
                span_length=self.text_span_length,
                mask_rate=text_mask_rate or self.tlm_text_mask_rate,
                min_spans=1,
                seed=seed,
            ),
        }

    def _frame_mask(self, padding_mask, features):
        """The front end's output mask, without running the front end."""
        tower = self.backbone.speech_tower
        lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=1, keepdims=True)
        num_frames = tower.output_length(ops.shape(features)[1])
        frames = ops.arange(num_frames, dtype="int32")[None, :]
        return ops.cast(frames < tower.output_length(lengths), "float32")

    # --- pieces ---

    def _token_logits(self, hidden):
        if self.lm_head is not None:
            return self.lm_head(hidden)
        return self.backbone.token_embedding(hidden, reverse=True)

    def _ctc_logits(self, hidden):
        if self.ctc_head is not None:
            return self.ctc_head(hidden)
        return self.backbone.token_embedding(hidden, reverse=True)

    def _code_logits(self, hidden):
        logits = self.speech_code_head(hidden)
        batch, length = ops.shape(hidden)[0], ops.shape(hidden)[1]
        return ops.reshape(logits, (batch, length, self.num_code_groups, self.num_codes))

    def _speech_targets(self, batch, frames, quantizer_mask, training):
        """(code_ids (B, T', G), quantized or None, {perplexities} or {})."""
        if self.speech_target == "random_projection":
            code_ids, _ = self.quantizer(batch["speech_features"], batch["speech_padding_mask"])
            return code_ids[:, :, None], None, {}
        if self.quantizer_input == "features":
            frames = ops.stop_gradient(
                stack_frames(
                    batch["speech_features"], batch["speech_padding_mask"], self.target_stack_size
                )
            )
        elif self.quantizer_input == "detached_frontend":
            frames = ops.stop_gradient(frames)
        quantized, code_ids, perplexity, frame_perplexity = self.quantizer(
            frames, padding_mask=quantizer_mask, training=training
        )
        perplexities = {
            "codebook_perplexity": perplexity,
            "codebook_frame_perplexity": frame_perplexity,
        }
        return code_ids, quantized, perplexities

    def _corrupt(self, token_ids, span_mask):
        return corrupt_tokens(
            token_ids,
            span_mask,
            self.mask_token_id,
            (self.first_regular_token_id, self.backbone.vocabulary_size),
            self.mask_seed,
            self.mask_fraction,
            self.random_fraction,
        )

    def _speech_objectives(self, batch, draws, training):
        features, padding_mask = batch["speech_features"], batch["speech_padding_mask"]
        frames, frame_mask = self.backbone.subsample_speech(features, padding_mask, training)
        span_mask = draws["span_mask"]
        counted = span_mask * frame_mask
        code_ids, quantized, perplexities = self._speech_targets(batch, frames, counted, training)
        masked = self.speech_mask_embedding(frames, span_mask)
        context = self.backbone.encode_speech_tower(masked, frame_mask, training)
        present = _any_real(counted)
        # The targets the losses see: codes at masked real frames.
        results = {
            "speech_present": present,
            "speech_code_ids": code_ids,
            "speech_code_mask": counted,
        }
        if "contrastive" in self.objectives:
            targets = (
                quantized if self.target_projection is None else self.target_projection(quantized)
            )
            loss, accuracy, valid_negatives = contrastive_loss(
                self.contrastive_projection(context),
                targets,
                span_mask,
                draws["negatives"],
                frame_mask,
                self.contrastive_temperature,
            )
            results.update(
                contrastive_loss=loss,
                contrastive_accuracy=accuracy,
                valid_negatives=valid_negatives,
            )
        results.update(perplexities)
        if perplexities and "diversity" in self.objectives:
            num_codevectors = self.num_code_groups * self.num_codes
            results["diversity_loss"] = (
                diversity_loss(perplexities["codebook_perplexity"], num_codevectors) * present
            )
        if "w2v_mlm" in self.objectives:
            shared = self.backbone.encode_shared(context, frame_mask, training)
            loss, accuracy = masked_prediction_loss(
                self._code_logits(shared), code_ids, span_mask, frame_mask
            )
            code_ids = ops.stop_gradient(code_ids)
            running_counts = CODE_COUNT_DECAY * self.running_code_counts + code_counts(
                code_ids, self.num_codes, counted
            )
            if training:
                self.running_code_counts.assign(running_counts)
            baseline = marginal_cross_entropy(code_ids, running_counts, counted)
            results.update(
                w2v_mlm_loss=loss, w2v_mlm_accuracy=accuracy, w2v_mlm_gain=baseline - loss
            )
        return results

    def _text_objectives(self, batch, draws, training):
        token_ids, token_mask = batch["token_ids"], batch["token_padding_mask"]
        span_mask = draws["span_mask"] * ops.cast(token_mask, "float32")
        embedded = self.backbone.embed_text(
            self._corrupt(token_ids, span_mask), token_mask, training
        )
        encoded = self.backbone.encode_shared(embedded, token_mask, training)
        loss, accuracy = masked_token_loss(token_ids, self._token_logits(encoded), span_mask)
        return {
            "text_present": _any_real(span_mask),
            "text_mlm_loss": loss,
            "text_mlm_accuracy": accuracy,
        }

    def _paired_objectives(self, batch, draws, training):
        features, padding_mask = batch["speech_features"], batch["speech_padding_mask"]
        token_ids, token_mask = batch["token_ids"], ops.cast(batch["token_padding_mask"], "float32")
        frames, frame_mask = self.backbone.subsample_speech(features, padding_mask, training)
        rows_present = ops.logical_and(
            ops.sum(frame_mask, axis=1) > 0, ops.sum(token_mask, axis=1) > 0
        )
        results = {"paired_present": ops.cast(ops.any(rows_present), "float32")}
        if "tlm" in self.objectives:
            results.update(self._tlm(batch, draws, frames, frame_mask, training))
        if self._any_of("stm", "ctc"):
            speech = self.backbone.encode_speech_tower(frames, frame_mask, training)
            text = self.backbone.embed_text(token_ids, token_mask, training)
        if "stm" in self.objectives:
            results.update(self._stm(speech, frame_mask, text, token_mask, rows_present, training))
        if "ctc" in self.objectives:
            if self.ctc_input == "shared":
                speech = self.backbone.encode_shared(speech, frame_mask, training)
            # Per target token (torch's reduction="mean"), on the same scale
            # as the per-token / per-frame means of the other objectives
            # whatever the clip length; rows without text are left out.
            results["ctc_loss"] = ctc_loss(
                token_ids,
                token_mask,
                self._ctc_logits(speech),
                frame_mask * ops.cast(rows_present, frame_mask.dtype)[:, None],
                self.blank_index,
                divide_by_target_length=True,
            )
        return results

    def _tlm(self, batch, draws, frames, frame_mask, training):
        token_ids, token_mask = batch["token_ids"], ops.cast(batch["token_padding_mask"], "float32")
        speech_span = draws["speech_span_mask"] * frame_mask
        text_span = draws["text_span_mask"] * token_mask
        code_ids, _, _ = self._speech_targets(batch, frames, frame_mask, False)
        code_ids = ops.stop_gradient(code_ids)
        speech_out, text_out = self._encode_joint(
            frames,
            frame_mask,
            speech_span,
            self._corrupt(token_ids, text_span),
            token_mask,
            training,
        )
        text_loss, text_accuracy = masked_token_loss(
            token_ids, self._token_logits(text_out), text_span
        )
        speech_loss, speech_accuracy = masked_prediction_loss(
            self._code_logits(speech_out), code_ids, speech_span, frame_mask
        )
        return {
            "tlm_loss": text_loss + speech_loss,
            "tlm_text_accuracy": text_accuracy,
            "tlm_speech_accuracy": speech_accuracy,
        }

    def _encode_joint(self, frames, frame_mask, speech_span, token_ids, token_mask, training):
        """Speech frames (B, T', D), masked at `speech_span` (B, T'), packed with
        text `token_ids` (B, L) through the shared encoder (TLM's input) ->
        (speech output (B, T', D), text output (B, L, D)). A modality whose
        mask is all 0 is absent: the other passes alone."""
        speech = self.backbone.encode_speech_tower(
            self.speech_mask_embedding(frames, speech_span), frame_mask, training
        )
        text = self.backbone.embed_text(token_ids, token_mask, training)
        packed, packed_mask = self.backbone.pack(speech, frame_mask, text, token_mask)
        encoded = self.backbone.encode_shared(packed, packed_mask, training)
        return self.backbone.unpack(encoded, frame_mask, token_mask)

    def cross_modal_scores(self, batch, draws, mask_context=False):
        """Does the shared encoder read the other modality? One paired batch.

        With the same target masks (`draws`, from `draw_paired_masks`), the
        masked tokens (all set to `mask_token_id`) are predicted from the
        text alone, packed with the row's own speech, and packed with
        another row's speech (the next row with a pair, as STM's mismatched
        partner: the control); the masked speech codes likewise from the
        speech alone, with its own transcript and with another's. The
        context modality is unmasked, or masked at its own span mask with
        `mask_context` (TLM's input). Inference mode (no dropout, Gumbel
        argmax). Only rows that have a partner count, in every condition.

        Args:
            batch: {"speech_features" (B, T, F), "speech_padding_mask" (B, T),
                "token_ids" (B, L), "token_padding_mask" (B, L)}.
            draws: {"speech_span_mask" (B, T'), "text_span_mask" (B, L)}.
        Returns:
            {f"{side}_{context}_loss", f"{side}_{context}_accuracy"} for side
            in ("text", "speech") and context in `CROSS_MODAL_CONTEXTS`:
            float32 means over the counted positions, and f"{side}_count",
            the number of counted positions (masked real tokens / frames).
        """
        token_ids = ops.cast(batch["token_ids"], "int32")
        token_mask = ops.cast(batch["token_padding_mask"], "float32")
        frames, frame_mask = self.backbone.subsample_speech(
            batch["speech_features"], batch["speech_padding_mask"]
        )
        rows_present = ops.logical_and(
            ops.sum(frame_mask, axis=1) > 0, ops.sum(token_mask, axis=1) > 0
        )
        partners, has_partner = mismatched_partners(rows_present)
        partners, counted_rows = partners[:, 0], ops.cast(has_partner[:, 0] > 0, "float32")
        speech_span = ops.convert_to_tensor(draws["speech_span_mask"], "float32") * frame_mask
        text_span = ops.convert_to_tensor(draws["text_span_mask"], "float32") * token_mask
        masked_ids = ops.where(text_span > 0, self.mask_token_id, token_ids)
        code_ids, _, _ = self._speech_targets(batch, frames, frame_mask, False)
        # What the text reads (speech frames, frame mask, span) and what the
        # speech reads (token ids, token mask) in each context; a zero mask
        # leaves that modality out.
        speech_context = (
            frames,
            frame_mask,
            speech_span if mask_context else ops.zeros_like(speech_span),
        )
        text_context = (masked_ids if mask_context else token_ids, token_mask)

        def partners_of(tensors):
            return tuple(ops.take(x, partners, axis=0) for x in tensors)

        contexts = {
            "alone": (
                (frames, ops.zeros_like(frame_mask), speech_context[2]),
                (token_ids, ops.zeros_like(token_mask)),
            ),
            "own": (speech_context, text_context),
            "other": (partners_of(speech_context), partners_of(text_context)),
        }
        text_targets = text_span * counted_rows[:, None]
        speech_targets = speech_span * counted_rows[:, None]
        results = {"text_count": ops.sum(text_targets), "speech_count": ops.sum(speech_targets)}
        for context in CROSS_MODAL_CONTEXTS:
            speech, text = contexts[context]
            _, text_out = self._encode_joint(*speech, masked_ids, token_mask, False)
            speech_out, _ = self._encode_joint(frames, frame_mask, speech_span, *text, False)
            loss, accuracy = masked_token_loss(
                token_ids, self._token_logits(text_out), text_targets
            )
            results.update({f"text_{context}_loss": loss, f"text_{context}_accuracy": accuracy})
            loss, accuracy = masked_prediction_loss(
                self._code_logits(speech_out), code_ids, speech_targets
            )
            results.update({f"speech_{context}_loss": loss, f"speech_{context}_accuracy": accuracy})
        return {name: ops.cast(value, "float32") for name, value in results.items()}

    def stm_partners(self, rows_present, token_mask):
        """STM's negatives: `mismatched_partners` of the rows with a pair
        (B,), length-matched on the real tokens of `token_mask` (B, L) with
        `stm_negative_choice="length_matched"`: (partners (B, K), weights (B, K))."""
        lengths = None
        if self.stm_negative_choice == "length_matched":
            lengths = ops.sum(ops.cast(token_mask, "float32"), axis=1)
        return mismatched_partners(rows_present, self.stm_negatives, lengths)

    def _stm(self, speech, frame_mask, text, token_mask, rows_present, training):
        partners, negative_weights = self.stm_partners(rows_present, token_mask)
        # The matched pairs, then K blocks of mismatched ones (block k: text
        # of the row k places on), in (K + 1) x B packed rows.
        partners = ops.reshape(ops.transpose(partners), (-1,))
        copies = self.stm_negatives + 1
        frame_masks = ops.concatenate([frame_mask] * copies, axis=0)
        token_masks = ops.concatenate([token_mask, ops.take(token_mask, partners, axis=0)], axis=0)
        packed, packed_mask = self.backbone.pack(
            ops.concatenate([speech] * copies, axis=0),
            frame_masks,
            ops.concatenate([text, ops.take(text, partners, axis=0)], axis=0),
            token_masks,
        )
        encoded = self.backbone.encode_shared(packed, packed_mask, training)
        if self.stm_pooling == "mean":
            pooled = masked_mean(encoded, packed_mask, axis=1)
        else:
            speech_out, text_out = self.backbone.unpack(encoded, frame_masks, token_masks)
            speech_mean = masked_mean(speech_out, frame_masks, axis=1)
            text_mean = masked_mean(text_out, token_masks, axis=1)
            pooled = ops.concatenate(
                [speech_mean, text_mean, speech_mean * text_mean, ops.abs(speech_mean - text_mean)],
                axis=-1,
            )
        logits = self.stm_head(pooled)
        batch_size = ops.shape(rows_present)[0]
        labels = ops.concatenate(
            [ops.ones((batch_size,)), ops.zeros((batch_size * self.stm_negatives,))], axis=0
        )
        weights = ops.concatenate(
            [
                ops.cast(rows_present, "float32"),
                ops.reshape(ops.transpose(negative_weights), (-1,)),
            ],
            axis=0,
        )
        loss, accuracy = stm_loss(logits, labels, weights)
        return {"stm_loss": loss, "stm_accuracy": accuracy}

    # --- Keras entry points ---

    def compute_objectives(self, inputs, training=False, draws=None):
        """Every enabled objective on the sub-batches present.

        Args:
            inputs: dict with any of "speech", "text", "paired".
            training: dropout and Gumbel sampling (the Gumbel step advances).
            draws: optional fixed masks/negatives (see `draw_masks`); drawn
                from the task's seeds when None.
        Returns:
            dict of float32 scalars, plus the speech code ids and their
            mask (see class docstring).
        """
        if draws is None:
            draws = self.draw_masks(inputs)
        draws = keras.tree.map_structure(ops.convert_to_tensor, draws)
        results = {}
        if "speech" in inputs and "speech" in draws:
            results.update(self._speech_objectives(inputs["speech"], draws["speech"], training))
        if "text" in inputs and "text" in draws:
            results.update(self._text_objectives(inputs["text"], draws["text"], training))
        if "paired" in inputs and self._any_of("tlm", "stm", "ctc"):
            results.update(self._paired_objectives(inputs["paired"], draws.get("paired"), training))
        return {name: ops.cast(value, "float32") for name, value in results.items()}

    def call(self, inputs, training=False):
        return self.compute_objectives(inputs, training=training)

    def total_loss(self, objectives):
        """Weighted sum of the `{objective}_loss` entries present."""
        total = ops.zeros((), "float32")
        for name in self.objectives:
            if f"{name}_loss" in objectives:
                total = total + self.objective_weights[name] * objectives[f"{name}_loss"]
        return total

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        for name, metric in self.objective_metrics.items():
            if name in y_pred:
                # An absent sub-batch leaves the running mean untouched.
                present = y_pred[f"{METRICS[name][0]}_present"]
                metric.update_state(y_pred[name], sample_weight=present)
        if self.codebook_usage is not None and "speech_code_ids" in y_pred:
            self.codebook_usage.update_state(y_pred["speech_code_ids"], y_pred["speech_code_mask"])
        # Under tf.distribute each replica's loss is 1 / replicas of its mean.
        return scale_loss_for_distribution(self.total_loss(y_pred))

    def get_metrics_result(self):
        """Keras' metric results plus "codebook_usage_frames", the masked frames
        behind `codebook_usage` (`CodebookCollapseMonitor` judges usage only
        over enough of them)."""
        results = super().get_metrics_result()
        if self.codebook_usage is not None:
            results["codebook_usage_frames"] = self.codebook_usage.frames()
        return results

    def get_config(self):
        config = super().get_config()
        # The pre-trainer takes pipeline batches as they are: no preprocessor.
        del config["preprocessor"]
        config.update(
            objectives=list(self.objectives),
            objective_weights=self.initial_objective_weights,
            speech_target=self.speech_target,
            num_code_groups=self.num_code_groups,
            num_codes=self.num_codes,
            code_dim=self.code_dim,
            start_temperature=self.start_temperature,
            end_temperature=self.end_temperature,
            temperature_decay=self.temperature_decay,
            speech_mask_probability=self.speech_mask_probability,
            speech_span_length=self.speech_span_length,
            num_negatives=self.num_negatives,
            contrastive_temperature=self.contrastive_temperature,
            text_mask_rate=self.text_mask_rate,
            text_span_length=self.text_span_length,
            tlm_speech_mask_rate=self.tlm_speech_mask_rate,
            tlm_text_mask_rate=self.tlm_text_mask_rate,
            stm_negatives=self.stm_negatives,
            stm_negative_choice=self.stm_negative_choice,
            stm_pooling=self.stm_pooling,
            mask_token_id=self.mask_token_id,
            first_regular_token_id=self.first_regular_token_id,
            mask_fraction=self.mask_fraction,
            random_fraction=self.random_fraction,
            tie_lm_head=self.tie_lm_head,
            tie_ctc_head=self.tie_ctc_head,
            ctc_input=self.ctc_input,
            blank_index=self.blank_index,
            quantizer_input=self.quantizer_input,
            target_projection_dim=self.target_projection_dim,
            codebook_usage_window_steps=self.codebook_usage_window_steps,
            seed=self.seed,
        )
        return config
