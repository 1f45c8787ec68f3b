"""Speech translation recipe: SLAM pre-training -> SpeechTranslator, X->En.

    python -m recipes.st --config st_tiny --output runs/st
    python -m recipes.st --config st_tiny --preset runs/main/pretrained   # reuse a backbone
    python -m recipes.st --preset runs/main/pretrained --finetune-steps 600  # per setting (st_tiny: 1200)
    python -m recipes.st --config st_templated --preset runs/main/pretrained  # intent templates

On the committed gettext sentence pairs (tfrecords/parallel: de, es, fr,
it -> en; `st_tiny`) or the banking-intent templates' pairs
(`intents.translation_pairs`, de/es/fr/it -> en; `st_templated`: unseen
slot combinations, `st_templated_unseen`: unseen templates), spoken by
espeak-ng into a cache on first use (`ensure_parallel_speech`, reused
afterwards):

1. A tiny SLAM backbone pre-trained on tfrecords/sample (`recipes.main`),
   unless `--preset` names one; its tokenizer reads the source text.
2. Fine-tuning a `SpeechTranslator` (Transformer decoder, English character
   or BPE-piece targets, `target_pieces`) on speech translation from the
   pre-trained encoder and from a random one of the same size, then jointly
   on speech and text translation (mSLAM: ST + `mt_loss_weight` x MT, the MT
   side being the same pairs' source text) from the config's `joint_inits`
   (`settings`; `--inits` runs the settings of some inits only). With
   `encoder_ctc_steps` (`st_templated`), each encoder (pre-trained or random)
   is first CTC-fine-tuned on the training audio's transcripts (`ctc_encoder`).
3. BLEU and chrF (sacrebleu, per pair and their mean) on the test pairs
   within the training limits (`fits_training`), the zero-shot text
   translation of each ST-only model (it never saw text input in
   fine-tuning), and per setting whether the decoder reads the encoder
   (`translation_evaluation.encoder_reliance`: teacher-forced cross-entropy
   per target token (character or piece) with each test utterance's own
   audio vs another's), and the constant-output baselines: the training
   translation that scores the best BLEU (chrF) as the output for every test
   utterance (`constant_baselines`), the level a collapsed model reaches.
4. `results.json`, `results.png` (BLEU / chrF per setting), each setting's
   translations under `eval/<setting>/` and the joint model as a task
   preset (`translator/`; `keras-slam evaluate-st --preset` reads it).

Every training phase checkpoints under `<output>/checkpoints/<phase>/`
(`keras_slam.checkpointing` flags: `--checkpoint-every-steps`, ...): rerun
the same command after a kill and it resumes where it stopped, skipping the
phases that had finished.
"""

import argparse
import functools
import json
import os
import time

import keras

from keras_slam import checkpointing, distribution
from keras_slam.data import gettext_pairs, intents, parallel_speech, pipeline, schema
from keras_slam.data.tokenizers import (
    CharacterTokenizer,
    SentencePieceTokenizer,
    build_character_vocabulary,
    train_sentencepiece,
)
from keras_slam.data.translation import split_translation_batch
from keras_slam.metrics import translation_evaluation
from keras_slam.models.layout_map import get_layout_map
from keras_slam.models.speech_translator import SpeechTranslator
from keras_slam.models.speech_translator_preprocessor import SpeechTranslatorPreprocessor
from recipes import asr, slam
from recipes import main as main_recipe

