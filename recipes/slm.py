"""SLM recipe: a frozen CTC-trained speech encoder + the frozen tiny LM of
`recipes/lm.py`, joined by a trained `SpeechAdapter`.

    python -m recipes.slm --output runs/slm            # tiny config
    python -m recipes.slm --output runs/slm --config smoke

Steps: (1) the LM preset (`recipes.lm.train_lm`, reused when it exists); (2) a tiny `SpeechEncoder` CTC-trained on the
paired sample (`recipes.asr`), saved as a backbone preset: the speech
encoder here is this quick tiny one, not the main job's; (3) the adapter,
trained on the TRAINED instruction families of the paired sample's training
records; (4) on the test records: CER of "Transcribe the audio." through the
SLM vs the CTC recognizer of the same encoder, language-ID accuracy, and the
held-out "count_words" instruction (zero-shot): how often the response ends
in "(N words)" and how often N is right. Results go to `report.json`; the
task preset (referencing the two frozen presets) to `output/slm_preset`.

Every training phase checkpoints under `<output>/checkpoints/<phase>/`
(`lm`, `encoder`, `adapter`; `keras_slam.checkpointing` flags): rerun the
same command after a kill and it resumes where it stopped; a finished phase
is restored, not retrained.

Not here yet: speech translation (the instruction family exists in
`keras_slam.data.instructions`; the spoken translation corpus of
`keras_slam.data.parallel_speech` takes long to synthesise on 2 cores).
"""

import argparse
import json
import os
import re
import time

import keras
import numpy as np
import tensorflow as tf

from keras_slam import checkpointing, distribution
from keras_slam.data import instructions, pipeline, schema
from keras_slam.layers.conformer import ConformerConfig
from keras_slam.metrics.error_rates import ErrorRateAccumulator
from keras_slam.models.speech_encoder import SpeechEncoder
from keras_slam.models.speech_language_model import SpeechLanguageModel, split_instruction_batch
from keras_slam.models.speech_recognizer import SpeechRecognizer
from recipes import asr, lm

TINY = dict(
    lm=lm.TINY,
    encoder=dict(hidden_dim=96, num_layers=3, subsampling_filters=32),
    asr_steps=600,
    adapter=dict(hidden_dim=128, stack_frames=4, num_layers=1, num_heads=4),
    adapter_steps=600,
    batch_size=8,
    learning_rate=1e-3,
    max_frames=1024,
    prompt_length=24,
    response_length=64,
    max_new_tokens=48,
)
SMOKE = dict(
    TINY,
    lm=lm.SMOKE,
    encoder=dict(hidden_dim=16, num_layers=1, subsampling_filters=4),
    asr_steps=4,
    adapter=dict(hidden_dim=16, stack_frames=4, num_layers=1, num_heads=2),
    adapter_steps=4,
    max_new_tokens=4,
)
CONFIGS = {"tiny": TINY, "smoke": SMOKE}


def speech_records(split, corpus=asr.SAMPLE_CORPUS, languages=asr.LANGUAGES):
    """The paired records of a split as dicts of Python values, PCM as float."""
    files = pipeline.list_shards(
        [os.path.join(corpus, "paired", split, language) for language in languages]
    )
    records = []
    for record in pipeline.read_records(files, kind=schema.SPEECH).as_numpy_iterator():
        item = {k: v.decode("utf-8") for k, v in record.items() if isinstance(v, bytes)}
        item["waveform"] = record["pcm"].astype("float32") / 32768.0
        records.append(item)
    return records


