"""CTC fine-tuning recipe: a pre-trained (or random) backbone -> SpeechRecognizer.

    python -m recipes.asr --preset runs/x/pretrained --output runs/x/asr --steps 600

The pieces (`make_front_end`, `build_tokenizer`, `paired_dataset`,
`finetune`, `evaluate`) are what `recipes/main.py` and the guide use; copy
them for another corpus by changing `--corpus` and `--languages`.
"""

import argparse
import json
import math
import os

import keras

from keras_slam import checkpointing, distribution
from keras_slam.callbacks import TerminateOnSkippedSteps
from keras_slam.data import pipeline
from keras_slam.data.tokenizers import CharacterTokenizer, build_character_vocabulary
from keras_slam.layers.log_mel import LogMelSpectrogram
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.speech_recognizer import SpeechRecognizer, split_asr_batch

SAMPLE_CORPUS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tfrecords", "sample"
)
LANGUAGES = ("en", "de", "es", "it")
# espeak-ng speaks 19 (median) to 27 characters per second, and CTC needs a
# frame per character (two for a doubled one). 10 ms frames subsampled 4x
# give 25 frames per second: too few. A 5 ms hop gives 50. Per-utterance
# mean/variance normalisation of each mel bin gives the model inputs of one
# scale whatever the espeak voice's level.
FRONT_END = {"frame_step": 80, "normalize_per_bin": True}
BUCKET_SECONDS = (3.0, 5.0, 8.0)
MAX_TRANSCRIPT_LENGTH = 112


def make_front_end():
    """The log-mel front end of the sample-corpus recipes (see FRONT_END)."""
    return LogMelSpectrogram(**FRONT_END, name="audio_converter")


def training_transcripts(corpus=SAMPLE_CORPUS, languages=LANGUAGES):
    """Transcripts of the corpus' training utterances (from metadata.jsonl)."""
    with open(os.path.join(corpus, "metadata.jsonl"), encoding="utf-8") as file:
        rows = [json.loads(line) for line in file]
    return [r["text"] for r in rows if r["split"] == "train" and r["language"] in languages]


def build_tokenizer(corpus=SAMPLE_CORPUS, languages=LANGUAGES, max_size=96):
    """A frequency-ranked character tokenizer (id 0 = pad = CTC blank)."""
    vocabulary = build_character_vocabulary(
        training_transcripts(corpus, languages), max_size=max_size
    )
    return CharacterTokenizer(vocabulary, sequence_length=None)


def paired_dataset(
    tokenizer,
    front_end,
    split="train",
    corpus=SAMPLE_CORPUS,
    languages=LANGUAGES,
    batch_seconds=16.0,
    training=False,
    seed=0,
):
    """Paired (speech + transcript) batches of one split, with "language".

    `corpus`: a corpus folder (`<corpus>/paired/<split>/<language>`) or a
    list of them, read together. Training batches are shuffled and repeat
    forever; evaluation batches read every utterance once. Training reads
    this host's shards only (`pipeline.host_shards`).
    """
    corpora = [corpus] if isinstance(corpus, (str, os.PathLike)) else corpus
    folders = [
        os.path.join(c, "paired", split, language) for c in corpora for language in languages
    ]
    files = pipeline.host_shards(folders) if training else pipeline.list_shards(folders)
    return transcribed_dataset(
        files, tokenizer, front_end, languages, batch_seconds, training, seed
    )


def transcribed_dataset(
    files,
    tokenizer,
    front_end,
    languages=LANGUAGES,
    batch_seconds=16.0,
    training=False,
    seed=0,
    too_long="error",
):
    """Speech + transcript batches of shard `files`, with "language" (as
    `paired_dataset`); `too_long` as in `pipeline.speech_dataset`."""
    return pipeline.speech_dataset(
        files,
        front_end,
        pipeline.Buckets.from_budget(BUCKET_SECONDS, batch_seconds),
        tokenizer=tokenizer,
        max_token_length=MAX_TRANSCRIPT_LENGTH,
        paired=True,
        languages=list(languages),
        shuffle_buffer=1024 if training else 0,
        seed=seed,
        repeat=training,
        too_long=too_long,
    )


def build_recognizer(preset, tokenizer, front_end, load_weights=True, **kwargs):
    """`SpeechRecognizer.from_preset` with the recipe's front end and tokenizer."""
    preprocessor = SpeechRecognizerPreprocessor(audio_converter=front_end, tokenizer=tokenizer)
    return SpeechRecognizer.from_preset(
        preset, load_weights=load_weights, preprocessor=preprocessor, **kwargs
    )


