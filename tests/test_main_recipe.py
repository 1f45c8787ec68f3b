"""recipes/main.py's data: the synth corpora are cached, the other-source test
sentences are in no training text, the comparison's arithmetic; fine-tuning
from a given preset with the fine-tuning levers."""

import dataclasses
import json
import os
import re

import keras
import numpy as np
import pytest

from keras_slam.data import pipeline, schema
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_recognizer import SpeechRecognizer
from recipes import asr, slam
from recipes import main as main_recipe


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return dataclasses.replace(
        main_recipe.TINY_MAIN, synth_cache=str(tmp_path_factory.mktemp("synth_cache"))
    )


def normalised(text):
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def test_synthesis_workers_grow_with_the_hours_of_speech(monkeypatch):
    """Seconds of speech (the `--tiny` job's corpora) are spoken in this
    process: a spawned worker first imports the package, most of the CPU of
    such a build. One worker per started hour, at most 4 and the CPU count.
    The bytes do not depend on the worker count (tests/data/test_synth.py)."""
    monkeypatch.setattr(main_recipe.os, "cpu_count", lambda: 8)
    tiny = main_recipe.TINY_MAIN
    assert main_recipe.synthesis_workers(tiny.unlabelled_hours, len(tiny.languages)) == 1
    assert main_recipe.synthesis_workers(tiny.labelled_minutes / 60, len(tiny.languages)) == 1
    assert main_recipe.synthesis_workers(1.0, 1) == 1
    assert main_recipe.synthesis_workers(0.5, 3) == 2
    assert main_recipe.synthesis_workers(1.0, 4) == main_recipe.synthesis_workers(9.0, 4) == 4
    monkeypatch.setattr(main_recipe.os, "cpu_count", lambda: 2)
    assert main_recipe.synthesis_workers(1.0, 4) == 2


def test_synth_corpus_is_built_once_then_reused(settings):
    corpus = main_recipe.synthesised_corpus(settings, 0.001, seed=0)
    summary = os.path.join(corpus, "summary.json")
    built = os.stat(summary).st_mtime_ns
    with open(summary) as file:
        assert json.load(file)["languages"]["en"]["hours"] >= 0.001
    assert main_recipe.synthesised_corpus(settings, 0.001, seed=0) == corpus
    assert os.stat(summary).st_mtime_ns == built
    other = main_recipe.synthesised_corpus(settings, 0.001, seed=1)
    assert other != corpus


def test_labelled_subset_is_the_sample_plus_synth_minutes(settings):
    assert main_recipe.labelled_corpora(dataclasses.replace(settings, labelled_minutes=0)) == [
        asr.SAMPLE_CORPUS
    ]
    sample, synthesised = main_recipe.labelled_corpora(settings)
    assert sample == asr.SAMPLE_CORPUS
    with open(os.path.join(synthesised, "summary.json")) as file:
        hours = json.load(file)["languages"]["en"]["hours"]
    assert settings.labelled_minutes / 60 <= hours < settings.labelled_minutes / 60 + 0.01


def test_other_source_sentences_are_in_no_training_text(settings):
    files = main_recipe.other_source_test_files(settings)
    records = pipeline.read_records(files, kind=schema.SPEECH)
    records = list(records.as_numpy_iterator())
    assert {r["language"].decode() for r in records} == {"en"}
    test = {normalised(r["transcript"].decode()) for r in records}
    assert len(test) == settings.other_source_sentences
    training = {normalised(text) for text in asr.training_transcripts(languages=("en",))}
    text_shards = pipeline.list_shards(os.path.join(asr.SAMPLE_CORPUS, "text", "train", "en"))
    for record in pipeline.read_records(text_shards, kind=schema.TEXT).as_numpy_iterator():
        training.add(normalised(record["text"].decode()))
    assert len(training) > 7000
    assert not test & training


