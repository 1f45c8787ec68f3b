"""The `keras-slam` command line.

Each subcommand is a pair registered in `COMMANDS`: `add_arguments(parser)`
and `run(args) -> exit code`. To add one, write those two functions (in
this file or a module of its own) and append `(name, help, add, run)`.
"""

import argparse
import json
import os
import sys

from keras_slam.data import (
    audio,
    corpora,
    gettext_pairs,
    intents,
    parallel_speech,
    pipeline,
    schema,
    spoken_classification,
    synth_corpus,
    writers,
)
from keras_slam.metrics import classification, translation_evaluation
from keras_slam.models.sequence_classifier import SequenceClassifier
from keras_slam.models.speech_recognizer import SpeechRecognizer
from keras_slam.models.speech_translator import SpeechTranslator
from keras_slam.models.text_classifier import TextClassifier
from keras_slam.presets import commands as presets_commands
from keras_slam.utils import memory_plan
from keras_slam.utils.preset_utils import saved_task_config


def _infer_format(path):
    name = os.path.basename(path.rstrip("/"))
    if os.path.isdir(path):
        return "librispeech"
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".txt"):
        return "text"
    if name.endswith(".csv"):
        return "minds14"
    if name.endswith(".tsv"):
        return "common_voice"
    raise SystemExit(f"cannot infer --format from {path!r}; pass --format")


def add_make_tfrecords_arguments(parser):
    parser.add_argument(
        "--input",
        required=True,
        help="corpus root, TSV/CSV, JSONL manifest or text file (glob for text)",
    )
    parser.add_argument("--output", required=True, help="output folder for shards and summary.json")
    parser.add_argument(
        "--format",
        choices=sorted(corpora.READERS),
        help="corpus layout (default: inferred from --input)",
    )
    parser.add_argument(
        "--kind",
        choices=("speech", "text"),
        help="record kind (default: text for --format text, else speech)",
    )
    parser.add_argument("--language", help="language code where the corpus does not give one")
    shards = parser.add_mutually_exclusive_group()
    shards.add_argument("--num-shards", type=int, help="number of shards")
    shards.add_argument("--shard-size", type=int, help="items per shard")
    parser.add_argument("--prefix", default="shard", help="shard file name prefix")
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    parser.add_argument("--gzip", action="store_true", help="GZIP-compress shards (.tfrecord.gz)")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip bad inputs, listing each with its reason in the summary",
    )
    parser.add_argument(
        "--charset",
        help="file listing the allowed transcript characters (or a vocabulary, one entry per line)",
    )
    parser.add_argument(
        "--downmix", action="store_true", help="average multi-channel audio instead of rejecting it"
    )
    parser.add_argument("--decoder", choices=("soundfile", "tfio"), default="soundfile")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the shards and summary of an earlier run in --output",
    )


def run_make_tfrecords(args):
    corpus_format = args.format or _infer_format(args.input)
    kind = args.kind or ("text" if corpus_format == "text" else "speech")
    items = corpora.READERS[corpus_format](args.input, kind=kind, language=args.language)
    charset = writers.load_charset(args.charset) if args.charset else None
    try:
        summary = writers.write_shards(
            items,
            args.output,
            kind=kind,
            prefix=args.prefix,
            num_shards=args.num_shards,
            shard_size=args.shard_size,
            num_workers=args.workers,
            compress=args.gzip,
            skip_bad=args.skip_bad,
            charset=charset,
            downmix=args.downmix,
            decoder=args.decoder,
            progress=not args.no_progress,
            overwrite=args.overwrite,
        )
    except audio.BadInputError as error:
        print(f"error: {error} (pass --skip-bad to skip such inputs)", file=sys.stderr)
        return 1
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


COMMANDS = [
    (
        "make-tfrecords",
        "convert a corpus (LibriSpeech, Common Voice/CoVoST 2, FLEURS, MINDS-14, JSONL, text) to TFRecord shards",
        add_make_tfrecords_arguments,
        run_make_tfrecords,
    ),
]
COMMANDS += presets_commands.COMMANDS