def finetune(
    recognizer,
    train,
    steps,
    learning_rate=2e-3,
    warmup_steps=None,
    encoder_learning_rate_multiplier=1.0,
    freeze_encoder_steps=0,
    callbacks=(),
    verbose=2,
    checkpoint=None,
    optimizer_arguments=None,
    max_consecutive_skips=10,
):
    """CTC fine-tuning for `steps` steps (warm-up, then cosine decay).

    `checkpoint`: a `checkpointing.TrainingCheckpoint` to save to and resume
    from; `optimizer_arguments`: `SpeechRecognizer.compile` optimizer
    arguments (`global_clipnorm`, `gradient_accumulation_steps`).

    Returns: {metric name: [mean of each logging window]} (see `fit_logged`;
    "loss" is the CTC loss).
    """
    recognizer.compile(
        learning_rate=warmup_cosine(steps, learning_rate, warmup_steps),
        encoder_learning_rate_multiplier=encoder_learning_rate_multiplier,
        freeze_encoder_steps=freeze_encoder_steps,
        **(optimizer_arguments or {}),
    )
    return fit_logged(
        recognizer,
        train.map(split_asr_batch),
        steps,
        callbacks,
        verbose,
        checkpoint=checkpoint,
        max_consecutive_skips=max_consecutive_skips,
    )


def warmup_cosine(steps, learning_rate, warmup_steps=None):
    """Linear warm-up (default: a tenth of `steps`) to `learning_rate`, then
    cosine decay to 5% of it at `steps`."""
    warmup_steps = warmup_steps if warmup_steps is not None else max(1, steps // 10)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(1, steps - warmup_steps),
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
        alpha=0.05,
    )


def fit_logged(
    model,
    dataset,
    steps,
    callbacks=(),
    verbose=2,
    windows=20,
    checkpoint=None,
    max_consecutive_skips=10,
):
    """`model.fit` for `steps` steps, logged as `windows` windows of equal length.

    Keras reports running means over an epoch; one short epoch per window
    turns them into the mean of each window (the dataset iterator and the
    optimizer state carry on across epochs). Steps with a non-finite loss
    are skipped and counted (`skipped_steps`); `max_consecutive_skips` in a
    row stop the run. With a `checkpointing.TrainingCheckpoint`, the run
    resumes from its newest checkpoint and saves periodically.

    Returns: {metric name: [mean of each window]}.
    """
    window = logging_window(steps, windows)
    history = checkpointing.fit(
        model,
        dataset,
        steps,
        window,
        checkpoint,
        [TerminateOnSkippedSteps(max_consecutive_skips), *callbacks],
        verbose,
    )
    for name, values in history.items():
        bad = [i for i, value in enumerate(values) if not math.isfinite(value)]
        if bad:
            raise FloatingPointError(
                f"{name} became {values[bad[0]]} within training steps "
                f"{bad[0] * window + 1}-{(bad[0] + 1) * window}"
            )
    return history


def logging_window(steps, windows=20):
    """Steps per logging window of `fit_logged` (an epoch of `model.fit`)."""
    return max(1, steps // windows)


def evaluate(recognizer, dataset, languages=LANGUAGES, strategy="greedy"):
    """{language: {"wer", "cer", "utterances"}, "all": ...} and examples.

    Lower-cased, punctuation removed (the transcripts' punctuation is not
    spoken by espeak).
    """
    return recognizer.evaluate_error_rates(
        dataset,
        languages=list(languages),
        strategy=strategy,
        lowercase=True,
        remove_punctuation=True,
    )


def format_error_rates(results):
    """One line per language: "en  CER 12.3%  WER 34.5%  (20 utterances)"."""
    return "\n".join(
        f"  {language:<4} CER {r['cer']:6.1%}  WER {r['wer']:6.1%}  ({r['utterances']} utterances)"
        for language, r in results.items()
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", required=True, help="backbone or recognizer preset (name or directory)"
    )
    parser.add_argument(
        "--output", required=True, help="where to save the fine-tuned recognizer preset"
    )
    parser.add_argument("--corpus", default=SAMPLE_CORPUS)
    parser.add_argument("--languages", default=",".join(LANGUAGES))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--freeze-encoder-steps", type=int, default=0)
    parser.add_argument("--encoder-lr-multiplier", type=float, default=1.0)
    parser.add_argument("--batch-seconds", type=float, default=16.0)
    checkpointing.add_training_arguments(parser)
    distribution.add_mesh_argument(parser)
    args = parser.parse_args(argv)
    checkpointing.apply_mixed_precision(args)
    distribution.apply_mesh(args.mesh, SpeechRecognizer.get_layout_map)
    languages = tuple(args.languages.split(","))
    tokenizer = build_tokenizer(args.corpus, languages)
    front_end = make_front_end()
    recognizer = build_recognizer(args.preset, tokenizer, front_end)
    train = paired_dataset(
        tokenizer, front_end, "train", args.corpus, languages, args.batch_seconds, training=True
    )
    losses = finetune(
        recognizer,
        train,
        args.steps,
        args.learning_rate,
        encoder_learning_rate_multiplier=args.encoder_lr_multiplier,
        freeze_encoder_steps=args.freeze_encoder_steps,
        checkpoint=checkpointing.checkpoint_from_args(args, args.output),
        optimizer_arguments=checkpointing.optimizer_arguments(args),
        max_consecutive_skips=args.max_consecutive_skips,
    )["loss"]
    print(f"CTC loss: first {losses[0]:.2f}, last {losses[-1]:.2f}")
    results, _ = evaluate(
        recognizer, paired_dataset(tokenizer, front_end, "test", args.corpus, languages)
    )
    print("held-out test error rates:\n" + format_error_rates(results))
    recognizer.save_to_preset(args.output)
    print(f"fine-tuned recognizer saved to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