def test_compare_cer():
    pretrained = {"en": {"cer": 0.15}, "all": {"cer": 0.3}}
    random_init = {"en": {"cer": 0.2}, "all": {"cer": 0.0}}
    comparison = main_recipe.compare_cer(pretrained, random_init)
    assert comparison["en"] == pytest.approx(
        {"pretrained": 0.15, "random_init": 0.2, "relative_gain": 0.25}
    )
    assert comparison["all"]["relative_gain"] == 0.0
    lines = main_recipe.format_comparison(comparison).splitlines()
    assert lines[1].split() == ["en", "15.0%", "20.0%", "25.0%"]


@pytest.fixture(scope="module")
def tiny_pretrained_preset(tmp_path_factory):
    """An untrained tiny backbone saved as the job's pre-trained preset."""
    tokenizer = asr.build_tokenizer(languages=main_recipe.TINY.languages)
    backbone = SLAMBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), **main_recipe.TINY_BACKBONE
    )
    preset = str(tmp_path_factory.mktemp("pretrained"))
    slam.save_pretrained_preset(backbone, preset, asr.make_front_end(), tokenizer)
    return preset


# Flag plumbing, run once: on torch (no step compile) it cost 38 CPU s, 68 on
# TensorFlow; freezing the encoder for the first steps is unit-tested on
# every backend (tests/models/test_speech_recognizer.py).
@pytest.mark.slow(backend="torch")
def test_finetuning_from_a_given_preset_with_its_levers(
    settings, tiny_pretrained_preset, tmp_path, monkeypatch
):
    def no_pretraining(*args, **kwargs):
        raise AssertionError("--pretrained must skip pre-training")

    monkeypatch.setattr(main_recipe, "pretrain", no_pretraining)
    # Error rates of an untrained model say nothing here; skip their compiles.
    monkeypatch.setattr(asr, "evaluate", lambda *args, **kwargs: ({}, []))
    output = tmp_path / "run"
    argv = ["--tiny", "--pretrained", tiny_pretrained_preset, "--output", str(output)]
    argv += ["--synth-cache", settings.synth_cache, "--finetune-steps", "2"]
    argv += ["--learning-rate", "0.01", "--freeze-encoder-steps", "3", "--no-spec-augment"]
    assert main_recipe.main(argv) == 0

    with open(output / "results.json") as file:
        results = json.load(file)
    assert "pretraining" not in results
    assert results["settings"]["learning_rate"] == 0.01
    assert results["settings"]["spec_augment"] is None
    assert results["pretrained"]["steps"] == 2
    trained = SpeechRecognizer.from_preset(str(output / "recognizer_pretrained"))
    assert trained.spec_augment is None
    # 2 steps inside the 3 frozen ones: the encoder is the preset's, the head trained.
    loaded = SLAMBackbone.from_preset(tiny_pretrained_preset)
    for weight, preset_weight in zip(trained.backbone.weights, loaded.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(weight), keras.ops.convert_to_numpy(preset_weight)
        )
    keras.utils.set_random_seed(0)
    tokenizer = asr.build_tokenizer(languages=main_recipe.TINY.languages)
    initial = asr.build_recognizer(
        tiny_pretrained_preset, tokenizer, asr.make_front_end(), spec_augment=None
    )
    head, initial_head = (keras.ops.convert_to_numpy(r.ctc_head.kernel) for r in (trained, initial))
    assert not np.allclose(head, initial_head)


def test_held_out_curve_needs_whole_logging_windows():
    with pytest.raises(ValueError, match="multiple of the logging window"):
        main_recipe.HeldOutCurve(lambda model: {}, every=50, total_steps=1200)
    curve = main_recipe.HeldOutCurve.from_history(
        {"loss": [3.0] * 4, "held_out_cer en": [0.9, 0.7]}, 300, 1200, {"en": {"cer": 0.5}}
    )
    assert curve == {"steps": [300, 600, 1200], "cer": {"en": [0.9, 0.7, 0.5]}}