DIRECTIONS = tuple((language, "en") for language in gettext_pairs.SAMPLE_LANGUAGES)
MAX_SOURCE_LENGTH = 160  # characters of the spoken side's text (MT input)
_TINY_DECODER = {
    "decoder_num_layers": 1,
    "decoder_hidden_dim": 64,
    "decoder_intermediate_dim": 128,
    "decoder_num_heads": 2,
    "dropout": 0.1,
    "label_smoothing": 0.1,
}
# Where the spoken pairs are synthesised on first use (recipes.slm reads them too).
SPEECH_CACHE = "runs/parallel_speech"
# A config's "pairs": (language, split) -> X-En pair dicts {"id", "en", language}.
PAIR_SOURCES = {
    "gettext": gettext_pairs.read_pairs,  # open-domain software strings
    # The banking-intent templates: test = unseen slot combinations of
    # training templates, or unseen templates (`intents.translation_pairs`).
    "intents_slots": functools.partial(intents.translation_pairs, held_out="slots"),
    "intents_template": functools.partial(intents.translation_pairs, held_out="template"),
}
ENCODER_INITS = ("pretrained", "random_init")  # the preset's encoder weights, or a random one
CONFIGS = {
    # Sized for <= 15 min on 2 CPU cores: two directions, short pairs
    # (~1,500 of 2,000 per direction fit the limits), 10-16 per step.
    "st_tiny": {
        "pairs": "gettext",
        "renditions": 1,  # times each training pair is spoken (each in its own style)
        "target_pieces": None,  # English characters; N: a SentencePiece model of <= N pieces
        "backbone": main_recipe.TINY_BACKBONE,
        "pretrain_steps": 100,
        "decoder": _TINY_DECODER,
        "directions": (("de", "en"), ("es", "en")),
        "train_pairs": 2000,  # per direction
        "test_pairs": 40,  # per direction; 54 of the 80 fit the limits below
        "max_translation_length": 48,  # English characters; longer pairs are skipped
        "bucket_seconds": (2.5, 4.0),  # longer utterances are skipped
        "finetune_steps": 1200,
        "learning_rate": 2e-3,
        "batch_seconds": 40.0,
        "mt_loss_weight": 5.0,  # mSLAM's
        # The CTC auxiliary on the encoder (source transcript; see
        # `SpeechTranslator`): the encoder keeps the spoken content.
        "ctc_loss_weight": 1.0,
        # CTC fine-tuning of the encoder alone on the training audio's source
        # transcripts before translation (`ctc_encoder`); 0: none.
        "encoder_ctc_steps": 0,
        "max_decode_length": None,  # decoder positions at evaluation (None: all)
        # The settings (`settings`): ST only from these encoder inits, joint
        # ST + MT from these.
        "encoder_inits": ENCODER_INITS,
        "joint_inits": ("pretrained",),
    },
}
# A learnable domain: the intent templates' 83 training pairs per direction
# (each spoken 4 times) and 27 test pairs of unseen slot combinations.
CONFIGS["st_templated"] = dict(
    CONFIGS["st_tiny"],
    pairs="intents_slots",
    renditions=4,
    target_pieces=400,  # ~word pieces: 5-19 decoder positions instead of 20-66 characters
    directions=tuple((language, "en") for language in gettext_pairs.SAMPLE_LANGUAGES),
    train_pairs=None,  # all
    test_pairs=None,
    max_translation_length=24,  # pieces (the longest English sentence has 66 characters)
    bucket_seconds=(3.0, 5.0),  # the longest utterance: 5.0 s
    finetune_steps=600,
    # Measured on ST from the pre-trained encoder (README): BLEU 12.19 -> 14.76,
    # 5 -> 9 distinct outputs of 108, own-audio gap +0.021 -> +0.048 nats per piece.
    encoder_ctc_steps=600,
    # Joint ST + MT from the init whose ST translates after the CTC phase
    # (README: random init 25.13 BLEU, pre-trained 14.76), against its ST row.
    joint_inits=("random_init",),
)
CONFIGS["st_templated_unseen"] = dict(CONFIGS["st_templated"], pairs="intents_template")
# The tests and the guide: every stage, in seconds rather than minutes.
CONFIGS["st_smoke"] = dict(
    CONFIGS["st_tiny"],
    pretrain_steps=4,
    train_pairs=24,
    test_pairs=4,
    finetune_steps=4,
    encoder_ctc_steps=2,
    batch_seconds=10.0,
    max_decode_length=12,
    joint_inits=ENCODER_INITS,
)


def settings(config, inits=ENCODER_INITS):
    """[(name, encoder init, joint ST + MT)]: ST only from each of the
    config's `encoder_inits`, then joint ST + MT from each of its
    `joint_inits`; only the inits in `inits` (`--inits`)."""
    rows = [(f"st_{init}", init, False) for init in config["encoder_inits"]]
    rows += [(f"st_mt_{init}", init, True) for init in config["joint_inits"]]
    return [row for row in rows if row[1] in inits]


