"""recipes/main.py's data: the synth corpora are cached, the other-source test
sentences are in no training text, the comparison's arithmetic."""

import dataclasses
import json
import os
import re

import pytest

from keras_slam.data import pipeline, schema
from recipes import asr
from recipes import main as main_recipe


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return dataclasses.replace(
        main_recipe.TINY_MAIN, synth_cache=str(tmp_path_factory.mktemp("synth_cache"))
    )


def normalised(text):
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


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