def add_evaluate_asr_arguments(parser):
    parser.add_argument(
        "--preset",
        required=True,
        help="SpeechRecognizer preset directory (with its tokenizer and front end)",
    )
    parser.add_argument(
        "--data", required=True, nargs="+", help="paired shard folders, files or globs"
    )
    parser.add_argument(
        "--languages", required=True, help="comma-separated language codes of the shards"
    )
    parser.add_argument("--strategy", choices=("greedy", "beam_search"), default="greedy")
    parser.add_argument("--beam-width", type=int, default=16)
    parser.add_argument("--batch-seconds", type=float, default=32.0)
    parser.add_argument("--max-transcript-length", type=int, default=512)
    parser.add_argument(
        "--keep-case-and-punctuation",
        action="store_true",
        help="score without lower-casing and removing punctuation",
    )
    parser.add_argument(
        "--examples", type=int, default=3, help="reference/hypothesis pairs to print"
    )


def run_evaluate_asr(args):
    recognizer = SpeechRecognizer.from_preset(args.preset)
    preprocessor = recognizer.preprocessor
    languages = args.languages.split(",")
    dataset = pipeline.speech_dataset(
        pipeline.list_shards(args.data),
        preprocessor.audio_converter,
        pipeline.Buckets.from_budget((4.0, 8.0, 16.0, 32.0), args.batch_seconds),
        tokenizer=preprocessor.tokenizer,
        max_token_length=args.max_transcript_length,
        paired=True,
        languages=languages,
    )
    normalize = not args.keep_case_and_punctuation
    rates, examples = recognizer.evaluate_error_rates(
        dataset,
        languages,
        args.strategy,
        args.beam_width,
        lowercase=normalize,
        remove_punctuation=normalize,
    )
    for language, reference, hypothesis in examples[: args.examples]:
        print(f"[{language}] ref: {reference}\n     hyp: {hypothesis}")
    print(json.dumps(rates, indent=2))
    return 0


COMMANDS.append(
    (
        "evaluate-asr",
        "WER / CER per language of a SpeechRecognizer preset on paired TFRecord shards",
        add_evaluate_asr_arguments,
        run_evaluate_asr,
    )
)


def add_evaluate_classifier_arguments(parser):
    parser.add_argument(
        "--preset",
        required=True,
        help="SpeechClassifier or TextClassifier task preset directory (with its class names)",
    )
    parser.add_argument(
        "--shards",
        required=True,
        nargs="+",
        help="speech shard folders, files or globs (for a TextClassifier: text shards, or "
        "paired speech shards whose transcripts are read)",
    )
    parser.add_argument(
        "--label-field",
        default="label",
        help='record field holding the class name: "label" (intents; the sample corpus\'s '
        'language codes) or "language"',
    )
    parser.add_argument(
        "--output", required=True, help="folder for report.json and confusion_matrix.png"
    )
    parser.add_argument("--batch-seconds", type=float, default=32.0)
    parser.add_argument(
        "--max-transcript-length", type=int, default=512, help="token cap of a TextClassifier"
    )


def classifier_text_dataset(files, classifier, args):
    """Text shards -> batches of tokens and the class id of `args.label_field` ("label" or
    "language") under the key of that name."""
    if args.label_field not in ("label", "language"):
        raise ValueError(f'text records hold "label" and "language", not {args.label_field!r}')
    classes = {("labels" if args.label_field == "label" else "languages"): classifier.class_names}
    return pipeline.text_dataset(
        files,
        classifier.preprocessor.tokenizer,
        pipeline.Buckets((64, 128, 256, 512), 32),
        max_length=args.max_transcript_length,
        **classes,
    )