def read_pairs(config):
    """(language, split) -> the config's pairs, training pairs repeated
    `renditions` times (ids "<id>-r<k>"; each repeat is spoken in its own style)."""
    read = PAIR_SOURCES[config["pairs"]]

    def pairs(language, split):
        repeats = config["renditions"] if split == "train" else 1
        if repeats == 1:
            return read(language, split)
        return [
            dict(pair, id=f"{pair['id']}-r{k}")
            for pair in read(language, split)
            for k in range(repeats)
        ]

    return pairs


def speech_corpus(cache, config):
    """{split: speech-translation shard files} of the config's X->En
    directions, spoken into `cache` on first use."""
    files = {}
    directions = config["directions"]
    # The gettext corpora keep the names of caches made before other sources.
    source = [] if config["pairs"] == "gettext" else [config["pairs"]]
    for split, pairs in (("train", config["train_pairs"]), ("test", config["test_pairs"])):
        count = "all" if pairs is None else str(pairs)
        name = "_".join([*source, split, count, *(spoken for spoken, _ in directions)])
        corpus = parallel_speech.ensure_parallel_speech(
            os.path.join(cache, name),
            directions,
            (split,),
            pairs,
            progress=False,
            read_pairs=read_pairs(config),
        )
        names = [parallel_speech.direction_name(*direction) for direction in directions]
        folders = [os.path.join(corpus, n, split) for n in names]
        list_shards = pipeline.host_shards if split == "train" else pipeline.list_shards
        files[split] = list_shards(folders)
    return files


def build_source_tokenizer():
    """Characters of the sample corpus' transcripts and the pairs' source side."""
    texts = asr.training_transcripts()
    for language, _ in DIRECTIONS:
        texts += [pair[language] for pair in gettext_pairs.read_pairs(language, "train")]
    return CharacterTokenizer(build_character_vocabulary(texts, max_size=160), sequence_length=None)


def build_target_tokenizer(config):
    """Characters, or SentencePiece BPE pieces (`target_pieces`), of the
    English side of the config's training pairs."""
    read = PAIR_SOURCES[config["pairs"]]
    texts = [pair["en"] for language, _ in DIRECTIONS for pair in read(language, "train")]
    if config["target_pieces"]:
        proto = train_sentencepiece(
            texts, config["target_pieces"], "bpe", character_coverage=1.0, hard_vocab_limit=False
        )
        return SentencePieceTokenizer(proto)
    return CharacterTokenizer(build_character_vocabulary(texts, max_size=96), sequence_length=None)


def build_preprocessor(preset, config):
    """The preset's front end and (source) tokenizer + `build_target_tokenizer`."""
    source = SpeechTranslatorPreprocessor.from_preset(preset)
    return SpeechTranslatorPreprocessor(
        audio_converter=source.audio_converter,
        tokenizer=source.tokenizer,
        target_tokenizer=build_target_tokenizer(config),
    )


def build_translator(preset, preprocessor, config, load_weights=True):
    """`SpeechTranslator.from_preset` with the config's decoder: the preset's
    encoder (its weights, or a random one of its size) and a new decoder."""
    return SpeechTranslator.from_preset(
        preset,
        load_weights=load_weights,
        preprocessor=preprocessor,
        mt_loss_weight=config["mt_loss_weight"],
        ctc_loss_weight=config["ctc_loss_weight"],
        max_target_length=config["max_translation_length"] + 1,
        **config["decoder"],
    )


def translation_dataset(files, preprocessor, config, training=False, seed=0):
    """Speech + source text + translation batches (`paired=True`); training
    batches are shuffled and repeat."""
    return pipeline.speech_dataset(
        files,
        preprocessor.audio_converter,
        pipeline.Buckets.from_budget(config["bucket_seconds"], config["batch_seconds"]),
        tokenizer=preprocessor.tokenizer,
        max_token_length=MAX_SOURCE_LENGTH,
        paired=True,
        translation_tokenizer=preprocessor.target_tokenizer,
        max_translation_length=config["max_translation_length"],
        too_long="skip",  # audio over the last bucket, translations over the limit
        shuffle_buffer=1024 if training else 0,
        seed=seed,
        repeat=training,
    )


