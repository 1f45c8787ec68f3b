"""SLM recipe: a frozen CTC-trained speech encoder + the frozen tiny LM of
`recipes/lm.py`, joined by a trained `SpeechAdapter`.

    python -m recipes.slm --output runs/slm            # tiny config
    python -m recipes.slm --output runs/slm --config smoke
    python -m recipes.slm --output runs/slm_main \
        --encoder-preset runs/main/recognizer_pretrained   # the main job's encoder

Steps: (1) the LM preset (`recipes.lm.train_lm`, reused when it exists);
(2) the speech encoder: a tiny `SpeechEncoder` CTC-trained on the paired
sample (`recipes.asr`) and saved as a backbone preset, or with
`--encoder-preset` the backbone of a CTC-trained `SpeechRecognizer` task
preset (e.g. the main job's SLAM backbone; the SLM reads its speech tower
and shared encoder); (3) the adapter, trained on the TRAINED instruction
families ("Transcribe the audio.", "Translate the audio into English.",
"Which language is spoken?") of the paired sample's training records and
of the spoken X->En gettext pairs (`parallel_speech`, synthesised into
`--speech-cache` on first use). The encoder is frozen, so its output is
computed once per utterance and the adapter trains on it; (4) on the test
records: CER of "Transcribe the audio." through the SLM vs the CTC
recognizer of the same encoder, language-ID accuracy, the held-out
"contextual_biasing" instruction (zero-shot: the prompt's context lists the
utterance's longest words; CER and the recall of the listed words vs the
plain "Transcribe the audio." on the same utterances), and BLEU / chrF (sacrebleu) of
"Translate the audio into English." on the spoken test pairs; (5) the ST
comparison row: a `SpeechTranslator` (`recipes.st`'s decoder) on the same
frozen encoder, fine-tuned `translator_steps` steps on the same spoken
training pairs, BLEU / chrF on the same test pairs. Results, with wall and
CPU seconds per phase, go to `report.json`; the task preset (referencing
the two frozen presets) to `output/slm_preset`. `ctc_loss_weight` > 0
adds the SLM's CTC auxiliary on the adapter output (`SpeechLanguageModel`).

Every training phase checkpoints under `<output>/checkpoints/<phase>/`
(`lm`, `encoder`, `adapter`, `translator`; `keras_slam.checkpointing`
flags): rerun the same command after a kill and it resumes where it
stopped; a finished phase is restored, not retrained.

The tiny config's measured table is in the README (section "Speech language
model (SLM)").
"""

import argparse
import contextlib
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_slam import checkpointing, distribution
from keras_slam.data import instructions, pipeline, schema
from keras_slam.layers.conformer import ConformerConfig
from keras_slam.metrics import bleu, translation_evaluation
from keras_slam.metrics.error_rates import ErrorRateAccumulator
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.models.speech_language_model import SpeechLanguageModel, split_instruction_batch
from keras_slam.models.speech_recognizer import SpeechRecognizer
from keras_slam.models.speech_translator_preprocessor import SpeechTranslatorPreprocessor
from keras_slam.utils import preset_utils
from keras_slam.utils.inference_function import inference_function
from recipes import asr, lm, st