def run_evaluate_classifier(args):
    if saved_task_config(args.preset, SequenceClassifier) is None:
        print(
            f"error: {args.preset} is not a directory holding a SpeechClassifier or "
            "TextClassifier task preset (its task.json); save a trained classifier with "
            "save_to_preset",
            file=sys.stderr,
        )
        return 1
    classifier = SequenceClassifier.from_preset(args.preset)
    if not classifier.class_names:
        print(f"error: {args.preset} has no class names to match the labels", file=sys.stderr)
        return 1
    preprocessor = classifier.preprocessor
    if preprocessor is None:
        print(f"error: {args.preset} has no preprocessor (front end)", file=sys.stderr)
        return 1
    is_text = isinstance(classifier, TextClassifier)
    files = pipeline.list_shards(args.shards)
    try:
        kinds = {schema.shard_kind(file) for file in files}
        # Speech batches hold the class id as "label" whatever field it came from.
        label_key = "label"
        if kinds == {schema.TEXT} and is_text:
            dataset = classifier_text_dataset(files, classifier, args)
            label_key = args.label_field
        elif schema.TEXT in kinds:
            raise ValueError(
                "text shards are read by a TextClassifier only, and not mixed with speech "
                f"shards; these hold {sorted(kinds)}"
            )
        else:
            dataset = pipeline.speech_dataset(
                files,
                preprocessor.audio_converter,
                pipeline.Buckets.from_budget((4.0, 8.0, 16.0, 32.0), args.batch_seconds),
                tokenizer=preprocessor.tokenizer if is_text else None,
                max_token_length=args.max_transcript_length if is_text else None,
                paired=is_text,
                labels=classifier.class_names,
                label_field=args.label_field,
            )
        y_true, y_pred = classifier.collect_predictions(dataset, label_key=label_key)
    except ValueError as error:
        print(f"error: {args.shards}: {error}", file=sys.stderr)
        return 1
    report = classification.classification_report(y_true, y_pred, classifier.class_names)
    report.update(preset=args.preset, shards=args.shards, label_field=args.label_field)
    os.makedirs(args.output, exist_ok=True)
    report_path = os.path.join(args.output, "report.json")
    with open(report_path, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2, ensure_ascii=False)
    png_path = classification.plot_confusion_matrix(
        report["confusion_matrix"],
        classifier.class_names,
        os.path.join(args.output, "confusion_matrix.png"),
        title=f"{type(classifier).__name__} on {report['examples']} examples",
    )
    print(f"examples: {report['examples']}")
    print(f"accuracy: {report['accuracy']:.4f}")
    print(f"macro-F1: {report['macro_f1']:.4f}")
    print(f"report: {report_path}\nconfusion matrix: {png_path}")
    return 0


COMMANDS.append(
    (
        "evaluate-classifier",
        "accuracy, macro-F1 and confusion matrix of a classifier preset on TFRecord shards",
        add_evaluate_classifier_arguments,
        run_evaluate_classifier,
    )
)


def add_evaluate_st_arguments(parser):
    parser.add_argument(
        "--preset", required=True, help="SpeechTranslator preset directory (with its tokenizers)"
    )
    parser.add_argument(
        "--shards",
        required=True,
        nargs="+",
        help="speech-translation shard folders, files or globs (keras-slam parallel-speech)",
    )
    parser.add_argument(
        "--text",
        action="store_true",
        help="translate the records' transcripts (text in, zero-shot MT) instead of their audio",
    )
    parser.add_argument("--strategy", choices=("greedy", "beam"), default="greedy")
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--max-length",
        type=int,
        help="decoder positions per translation, BOS included (default: the model's maximum)",
    )
    parser.add_argument(
        "--output",
        default="runs/evaluate_st",
        help="folder for report.json, translations.jsonl and <pair>.{ref,hyp}.txt",
    )
    parser.add_argument(
        "--examples", type=int, default=3, help="reference/hypothesis pairs to print"
    )