def fits_training(preprocessor, config):
    """Predicate on a record dict: does `translation_dataset` keep it (audio
    within the last bucket, source and translation within their limits)?"""
    max_samples = round(config["bucket_seconds"][-1] * schema.SAMPLE_RATE)

    def fits(record):
        source = preprocessor.tokenizer(record["transcript"])
        target = preprocessor.target_tokenizer(record["translation"])
        return (
            len(record["pcm"]) <= max_samples
            and 0 < len(source) <= MAX_SOURCE_LENGTH
            and len(target) <= config["max_translation_length"]
        )

    return fits


def ctc_encoder(preset, files, config, output, load_weights, seed=0, verbose=2, args=None):
    """CTC fine-tuning of the preset's encoder (its weights, or a random one
    of its size) on the source transcripts of the training audio
    (`asr.finetune`, `config["encoder_ctc_steps"]` steps at the config's
    learning rate and batch budget), saved as a backbone preset with the
    preset's front end and tokenizer.

    Returns:
        (preset directory, {"ctc_loss": [first, last window], "cer": greedy
        CER on the test audio, "cpu_seconds": of this process}).
    """
    args = args or checkpointing.default_training_arguments()
    cpu_started = time.process_time()
    name = "ctc_encoder_" + ("pretrained" if load_weights else "random_init")
    keras.utils.set_random_seed(seed)
    source = SpeechTranslatorPreprocessor.from_preset(preset)
    tokenizer, front_end = source.tokenizer, source.audio_converter
    recognizer = asr.build_recognizer(
        preset, tokenizer, front_end, load_weights=load_weights, spec_augment=None
    )
    languages = [spoken for spoken, _ in config["directions"]]
    train = asr.transcribed_dataset(
        files["train"], tokenizer, front_end, languages, config["batch_seconds"], True, seed, "skip"
    )
    losses = asr.finetune(
        recognizer,
        train,
        config["encoder_ctc_steps"],
        config["learning_rate"],
        verbose=verbose,
        checkpoint=checkpointing.checkpoint_from_args(args, output, name),
        optimizer_arguments=checkpointing.optimizer_arguments(args),
        max_consecutive_skips=args.max_consecutive_skips,
    )["loss"]
    test = asr.transcribed_dataset(files["test"], tokenizer, front_end, languages, too_long="skip")
    rates, _ = asr.evaluate(recognizer, test, languages)
    directory = os.path.join(output, name)
    slam.save_pretrained_preset(recognizer.backbone, directory, front_end, tokenizer)
    cpu_seconds = time.process_time() - cpu_started
    return directory, {
        "ctc_loss": [losses[0], losses[-1]],
        "cer": rates["all"]["cer"],
        "cpu_seconds": cpu_seconds,
    }


def joint_batch(batch):
    """A paired batch -> {"speech": ST batch, "text": MT batch of its source text}."""
    text_keys = ("token_ids", "token_padding_mask", "translation_ids", "translation_padding_mask")
    return {"speech": batch, "text": {key: batch[key] for key in text_keys}}


def finetune(translator, train, config, joint=False, verbose=2, checkpoint=None, args=None):
    """Trains for `config["finetune_steps"]` steps; returns {metric: mean of each
    window} (`asr.fit_logged`: "loss", "st_loss", "ctc_loss", ...).

    `checkpoint`: a `checkpointing.TrainingCheckpoint` to save to and resume
    from; `args`: the `checkpointing` flags (clipping, accumulation, skips).
    """
    args = args or checkpointing.default_training_arguments()
    translator.compile(
        learning_rate=asr.warmup_cosine(config["finetune_steps"], config["learning_rate"]),
        **checkpointing.optimizer_arguments(args),
    )

    def split(batch):
        batch = joint_batch(batch) if joint else batch
        return split_translation_batch(batch, translator.bos_id, translator.eos_id)

    return asr.fit_logged(
        translator,
        train.map(split),
        config["finetune_steps"],
        verbose=verbose,
        checkpoint=checkpoint,
        max_consecutive_skips=args.max_consecutive_skips,
    )