TINY = dict(
    lm=lm.TINY,
    # The paired sample's languages: the encoder's CTC data, the adapter's
    # instruction records and the test records.
    languages=asr.LANGUAGES,
    encoder=dict(hidden_dim=96, num_layers=3, subsampling_filters=32),
    asr_steps=600,
    asr_learning_rate=2e-3,
    adapter=dict(hidden_dim=128, stack_frames=4, num_layers=1, num_heads=4),
    adapter_steps=1200,
    batch_size=8,
    learning_rate=2e-3,
    # Training utterances longer than this, or responses longer than
    # `response_length` LM tokens, are skipped (counted in the report).
    max_seconds=7.5,
    response_length=48,
    max_new_tokens=48,
    # Speech translation: the X->En gettext pairs spoken by espeak-ng
    # (`parallel_speech`, made on first use in --speech-cache); pairs per
    # direction and split. Empty `st_directions`: no speech translation.
    st_directions=(("de", "en"), ("es", "en")),
    st_train_pairs=300,
    st_test_pairs=20,
    # The ST comparison row: a `SpeechTranslator` (recipes.st's decoder) on
    # the same frozen encoder and spoken pairs; its fine-tuning steps.
    translator_steps=600,
    # The SLM's CTC auxiliary on the adapter output (transcripts in LM
    # tokens; `SpeechLanguageModel`); 0: none.
    ctc_loss_weight=0.0,
)
SMOKE = dict(
    TINY,
    lm=lm.SMOKE,
    languages=("de", "es"),  # 60 training and 16 test records of the 330 and 44
    encoder=dict(hidden_dim=16, num_layers=1, subsampling_filters=4),
    asr_steps=4,
    adapter=dict(hidden_dim=16, stack_frames=4, num_layers=1, num_heads=2),
    adapter_steps=4,
    max_new_tokens=4,
    st_train_pairs=4,
    st_test_pairs=2,
    translator_steps=4,
)
CONFIGS = {"tiny": TINY, "smoke": SMOKE}
SAMPLE_RATE = 16000
# The translator's longest English target (characters; longer training pairs
# are skipped): st_tiny's 48 would skip 139 of the tiny config's 600 training
# pairs, and its 4 s bucket 103; none is over 96, 6 are over 7.5 s.
TRANSLATOR_TARGET_CHARACTERS = 96


def speech_records(split=None, corpus=asr.SAMPLE_CORPUS, languages=asr.LANGUAGES, files=None):
    """Speech records as dicts of Python values, PCM as float: the paired
    sample's `split`, or the shard `files` given."""
    if files is None:
        files = pipeline.list_shards(
            [os.path.join(corpus, "paired", split, language) for language in languages]
        )
    records = []
    for record in pipeline.read_records(files, kind=schema.SPEECH).as_numpy_iterator():
        item = {k: v.decode("utf-8") for k, v in record.items() if isinstance(v, bytes)}
        item["waveform"] = record["pcm"].astype("float32") / 32768.0
        records.append(item)
    return records


def translation_config(config):
    """The `recipes.st` config of the SLM's spoken pairs and of its
    frozen-encoder translator: st_tiny's (gettext pairs spoken once, its
    decoder) with the SLM's directions, pair counts and utterance limit,
    `translator_steps` steps, no CTC auxiliary (the encoder is frozen) and
    English targets up to `TRANSLATOR_TARGET_CHARACTERS` long."""
    return dict(
        st.CONFIGS["st_tiny"],
        directions=config["st_directions"],
        train_pairs=config["st_train_pairs"],
        test_pairs=config["st_test_pairs"],
        bucket_seconds=(4.0, config["max_seconds"]),
        max_translation_length=TRANSLATOR_TARGET_CHARACTERS,
        finetune_steps=config["translator_steps"],
        ctc_loss_weight=0.0,
    )


def translation_records(cache, config):
    """{"train", "test"}: the spoken X->En pairs of the config's directions
    (`recipes.st.speech_corpus`, synthesised into `cache` on first use)."""
    if not config["st_directions"]:
        return {"train": [], "test": []}
    files = st.speech_corpus(cache, translation_config(config))
    return {split: speech_records(files=files[split]) for split in ("train", "test")}