def record_features(records, front_end, batch_size=16):
    """(T, F) log-mel features of each record (the recipe's front end)."""
    preprocessor = asr.SpeechRecognizerPreprocessor(audio_converter=front_end)
    features = []
    for start in range(0, len(records), batch_size):
        batch = preprocessor([r["waveform"] for r in records[start : start + batch_size]])
        values = keras.ops.convert_to_numpy(batch["speech_features"])
        lengths = keras.ops.convert_to_numpy(batch["speech_padding_mask"]).sum(axis=1)
        features += [v[: int(n)] for v, n in zip(values, lengths)]
    return features


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
    train = asr.paired_dataset(tokenizer, front_end, "train", training=True)
    args = args or checkpointing.default_training_arguments()
    asr.finetune(
        recognizer,
        train,
        config["asr_steps"],
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


def evaluate(slm, records, features, max_new_tokens, batch_size=8):
    """Greedy responses for every family on the test records -> metrics, examples."""
    results, examples = {}, {}
    for family in (*instructions.TRAINED, *instructions.HELD_OUT):
        chosen = instructions.instruction_examples(records, (family,))
        if not chosen:
            continue
        hypotheses = []
        for start in range(0, len(chosen), batch_size):
            rows = chosen[start : start + batch_size]
            speech = instructions.pad_rows([features[i] for i, *_ in rows], None, 0.0)
            speech = {"speech_features": speech[0], "speech_padding_mask": speech[1]}
            hypotheses += slm.generate(speech, [r[2] for r in rows], max_new_tokens)
        references = [answer for *_, answer in chosen]
        examples[family] = list(zip(references, hypotheses))[:5]
        if family == "transcribe":
            results[family] = {"cer": character_error_rate(references, hypotheses)}
        elif family == "language":
            hits = [h.strip() == r for r, h in zip(references, hypotheses)]
            results[family] = {"accuracy": float(np.mean(hits))}
        elif family == "count_words":
            counts = [re.search(r"\((\d+) words?\)\s*$", h) for h in hypotheses]
            expected = [len(records[i]["transcript"].split()) for i, *_ in chosen]
            results[family] = {
                "follows_format": float(np.mean([c is not None for c in counts])),
                "count_correct": float(
                    np.mean(
                        [c is not None and int(c.group(1)) == n for c, n in zip(counts, expected)]
                    )
                ),
            }
        results[family]["items"] = len(chosen)
    return results, examples


def run(output, config_name="tiny", seed=0, verbose=2, args=None):
    """The whole recipe (module docstring); returns the report dict.

    `args`: the `checkpointing` flags (default: their defaults).
    """
    args = args or checkpointing.default_training_arguments()
    config = CONFIGS[config_name]
    keras.utils.set_random_seed(seed)
    start = time.time()
    lm_args = argparse.Namespace(**vars(args))
    lm_args.checkpoint_dir = os.path.join(
        args.checkpoint_dir or os.path.join(output, "checkpoints"), "lm"
    )
    lm_preset, lm_report = lm.train_lm(
        os.path.join(output, "lm"), config["lm"], verbose=verbose, args=lm_args
    )
    encoder_preset, recognizer = train_encoder(output, config, verbose, args)
    front_end = recognizer.preprocessor.audio_converter
    slm = SpeechLanguageModel.from_frozen_presets(
        encoder_preset, lm_preset, adapter=config["adapter"], audio_converter=front_end
    )
    ctc_results, _ = asr.evaluate(
        recognizer, asr.paired_dataset(recognizer.preprocessor.tokenizer, front_end, "test")
    )
    train_records, test_records = speech_records("train"), speech_records("test")
    train_features = record_features(train_records, front_end)
    test_features = record_features(test_records, front_end)
    examples = instructions.instruction_examples(train_records)

    def batches():
        epoch = 0
        while True:
            yield from instructions.instruction_batches(
                examples,
                train_features,
                slm.prompt_ids,
                slm.response_ids,
                config["batch_size"],
                config["max_frames"],
                config["prompt_length"],
                config["response_length"],
                shuffle_seed=seed + epoch,
            )
            epoch += 1

    def fit_batches():
        for batch in batches():
            batch.pop("family")
            yield batch

    first = next(fit_batches())
    signature = {k: tf.TensorSpec(v.shape, v.dtype) for k, v in first.items()}
    train = tf.data.Dataset.from_generator(fit_batches, output_signature=signature)

    slm.compile(
        optimizer=keras.optimizers.Adam(
            config["learning_rate"],
            **checkpointing.optimizer_arguments(args, global_clipnorm=1.0),
        )
    )
    history = asr.fit_logged(
        slm,
        train.map(split_instruction_batch),
        config["adapter_steps"],
        verbose=verbose,
        checkpoint=checkpointing.checkpoint_from_args(args, output, "adapter"),
        max_consecutive_skips=args.max_consecutive_skips,
    )
    results, samples = evaluate(slm, test_records, test_features, config["max_new_tokens"])
    slm.save_to_preset(os.path.join(output, "slm_preset"), reference_frozen=True)
    adapter_parameters = slm.adapter.count_params()
    total = adapter_parameters + slm.speech_encoder.count_params()
    total += slm.language_model.count_params()
    report = {
        "config": config_name,
        "speech_encoder": "tiny SpeechEncoder CTC-trained here on the paired sample",
        "lm": lm_report,
        "adapter_parameters": adapter_parameters,
        "adapter_fraction": adapter_parameters / total,
        "adapter_loss_first_last": [history["loss"][0], history["loss"][-1]],
        "ctc_cer": ctc_results["all"]["cer"],
        "slm": results,
        "examples": samples,
        "seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(output, "report.json"), "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    return report


def format_report(report):
    slm = report["slm"]
    lines = [
        f"adapter: {report['adapter_parameters']:,} parameters "
        f"({report['adapter_fraction']:.1%} of the SLM)",
        f"ASR CER: SLM {slm['transcribe']['cer']:.1%}  vs  CTC {report['ctc_cer']:.1%} "
        "(same frozen encoder)",
        f"language ID accuracy: {slm['language']['accuracy']:.1%}",
        f"held-out 'count_words': format followed {slm['count_words']['follows_format']:.1%}, "
        f"count right {slm['count_words']['count_correct']:.1%}",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/slm")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    checkpointing.add_training_arguments(parser)
    distribution.add_mesh_argument(parser)
    args = parser.parse_args(argv)
    checkpointing.apply_mixed_precision(args)
    distribution.apply_mesh(args.mesh)  # data parallel in the recipe
    report = run(args.output, args.config, args=args)
    print(format_report(report))
    print(f"report: {os.path.join(args.output, 'report.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