def run_evaluate_st(args):
    translator = SpeechTranslator.from_preset(args.preset)
    source = "text" if args.text else "speech"
    try:
        files = pipeline.list_shards(args.shards)
        scores, rows = translation_evaluation.evaluate_translation(
            translator,
            files,
            source,
            args.strategy,
            args.beam_width,
            args.batch_size,
            args.max_length,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for row in rows[: args.examples]:
        print(f"[{row['id']}] ref: {row['reference']}\n     hyp: {row['hypothesis']}")
    print(scores.table())
    settings = {
        "preset": args.preset,
        "shards": files,
        "source": source,
        "strategy": args.strategy,
        "beam_width": args.beam_width,
        "max_length": args.max_length,
    }
    translation_evaluation.write_evaluation(args.output, scores, rows, settings)
    print(f"report, translations and per-pair text files in {args.output}")
    return 0


COMMANDS.append(
    (
        "evaluate-st",
        "BLEU / chrF per language pair of a SpeechTranslator preset on speech-translation shards",
        add_evaluate_st_arguments,
        run_evaluate_st,
    )
)


def add_synth_corpus_arguments(parser):
    parser.add_argument(
        "--output",
        required=True,
        help="corpus folder (reused when a finished corpus with the same parameters is there)",
    )
    parser.add_argument("--hours", type=float, default=1.0, help="hours of speech per language")
    parser.add_argument(
        "--languages",
        nargs="+",
        help="language codes (default: every language of the bundled text)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="fixes sentences, voices, variants, rates, pitches and word gaps",
    )
    parser.add_argument(
        "--text",
        default=str(synth_corpus.SAMPLE_CORPUS),
        help="corpus whose text/train/<lang> shards give the sentences",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="synthesis processes (libespeak-ng is one per process)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_synth_corpus(args):
    try:
        output = synth_corpus.ensure_synth_corpus(
            args.output,
            args.hours,
            args.languages,
            args.seed,
            args.text,
            args.workers,
            progress=not args.no_progress,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with open(os.path.join(output, "summary.json"), encoding="utf-8") as file:
        print(file.read())
    return 0


COMMANDS.append(
    (
        "synth-corpus",
        "speak the bundled text with espeak-ng (pip wheel, no apt) into a paired TFRecord corpus",
        add_synth_corpus_arguments,
        run_synth_corpus,
    )
)


def add_parallel_text_arguments(parser):
    parser.add_argument(
        "--output",
        default=str(gettext_pairs.PARALLEL_TEXT),
        help="folder for <lang>/{train,dev,test}.jsonl.xz and summary.json",
    )
    parser.add_argument(
        "--languages",
        nargs="+",
        default=list(gettext_pairs.SAMPLE_LANGUAGES),
        help="catalog languages (folders of --locale-root)",
    )
    parser.add_argument(
        "--locale-root",
        default=gettext_pairs.LOCALE_ROOT,
        help="folder of <lang>/LC_MESSAGES/*.mo",
    )
    parser.add_argument(
        "--dpkg-info",
        default=gettext_pairs.DPKG_INFO,
        help="dpkg's *.list files (which package ships a catalog)",
    )
    parser.add_argument(
        "--doc-root",
        default=gettext_pairs.DOC_ROOT,
        help="folder of <package>/copyright (licences)",
    )
    parser.add_argument(
        "--max-train-pairs",
        type=int,
        default=gettext_pairs.MAX_TRAIN_PAIRS,
        help="train pairs written per language, the first by id (0: all); "
        "dev and test are written whole",
    )


def run_parallel_text(args):
    try:
        summary = gettext_pairs.write_parallel_text(
            args.output,
            args.languages,
            args.locale_root,
            args.dpkg_info,
            args.doc_root,
            args.max_train_pairs,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0


def add_parallel_speech_arguments(parser):
    directions = [
        parallel_speech.direction_name(*direction) for direction in parallel_speech.DIRECTIONS
    ]
    parser.add_argument(
        "--output",
        required=True,
        help="corpus folder (reused when a finished corpus with the same parameters is there)",
    )
    parser.add_argument(
        "--directions",
        nargs="+",
        default=directions,
        help="spoken-translated language pairs, one side en",
    )
    parser.add_argument(
        "--splits",
        nargs="+",
        default=list(gettext_pairs.SPLITS),
        choices=gettext_pairs.SPLITS,
    )
    parser.add_argument(
        "--max-pairs",
        type=int,
        default=parallel_speech.MAX_PAIRS,
        help="pairs per direction and split (0: all)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="fixes voices, variants, rates, pitches and word gaps",
    )
    parser.add_argument(
        "--text",
        default=str(gettext_pairs.PARALLEL_TEXT),
        help="parallel text made by parallel-text",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="synthesis processes (libespeak-ng is one per process)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_parallel_speech(args):
    directions = [tuple(name.split("-")) for name in args.directions]
    try:
        output = parallel_speech.ensure_parallel_speech(
            args.output,
            directions,
            args.splits,
            args.max_pairs or None,
            args.seed,
            args.text,
            args.workers,
            progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with open(os.path.join(output, "summary.json"), encoding="utf-8") as file:
        print(file.read())
    return 0


COMMANDS += [
    (
        "parallel-text",
        "extract English-X sentence pairs from the system's gettext catalogs (human translations) into JSONL",
        add_parallel_text_arguments,
        run_parallel_text,
    ),
    (
        "parallel-speech",
        "speak the parallel text with espeak-ng into a speech-translation TFRecord corpus",
        add_parallel_speech_arguments,
        run_parallel_speech,
    ),
]


def add_classification_corpus_arguments(parser, languages):
    parser.add_argument(
        "--output",
        required=True,
        help="corpus folder (reused when a finished corpus with the same parameters is there)",
    )
    parser.add_argument("--languages", nargs="+", default=list(languages), help="language codes")
    parser.add_argument("--seed", type=int, default=0, help="fixes voices and styles")
    parser.add_argument("--workers", type=int, default=1, help="synthesis processes")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_intent_corpus_arguments(parser):
    add_classification_corpus_arguments(parser, intents.LANGUAGES)
    parser.add_argument("--intents", nargs="+", default=list(intents.INTENTS), help="intent names")
    parser.add_argument(
        "--max-per-template",
        type=int,
        default=0,
        help="sentences per template, spread over its slot values (0: all)",
    )


def add_lid_corpus_arguments(parser):
    add_classification_corpus_arguments(parser, spoken_classification.LID_LANGUAGES)
    parser.add_argument("--train-per-language", type=int, default=120)
    parser.add_argument("--test-per-language", type=int, default=30)


def run_classification_corpus(args):
    options = {"seed": args.seed, "num_workers": args.workers, "progress": not args.no_progress}
    try:
        if args.command == "intent-corpus":
            output = spoken_classification.ensure_intent_corpus(
                args.output, args.languages, args.intents, args.max_per_template or None, **options
            )
        else:
            output = spoken_classification.ensure_language_id_corpus(
                args.output,
                args.languages,
                args.train_per_language,
                args.test_per_language,
                **options,
            )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with open(os.path.join(output, "summary.json"), encoding="utf-8") as file:
        print(file.read())
    return 0


COMMANDS += [
    (
        "intent-corpus",
        "speak and write the templated banking intents (12 intents, 5 languages, test split "
        "by template) into TFRecord shards",
        add_intent_corpus_arguments,
        run_classification_corpus,
    ),
    (
        "lid-corpus",
        "speak the committed gettext text in 9 languages into a language-ID TFRecord corpus",
        add_lid_corpus_arguments,
        run_classification_corpus,
    ),
]


COMMANDS.append(
    (
        "plan",
        "per-device memory of a SLAM training step (weights, optimizer, activations with and "
        "without remat) on a data x model mesh, and whether it fits",
        memory_plan.add_plan_arguments,
        memory_plan.run_plan,
    )
)


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-slam", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_arguments, run in COMMANDS:
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(subparser)
        subparser.set_defaults(run=run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