def train_translator(encoder_preset, recognizer, cache, config, verbose=2, checkpoint=None):
    """The ST comparison row: `recipes.st`'s `SpeechTranslator` on the frozen
    encoder of `encoder_preset` (its weights loaded, trainable False: only
    the decoder trains), fine-tuned (`st.finetune`) on the SLM's spoken
    training pairs and scored (greedy) on all its spoken test pairs.

    Returns: {"bleu", "chrf", "items", "distinct_outputs", "examples"
    (the first 5 (reference, hypothesis) pairs), "loss_first_last",
    "training_pairs_skipped"}.
    """
    st_config = translation_config(config)
    # The layer the CTC head (and the SLM's adapter) reads: a SLAM
    # backbone's speech tower or its shared encoder.
    decoder = dict(st_config["decoder"], use_shared_encoder=recognizer.use_shared_encoder)
    st_config["decoder"] = decoder
    files = st.speech_corpus(cache, st_config)
    preprocessor = SpeechTranslatorPreprocessor(
        audio_converter=recognizer.preprocessor.audio_converter,
        tokenizer=recognizer.preprocessor.tokenizer,
        target_tokenizer=st.build_target_tokenizer(st_config),
    )
    translator = st.build_translator(encoder_preset, preprocessor, st_config)
    translator.backbone.trainable = False
    train = st.translation_dataset(files["train"], preprocessor, st_config, training=True)
    history = st.finetune(translator, train, st_config, verbose=verbose, checkpoint=checkpoint)
    _, rows = translation_evaluation.evaluate_translation(translator, files["test"], "speech")
    references = [row["reference"] for row in rows]
    hypotheses = [row["hypothesis"] for row in rows]
    fits = st.fits_training(preprocessor, st_config)
    training = list(pipeline.read_records(files["train"], kind=schema.SPEECH).as_numpy_iterator())
    return {
        # Corpus scores over both directions, as the SLM's `evaluate`.
        "bleu": bleu.corpus_bleu(references, hypotheses),
        "chrf": bleu.corpus_chrf(references, hypotheses),
        "items": len(rows),
        "distinct_outputs": len(set(hypotheses)),
        "examples": list(zip(references, hypotheses))[:5],
        "loss_first_last": [history["loss"][0], history["loss"][-1]],
        "training_pairs_skipped": sum(not fits(record) for record in training),
    }