def constant_baselines(train_files, rows, keep):
    """{"constant_best_bleu" / "constant_best_chrf": scores dict + "sentence"}:
    the training translation (within the limits, `keep`) that scores best as
    the output for every test row (`translation_evaluation.constant_baseline`),
    the level a collapsed translator reaches."""
    candidates = [
        record["translation"]
        for record in translation_evaluation.translation_records(train_files)
        if keep(record)
    ]
    best = translation_evaluation.constant_baseline(candidates, rows)
    return {
        f"constant_best_{metric}": dict(scores.as_dict(), sentence=sentence, distinct_outputs=1)
        for metric, (sentence, scores) in best.items()
    }


def plot_results(results, path):
    """Grouped bars: BLEU and chrF per setting."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = list(results)
    figure, axis = pyplot.subplots(figsize=(8, 4))
    for offset, metric in ((-0.2, "bleu"), (0.2, "chrf")):
        values = [results[name]["average"][metric] for name in names]
        axis.bar([i + offset for i in range(len(names))], values, width=0.4, label=metric)
    axis.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    axis.set_ylabel("score (sacrebleu, mean over X->En pairs)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def format_table(results):
    """Per setting: BLEU / chrF per pair and mean, distinct outputs, and the
    test cross-entropy per target token with own vs other audio (speech rows)."""
    pairs = list(next(iter(results.values()))["pairs"])
    header = [f"{pair:>13}" for pair in pairs] + [f"{'mean':>13}", f"{'distinct':>8}"]
    lines = [f"{'setting':<24} " + " ".join(header) + f" {'CE own / other / gap':>22}"]
    for name, r in results.items():
        scores = [r["pairs"][pair] for pair in pairs] + [r["average"]]
        cells = [f"{s['bleu']:6.2f}/{s['chrf']:6.2f}" for s in scores]
        cells.append(f"{r['distinct_outputs']:>4}/{r['average']['sentences']:<3}")
        reliance = r.get("encoder_reliance")
        if reliance:
            cells.append(f"{reliance['own']:.4f}/{reliance['other']:.4f}/{reliance['gap']:+.4f}")
        lines.append(f"{name:<24} " + " ".join(cells))
    return "\n".join(lines)


def run(
    config_name,
    output,
    preset=None,
    cache=SPEECH_CACHE,
    seed=0,
    verbose=2,
    args=None,
    finetune_steps=None,
    inits=ENCODER_INITS,
):
    """The whole recipe (module docstring); returns {setting: scores dict}.

    `args`: the `checkpointing` flags (default: their defaults);
    `finetune_steps`: per setting, instead of the config's; `inits`: run only
    the settings from these encoder inits (`settings`).
    """
    args = args or checkpointing.default_training_arguments()
    config = CONFIGS[config_name]
    if finetune_steps:
        config = dict(config, finetune_steps=finetune_steps)
    os.makedirs(output, exist_ok=True)
    keras.utils.set_random_seed(seed)
    front_end = asr.make_front_end()
    if preset is None:
        preset = os.path.join(output, "pretrained")
        pretrain_settings = main_recipe.Settings(
            config["backbone"], config["pretrain_steps"], config["finetune_steps"]
        )
        print(f"== SLAM pre-training: {pretrain_settings.pretrain_steps} steps")
        main_recipe.pretrain(
            pretrain_settings,
            build_source_tokenizer(),
            front_end,
            preset,
            seed,
            checkpointing.checkpoint_from_args(args, output, "pretraining"),
            args,
            evaluate_held_out=False,  # only the preset is used here
        )
    files = speech_corpus(cache, config)
    results, table, ctc_encoders = {}, {}, {}  # ctc_encoders: init -> ctc_encoder()
    for name, init, joint in settings(config, inits):
        load_weights = init == "pretrained"
        encoder, encoder_ctc = preset, None
        if config["encoder_ctc_steps"]:
            # Once per init; its ST and joint settings start from the same encoder.
            if init not in ctc_encoders:
                ctc_encoders[init] = ctc_encoder(
                    preset, files, config, output, load_weights, seed, verbose, args
                )
            encoder, encoder_ctc = ctc_encoders[init]
            load_weights = True  # the CTC-fine-tuned encoder's weights
        started, cpu_started = time.time(), time.process_time()
        # After the CTC phase, so that every setting's decoder starts from the
        # same initial weights and data order.
        keras.utils.set_random_seed(seed)
        # Made after the seed: `tf.random.set_seed` drops the TF resources made
        # before it (a SentencePiece target tokenizer's: "Resource ... does not exist").
        preprocessor = build_preprocessor(preset, config)
        train = translation_dataset(files["train"], preprocessor, config, training=True, seed=seed)
        test = translation_dataset(files["test"], preprocessor, config)
        translator = build_translator(encoder, preprocessor, config, load_weights)
        print(f"== {name}: {config['finetune_steps']} fine-tuning steps")
        checkpoint = checkpointing.checkpoint_from_args(args, output, f"finetuning_{name}")
        history = finetune(translator, train, config, joint, verbose, checkpoint, args)
        # Zero-shot text translation of the models that never saw text input.
        sources = ("speech",) if joint else ("speech", "text")
        for source in sources:
            scores, rows = translation_evaluation.evaluate_translation(
                translator,
                files["test"],
                source,
                batch_size=16,
                max_length=config["max_decode_length"],
                keep=fits_training(preprocessor, config),
            )
            label = name if source == "speech" else "zero_shot_mt_" + name.removeprefix("st_")
            translation_evaluation.write_evaluation(
                os.path.join(output, "eval", label), scores, rows, {"setting": label}
            )
            table[label] = scores.as_dict()
            table[label]["distinct_outputs"] = len({row["hypothesis"] for row in rows})
            print(scores.table())
        split = functools.partial(
            split_translation_batch, bos_id=translator.bos_id, eos_id=translator.eos_id
        )
        reliance = translation_evaluation.encoder_reliance(translator, test.map(split))
        table[name]["encoder_reliance"] = reliance
        print("test CE per target token, own vs other audio:", reliance)
        results[name] = {
            "loss": [history["loss"][0], history["loss"][-1]],
            "ctc_loss": [history["ctc_loss"][0], history["ctc_loss"][-1]]
            if "ctc_loss" in history
            else None,
            "seconds": time.time() - started,
            "cpu_seconds": time.process_time() - cpu_started,
            "encoder_ctc": encoder_ctc,
        }
    table.update(constant_baselines(files["train"], rows, fits_training(preprocessor, config)))
    for name in ("constant_best_bleu", "constant_best_chrf"):
        print(f"{name}: {table[name]['sentence']!r}")
    translator.save_to_preset(os.path.join(output, "translator"))
    results["scores"] = table
    with open(os.path.join(output, "results.json"), "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    plot_results(table, os.path.join(output, "results.png"))
    print(format_table(table))
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="st_tiny", choices=sorted(CONFIGS))
    parser.add_argument("--output", default="runs/st")
    parser.add_argument(
        "--preset", help="pre-trained backbone preset to start from (default: pre-train one)"
    )
    parser.add_argument(
        "--speech-cache", default=SPEECH_CACHE, help="spoken pairs, made on first use"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune-steps", type=int, help="per setting (default: the config's)")
    parser.add_argument(
        "--inits",
        nargs="+",
        choices=ENCODER_INITS,
        default=ENCODER_INITS,
        help="run only the settings from these encoder inits (default: all of the config's)",
    )
    checkpointing.add_training_arguments(parser)
    distribution.add_mesh_argument(parser)
    args = parser.parse_args(argv)
    checkpointing.apply_mixed_precision(args)
    distribution.apply_mesh(args.mesh, get_layout_map)  # every SLAM model's
    run(
        args.config,
        args.output,
        args.preset,
        args.speech_cache,
        args.seed,
        args=args,
        finetune_steps=args.finetune_steps,
        inits=tuple(args.inits),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
