"""`evaluate_translation` and `keras-slam evaluate-st` on shards with translations."""

import json

import numpy as np
import pytest

from keras_slam import cli
from keras_slam.data import pipeline
from keras_slam.data.tokenizers import CharacterTokenizer, build_character_vocabulary
from keras_slam.layers.conformer import ConformerConfig
from keras_slam.metrics import translation_evaluation
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_translator import SpeechTranslator, label_smoothed_cross_entropy
from keras_slam.models.speech_translator_preprocessor import SpeechTranslatorPreprocessor
from tests.conftest import reset_seeds_and_policy
from tests.data.test_translation_pipeline import RECORDS, write_records
from tests.metrics.test_bleu import sacrebleu_cli
from tests.models.test_speech_translator import TARGETS, make_translator, speech, teacher_forced

TRANSLATED = [record for record in RECORDS if record[3]]


def tokenizer(texts):
    return CharacterTokenizer(build_character_vocabulary(texts), sequence_length=None)


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A tiny random SpeechTranslator saved as a task preset."""
    reset_seeds_and_policy()
    preprocessor = SpeechTranslatorPreprocessor(
        tokenizer=tokenizer([r[2] for r in TRANSLATED]),
        target_tokenizer=tokenizer([r[3] for r in TRANSLATED]),
    )
    backbone = SLAMBackbone(
        vocabulary_size=preprocessor.tokenizer.vocabulary_size(),
        hidden_dim=16,
        num_speech_layers=1,
        num_shared_layers=1,
        conformer=ConformerConfig(num_heads=2, ffn_dim=16, kernel_size=3, conv_norm_groups=4),
        subsampling_filters=4,
    )
    translator = SpeechTranslator(
        backbone,
        preprocessor,
        decoder_num_layers=1,
        decoder_hidden_dim=16,
        decoder_intermediate_dim=16,
        decoder_num_heads=2,
        dropout=0.0,
        max_target_length=12,
    )
    path = tmp_path_factory.mktemp("translator")
    translator.save_to_preset(str(path))
    return str(path)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_records(tmp_path_factory.mktemp("shards"), np.random.default_rng(0), TRANSLATED)


@pytest.mark.parametrize("text", [False, True])
def test_evaluate_st_scores_what_it_writes(preset, shards, tmp_path, text):
    output = tmp_path / "eval"
    argv = ["evaluate-st", "--preset", preset, "--shards", *shards, "--output", str(output)]
    assert cli.main(argv + (["--text"] if text else [])) == 0
    report = json.loads((output / "report.json").read_text())
    rows = [json.loads(line) for line in (output / "translations.jsonl").read_text().splitlines()]
    # Every translated record once, with its own reference and source.
    assert sorted((r["id"], r["source"], r["reference"]) for r in rows) == sorted(
        (id, transcript, translation) for id, _, transcript, translation, _ in TRANSLATED
    )
    # The hypotheses are the translator's for each record's audio (or text).
    translator = SpeechTranslator.from_preset(preset)
    by_id = {record["id"]: record for record in translation_evaluation.translation_records(shards)}
    if text:
        expected = translator.translate_text([by_id[r["id"]]["transcript"] for r in rows])
    else:
        waveforms = [by_id[r["id"]]["pcm"] / pipeline.PCM_SCALE for r in rows]
        expected = translator.translate(waveforms)
    assert [r["hypothesis"] for r in rows] == expected
    # The report's scores are sacrebleu's command line on the per-pair files.
    pairs = report["scores"]["pairs"]
    assert sorted(pairs) == ["de-en", "en-de", "es-en", "fr-en"]
    for pair, scores in pairs.items():
        references = (output / f"{pair}.ref.txt").read_text().splitlines()
        hypotheses = (output / f"{pair}.hyp.txt").read_text().splitlines()
        bleu, chrf = sacrebleu_cli(tmp_path, references, hypotheses)
        assert scores["bleu"] == pytest.approx(bleu, abs=1e-8), pair
        assert scores["chrf"] == pytest.approx(chrf, abs=1e-8), pair
    assert report["source"] == ("text" if text else "speech")


def test_evaluate_st_names_a_record_without_translation(preset, tmp_path, capsys):
    files = write_records(tmp_path / "asr", np.random.default_rng(1), RECORDS)
    argv = ["evaluate-st", "--preset", preset, "--shards", *files, "--output", str(tmp_path)]
    assert cli.main(argv) == 1
    assert "record 'd' has no 'translation'" in capsys.readouterr().err
    missing = str(tmp_path / "missing.tfrecord")
    assert cli.main(argv[:4] + [missing]) == 1
    assert f"error: {missing}" in capsys.readouterr().err


def test_encoder_reliance_is_the_cross_entropy_gap_of_rotated_inputs(seeded):
    """own / other = the model's mean cross-entropy with the real rows' speech
    as given / rotated by one row (the padding row stays out); a decoder that
    cannot see the encoder (zero projection) has gap 0."""
    translator = make_translator()
    x, y = teacher_forced(translator, speech(seeded, batch_size=4), TARGETS + [""])
    rotated = dict(x)
    for key in ("speech_features", "speech_padding_mask"):
        rotated[key] = x[key][[1, 2, 0, 3]]

    def cross_entropy(inputs):
        logits = translator(inputs, training=False)
        return float(
            label_smoothed_cross_entropy(y["target_ids"], y["target_padding_mask"], logits, 0.0)
        )

    reliance = translation_evaluation.encoder_reliance(translator, [(x, y)])
    assert reliance["items"] == 3
    assert reliance["target_tokens"] == int(y["target_padding_mask"].sum())
    np.testing.assert_allclose(reliance["own"], cross_entropy(x), rtol=1e-5)
    np.testing.assert_allclose(reliance["other"], cross_entropy(rotated), rtol=1e-5)
    np.testing.assert_allclose(reliance["gap"], reliance["other"] - reliance["own"], rtol=1e-9)
    assert abs(reliance["gap"]) > 1e-4  # a random encoder changes the logits

    projection = translator.encoder_projection
    projection.set_weights([np.zeros_like(w) for w in projection.get_weights()])
    blind = translation_evaluation.encoder_reliance(translator, [(x, y)])
    assert abs(blind["gap"]) < 1e-6, blind
    with pytest.raises(ValueError, match="2 real rows"):
        first = [{key: value[:1] for key, value in part.items()} for part in (x, y)]
        translation_evaluation.encoder_reliance(translator, [first])


def test_constant_baseline_picks_the_best_single_sentence_per_metric_in_one_sweep(monkeypatch):
    """Known answer: "the cat sat on the mat today" as both hypotheses of a
    pair matches 13/14 unigrams, 11/12 bigrams, 9/10 trigrams and 7/8
    4-grams (BP 1): the best BLEU. Adding "yesterday" costs BLEU (77.5)
    but recalls the second reference's characters: the best chrF (88.1 vs
    83.0). The other candidates share no word with the references."""
    rows = [
        {"reference": reference, "language": "de", "target_language": "en"}
        for reference in ("the cat sat on the mat today", "the cat sat on the mat yesterday")
    ]
    longer = "the cat sat on the mat today yesterday"
    candidates = ["no word shared", "the cat sat on the mat today", longer, "no word shared"]
    scored = []
    original = translation_evaluation.translation_scores

    def counting(references, hypotheses, *args, **kwargs):
        scored.append(hypotheses[0])
        return original(references, hypotheses, *args, **kwargs)

    monkeypatch.setattr(translation_evaluation, "translation_scores", counting)
    best = translation_evaluation.constant_baseline(candidates, rows)
    # One scoring per distinct candidate gives both metrics' best.
    assert scored == candidates[:3]
    assert set(best) == {"bleu", "chrf"}
    sentence, scores = best["bleu"]
    assert sentence == "the cat sat on the mat today"
    expected = 100 * (13 / 14 * 11 / 12 * 9 / 10 * 7 / 8) ** 0.25
    np.testing.assert_allclose(scores.bleu, expected, rtol=1e-6)
    assert scores.pairs["de-en"].sentences == 2
    by_chrf, chrf_scores = best["chrf"]
    assert by_chrf == longer and chrf_scores.chrf > scores.chrf and chrf_scores.bleu < scores.bleu
    zero = translation_evaluation.constant_baseline(["no word shared"], rows, metrics=("bleu",))
    assert list(zero) == ["bleu"]
    assert zero["bleu"][0] == "no word shared" and zero["bleu"][1].bleu == 0.0
    with pytest.raises(ValueError, match="metrics"):
        translation_evaluation.constant_baseline(candidates, rows, metrics=("ter",))