def by_length(function, items, batch_size, multiple):
    """`function((padded (B, L, ...), mask (B, L)))` -> (values (B, L', ...),
    mask (B, L')) on batches of similar-length `items`, each padded to a
    multiple of `multiple` and to `batch_size` rows (few shapes, few
    compiles; the functions here are padding invariant). Returns each
    item's real values."""
    order = np.argsort([len(item) for item in items], kind="stable")
    results = [None] * len(items)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        rows = [items[i] for i in chosen]
        longest = -(-max(len(row) for row in rows) // multiple) * multiple
        rows += [rows[0][:0]] * (batch_size - len(rows))
        values, mask = function(instructions.pad_rows(rows, longest))
        values, mask = keras.ops.convert_to_numpy(values), keras.ops.convert_to_numpy(mask)
        for i, value, length in zip(chosen, values, mask.sum(axis=1)):
            results[i] = value[: int(length)]
    return results


def record_features(records, front_end, batch_size=16):
    """(T, F) log-mel features of each record (the recipe's front end)."""
    features = inference_function(
        lambda batch: front_end(batch[0], padding_mask=batch[1]), front_end.weights
    )
    waveforms = [record["waveform"] for record in records]
    return by_length(features, waveforms, batch_size, SAMPLE_RATE)


def record_encodings(slm, features, batch_size=16):
    """The frozen encoder's (T', D) output for each (T, F) feature array,
    computed once: the adapter trains on these (`speech_encodings`)."""
    encode = inference_function(
        lambda batch: slm.frozen_encodings(*batch), slm.speech_encoder.weights
    )
    return by_length(encode, features, batch_size, 256)


def instruction_dataset(
    examples,
    features,
    tokenize_prompt,
    tokenize_response,
    batch_size,
    max_frames,
    prompt_length,
    response_length,
    seed=0,
    speech_keys=("speech_features", "speech_padding_mask"),
    transcript_ids=None,
):
    """Shuffled, repeating, fixed-shape `SpeechLanguageModel` batches of
    `instruction_examples` (a `tf.data.Dataset` of dicts).

    Built from in-memory tensors, each record's features stored once and
    gathered per batch: no Python runs in the pipeline (the iterator of a
    `from_generator` dataset, finalised at interpreter exit, can hang it).

    Args:
        examples: `instruction_examples` output.
        features: per record, its (T, F) features (index as in `examples`),
            or its frozen encodings (T', D) (`speech_keys` then names them).
        tokenize_prompt / tokenize_response: text -> list of ids
            (`SpeechLanguageModel.prompt_ids` / `response_ids`).
        batch_size: items per batch.
        max_frames, prompt_length, response_length: the fixed shapes;
            longer items raise ValueError naming the record or example.
        seed: the shuffle order (the same seed, the same batches).
        speech_keys: the batch keys of the padded `features` and their mask.
        transcript_ids: per record, its transcript's LM ids (index as in
            `examples`): batches then hold "transcript_token_ids" and
            "transcript_padding_mask" (the SLM's CTC auxiliary labels).
    """
    records = sorted({index for index, *_ in examples})
    for index in records:
        if len(features[index]) > max_frames:
            raise ValueError(
                f"record {index}: {len(features[index])} speech frames > {max_frames}; "
                "raise the limit"
            )
    speech, speech_mask = instructions.pad_rows([features[i] for i in records], max_frames, 0.0)
    row_of = {index: row for row, index in enumerate(records)}
    items = {"row": np.array([row_of[index] for index, *_ in examples], "int32")}
    items["prompt_token_ids"], items["prompt_padding_mask"] = instructions.pad_rows(
        [np.asarray(tokenize_prompt(text), "int32") for _, _, text, _ in examples],
        prompt_length,
        0,
        "prompt tokens of example",
    )
    items["response_token_ids"], items["response_padding_mask"] = instructions.pad_rows(
        [np.asarray(tokenize_response(answer), "int32") for *_, answer in examples],
        response_length,
        0,
        "response tokens of example",
    )
    per_record = {speech_keys[0]: speech, speech_keys[1]: speech_mask}
    if transcript_ids is not None:
        rows = [np.asarray(transcript_ids[i], "int32") for i in records]
        padded = instructions.pad_rows(rows)
        per_record["transcript_token_ids"], per_record["transcript_padding_mask"] = padded
    per_record = {key: tf.constant(value) for key, value in per_record.items()}

    def gather_speech(batch):
        rows = batch.pop("row")
        for key, value in per_record.items():
            batch[key] = tf.gather(value, rows)
        return batch

    return (
        tf.data.Dataset.from_tensor_slices(items)
        .shuffle(len(examples), seed=seed)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .map(gather_speech)
    )


def train_encoder(output, config, verbose=2, args=None):
    """A tiny SpeechEncoder CTC-trained on the paired sample (checkpointed:
    a rerun restores it), saved as a backbone preset; the CTC baseline too.

    Returns: (encoder preset directory, CTC recognizer).
    """
    tokenizer, front_end = asr.build_tokenizer(), asr.make_front_end()
    encoder = SpeechEncoder(
        **config["encoder"],
        conformer=ConformerConfig(
            num_heads=4, ffn_dim=4 * config["encoder"]["hidden_dim"], conv_norm_groups=4
        ),
    )
    recognizer = SpeechRecognizer(
        encoder,
        preprocessor=asr.SpeechRecognizerPreprocessor(
            audio_converter=front_end, tokenizer=tokenizer
        ),
    )
    train = asr.paired_dataset(
        tokenizer, front_end, "train", languages=config["languages"], training=True
    )
    args = args or checkpointing.default_training_arguments()
    asr.finetune(
        recognizer,
        train,
        config["asr_steps"],
        config["asr_learning_rate"],
        verbose=verbose,
        checkpoint=checkpointing.checkpoint_from_args(args, output, "encoder"),
        optimizer_arguments=checkpointing.optimizer_arguments(args),
        max_consecutive_skips=args.max_consecutive_skips,
    )
    encoder_dir = os.path.join(output, "encoder_preset")
    recognizer.backbone.save_to_preset(encoder_dir)
    return encoder_dir, recognizer


def character_error_rate(references, hypotheses):
    accumulator = ErrorRateAccumulator(lowercase=True, remove_punctuation=True)
    accumulator.update_state(references, hypotheses, ["all"] * len(references))
    return accumulator.result()["all"]["cer"]


def evaluate(slm, records, features, families, max_new_tokens, batch_size=8):
    """Greedy responses of `families` on the test records -> metrics, examples.

    Every batch has the same shape (the longest utterance, `batch_size`
    rows): one compiled generation step per family. "contextual_biasing"
    is scored against the "transcribe" responses of the same utterances,
    so `families` must hold both (in any order); ValueError otherwise.
    """
    if "contextual_biasing" in families and "transcribe" not in families:
        raise ValueError(
            "evaluate: 'contextual_biasing' is compared with the plain instruction's "
            f"responses; add 'transcribe' to families {tuple(families)}"
        )
    frames = -(-max(len(f) for f in features) // 256) * 256 if features else 0
    chosen, responses = {}, {}
    for family in families:
        chosen[family] = instructions.instruction_examples(records, (family,))
        hypotheses = []
        for start in range(0, len(chosen[family]), batch_size):
            chunk = [i for i, *_ in chosen[family][start : start + batch_size]]
            real, filler = len(chunk), batch_size - len(chunk)
            rows = [features[i] for i in chunk] + [features[chunk[0]][:0]] * filler
            speech = instructions.pad_rows(rows, frames, 0.0)
            speech = {"speech_features": speech[0], "speech_padding_mask": speech[1]}
            instruction = instructions.INSTRUCTIONS[family]
            contexts = [
                instructions.context(family, records[i]) for i in chunk + chunk[:1] * filler
            ]
            hypotheses += slm.generate(speech, instruction, max_new_tokens, contexts)[:real]
        responses[family] = hypotheses
    results, examples = {}, {}
    for family in families:
        if not chosen[family]:
            continue
        hypotheses = responses[family]
        references = [answer for *_, answer in chosen[family]]
        examples[family] = list(zip(references, hypotheses))[:5]
        if family == "transcribe":
            results[family] = {"cer": character_error_rate(references, hypotheses)}
        elif family == "translate":
            results[family] = {
                "bleu": bleu.corpus_bleu(references, hypotheses),
                "chrf": bleu.corpus_chrf(references, hypotheses),
            }
        elif family == "language":
            hits = [h.strip() == r for r, h in zip(references, hypotheses)]
            results[family] = {"accuracy": float(np.mean(hits))}
        elif family == "contextual_biasing":
            # Both families hold every record with a transcript, in order.
            listed = [
                instructions.biasing_words(records[i]["transcript"]) for i, *_ in chosen[family]
            ]
            plain = responses["transcribe"]
            results[family] = {
                "cer": character_error_rate(references, hypotheses),
                "word_recall": word_recall(listed, hypotheses),
                "transcribe_cer": character_error_rate(references, plain),
                "transcribe_word_recall": word_recall(listed, plain),
            }
        results[family]["items"] = len(chosen[family])
    return results, examples


def word_recall(listed, hypotheses):
    """Fraction of the listed words (one list per hypothesis) that occur in
    their hypothesis (lower case, punctuation dropped)."""
    found = []
    for words, hypothesis in zip(listed, hypotheses):
        said = set(instructions.words(hypothesis))
        found += [word.lower() in said for word in words]
    return float(np.mean(found))


def training_examples(slm, records, encodings, config):
    """The trained families' `instruction_examples` of `records`, less the
    utterances over `max_seconds` and the responses over `response_length`
    tokens. Returns (examples, skip counts {"too_long_speech",
    "too_long_response"}, the longest kept encoding's frames)."""
    max_frames = None
    kept, skipped = [], {"too_long_speech": 0, "too_long_response": 0}
    for example in instructions.instruction_examples(records):
        index, _, _, answer = example
        if len(records[index]["waveform"]) > config["max_seconds"] * SAMPLE_RATE:
            skipped["too_long_speech"] += 1
        elif len(slm.response_ids(answer)) > config["response_length"]:
            skipped["too_long_response"] += 1
        else:
            kept.append(example)
            max_frames = max(max_frames or 0, len(encodings[index]))
    return kept, skipped, max_frames


class PhaseTimer:
    """Wall and CPU (all threads) seconds of each phase of the recipe."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, phase):
        wall, cpu = time.time(), time.process_time()
        yield
        self.seconds[phase] = {
            "wall": round(time.time() - wall, 1),
            "cpu": round(time.process_time() - cpu, 1),
        }


def check_encoder_preset(preset):
    """Raises ValueError unless `preset` is a saved `SpeechRecognizer` task.

    The SLM's frozen encoder is the backbone of a CTC-trained recognizer:
    its preprocessor gives the front end, its head the CTC comparison row.
    A backbone-only preset has neither (its head would be random).
    """
    if not os.path.isdir(preset):
        raise ValueError(f"--encoder-preset {preset!r}: no such directory")
    if not preset_utils.holds_task(preset, SpeechRecognizer):
        raise ValueError(
            f"--encoder-preset {preset!r} is not a SpeechRecognizer task preset (its "
            "task.json is missing or names another task). Give a CTC-trained recognizer, "
            "e.g. the main job's <output>/recognizer_pretrained, or fine-tune this backbone "
            "first (python -m recipes.asr --preset <backbone preset> --output <recognizer dir>)."
        )


def run(
    output,
    config_name="tiny",
    seed=0,
    verbose=2,
    args=None,
    encoder_preset=None,
    speech_cache=st.SPEECH_CACHE,
):
    """The whole recipe (module docstring); returns the report dict.

    `args`: the `checkpointing` flags (default: their defaults).
    `encoder_preset`: a CTC-trained `SpeechRecognizer` task preset whose
    backbone becomes the frozen encoder (instead of training one here).
    `speech_cache`: where the spoken translation pairs are (made on first use).
    """
    if encoder_preset is not None:
        check_encoder_preset(encoder_preset)
    args = args or checkpointing.default_training_arguments()
    config = CONFIGS[config_name]
    keras.utils.set_random_seed(seed)
    timer = PhaseTimer()
    start = time.time()
    lm_args = argparse.Namespace(**vars(args))
    lm_args.checkpoint_dir = os.path.join(
        args.checkpoint_dir or os.path.join(output, "checkpoints"), "lm"
    )
    with timer("lm"):
        lm_preset, lm_report = lm.train_lm(
            os.path.join(output, "lm"), config["lm"], verbose=verbose, args=lm_args
        )
    trained_encoder = encoder_preset is None
    with timer("encoder"):
        if trained_encoder:
            encoder_preset, recognizer = train_encoder(output, config, verbose, args)
        else:
            recognizer = SpeechRecognizer.from_preset(encoder_preset)
    front_end = recognizer.preprocessor.audio_converter
    # The adapter reads the encoder output the CTC head reads.
    slm = SpeechLanguageModel.from_frozen_presets(
        encoder_preset,
        lm_preset,
        adapter=config["adapter"],
        audio_converter=front_end,
        use_shared_encoder=recognizer.use_shared_encoder,
        ctc_loss_weight=config["ctc_loss_weight"],
    )
    languages = config["languages"]
    with timer("ctc_evaluation"):
        test = asr.paired_dataset(
            recognizer.preprocessor.tokenizer, front_end, "test", languages=languages
        )
        ctc_results, _ = asr.evaluate(recognizer, test, languages)
    with timer("data"):
        spoken_pairs = translation_records(speech_cache, config)
        train_records = speech_records("train", languages=languages) + spoken_pairs["train"]
        test_records = speech_records("test", languages=languages)
        train_encodings = record_encodings(slm, record_features(train_records, front_end))
        test_features = record_features(test_records, front_end)
        pair_features = record_features(spoken_pairs["test"], front_end)
        examples, skipped, max_frames = training_examples(
            slm, train_records, train_encodings, config
        )
    prompt_length = max(len(slm.prompt_ids(text)) for text in instructions.INSTRUCTIONS.values())

    train = instruction_dataset(
        examples,
        train_encodings,
        slm.prompt_ids,
        slm.response_ids,
        config["batch_size"],
        max_frames,
        prompt_length,
        config["response_length"],
        seed=seed,
        speech_keys=("speech_encodings", "speech_encodings_padding_mask"),
        transcript_ids=(
            [slm.transcript_ids(record["transcript"]) for record in train_records]
            if config["ctc_loss_weight"]
            else None
        ),
    )
    slm.compile(
        optimizer=keras.optimizers.Adam(
            asr.warmup_cosine(config["adapter_steps"], config["learning_rate"]),
            **checkpointing.optimizer_arguments(args, global_clipnorm=1.0),
        )
    )
    with timer("adapter"):
        history = asr.fit_logged(
            slm,
            train.map(split_instruction_batch),
            config["adapter_steps"],
            verbose=verbose,
            checkpoint=checkpointing.checkpoint_from_args(args, output, "adapter"),
            max_consecutive_skips=args.max_consecutive_skips,
        )
    with timer("slm_evaluation"):
        families = ("transcribe", "language", *instructions.HELD_OUT)
        results, samples = evaluate(
            slm, test_records, test_features, families, config["max_new_tokens"]
        )
        st_results, st_samples = evaluate(
            slm, spoken_pairs["test"], pair_features, ("translate",), config["max_new_tokens"]
        )
    slm.save_to_preset(os.path.join(output, "slm_preset"), reference_frozen=True)
    translator_results = None
    if config["st_directions"]:
        with timer("translator"):
            translator_results = train_translator(
                encoder_preset,
                recognizer,
                speech_cache,
                config,
                verbose,
                checkpointing.checkpoint_from_args(args, output, "translator"),
            )
    adapter_parameters = slm.adapter.count_params()
    total = adapter_parameters + slm.speech_encoder.count_params()
    total += slm.language_model.count_params()
    report = {
        "config": config_name,
        "speech_encoder": (
            "tiny SpeechEncoder CTC-trained here on the paired sample"
            if trained_encoder
            else os.path.abspath(encoder_preset)
        ),
        "lm": lm_report,
        "adapter_parameters": adapter_parameters,
        "adapter_fraction": adapter_parameters / total,
        "adapter_training_examples": len(examples),
        "adapter_skipped_examples": skipped,
        "adapter_loss_first_last": [history["loss"][0], history["loss"][-1]],
        "ctc_cer": ctc_results["all"]["cer"],
        "translator": translator_results,
        "slm": {**results, **st_results},
        "examples": {**samples, **st_samples},
        "phases": timer.seconds,
        "seconds": round(time.time() - start, 1),
        "cpu_seconds": round(sum(p["cpu"] for p in timer.seconds.values()), 1),
    }
    with open(os.path.join(output, "report.json"), "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    return report


def format_report(report):
    slm = report["slm"]
    biasing = slm["contextual_biasing"]
    lines = [
        f"adapter: {report['adapter_parameters']:,} parameters "
        f"({report['adapter_fraction']:.1%} of the SLM)",
        f"ASR CER: SLM {slm['transcribe']['cer']:.1%}  vs  CTC {report['ctc_cer']:.1%} "
        "(same frozen encoder)",
        f"language ID accuracy: {slm['language']['accuracy']:.1%}",
        "held-out contextual biasing (zero-shot; the context lists the utterance's "
        f"{instructions.BIASING_WORDS} longest words): CER {biasing['cer']:.1%} vs "
        f"{biasing['transcribe_cer']:.1%} without the list, listed words recalled "
        f"{biasing['word_recall']:.1%} vs {biasing['transcribe_word_recall']:.1%}",
    ]
    if "translate" in slm:
        translator = report["translator"]
        lines.append(
            f"ST X->En: SLM BLEU {slm['translate']['bleu']:.1f}, chrF "
            f"{slm['translate']['chrf']:.1f}  vs  SpeechTranslator (same frozen encoder) BLEU "
            f"{translator['bleu']:.1f}, chrF {translator['chrf']:.1f} "
            f"({slm['translate']['items']} utterances)"
        )
    phases = ", ".join(f"{name} {p['cpu']:.0f}" for name, p in report["phases"].items())
    lines.append(f"{report['seconds']:.0f} s wall, {report['cpu_seconds']:.0f} CPU s ({phases})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/slm")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    parser.add_argument(
        "--encoder-preset",
        help="a CTC-trained SpeechRecognizer task preset (e.g. runs/main/recognizer_pretrained) "
        "whose backbone is the frozen encoder; default: train a tiny one here",
    )
    parser.add_argument(
        "--speech-cache", default=st.SPEECH_CACHE, help="spoken pairs, made on first use"
    )
    checkpointing.add_training_arguments(parser)
    distribution.add_mesh_argument(parser)
    args = parser.parse_args(argv)
    checkpointing.apply_mixed_precision(args)
    distribution.apply_mesh(args.mesh)  # data parallel in the recipe
    report = run(
        args.output,
        args.config,
        args=args,
        encoder_preset=args.encoder_preset,
        speech_cache=args.speech_cache,
    )
    print(format_report(report))
    print(f"report: {os.path.join(args.output, 'report.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
