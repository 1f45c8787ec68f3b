import dataclasses
import json

import keras
import numpy as np
import pytest

from keras_slam.callbacks import CodebookCollapseError
from keras_slam.checkpointing import TrainingCheckpoint
from keras_slam.models.slam_backbone_presets import backbone_presets
from recipes import slam
from tests import test_case


@pytest.mark.parametrize("name", ["slam_600m", "mslam_600m", "mslam_2b"])
def test_paper_configs_take_their_model_from_the_preset_table(name):
    assert slam.CONFIGS[name]["backbone"] is backbone_presets[name].config


def test_tiny_configs_are_the_tiny_preset_without_dropout():
    preset = backbone_presets["slam_tiny"].config
    conformer = dataclasses.replace(preset["conformer"], dropout=0.0)
    for name in ("slam_tiny", "mslam_tiny", "w2v_bert_tiny", "best_rq_tiny"):
        backbone = dict(slam.CONFIGS[name]["backbone"])
        assert backbone.pop("conformer") == conformer
        assert {k: v for k, v in backbone.items() if k != "vocabulary_size"} == {
            k: v for k, v in preset.items() if k not in ("vocabulary_size", "conformer")
        }


def test_paper_optimizer_settings():
    for name in ("slam_600m", "mslam_600m"):
        assert slam.CONFIGS[name]["optimizer"] == {
            "peak_learning_rate": 6e-4,
            "warmup_steps": 40_000,
        }
    assert slam.CONFIGS["mslam_2b"]["optimizer"]["peak_learning_rate"] == 3.6e-4
    assert slam.CONFIGS["mslam_600m"]["batch"] == {"speech": 2048, "text": 8192, "paired": 256}


@pytest.mark.parametrize(
    "name, position_encoding",
    [("slam_tiny", None), ("mslam_tiny", None), ("slam_tiny", "rotary")],
)
def test_tiny_configs_build_and_give_finite_losses(name, position_encoding, seeded):
    config = slam.CONFIGS[name]
    if position_encoding:
        config = slam.with_position_encoding(config, position_encoding)
    pretrainer = slam.build_pretrainer(config, vocabulary_size=50)
    attention = [
        layer for layer in pretrainer._flatten_layers() if hasattr(layer, "position_encoding")
    ]
    expected = position_encoding or "relative_sinusoidal"
    assert attention and {layer.position_encoding for layer in attention} == {expected}
    mask = np.ones((2, 64), "float32")
    speech = {
        "speech_features": seeded.normal(size=(2, 64, 80)).astype("float32"),
        "speech_padding_mask": mask,
    }
    text = {
        "token_ids": seeded.integers(3, 50, size=(2, 30)).astype("int32"),
        "token_padding_mask": np.ones((2, 30), "float32"),
    }
    outputs = pretrainer({"speech": speech, "text": text, "paired": dict(speech, **text)})
    for objective in pretrainer.objectives:
        assert np.isfinite(test_case.to_numpy(outputs[f"{objective}_loss"])), objective


def check_every_loss_falls(history, objectives, first_epoch=0):
    """Mean of the last 3 epochs below the mean of the first 3."""
    for name in objectives:
        values = np.asarray(history[f"{name}_loss"][first_epoch:])
        assert values[-3:].mean() < values[:3].mean(), (name, values.round(3).tolist())


@pytest.mark.slow(backend="jax")
def test_mslam_tiny_pretrains_on_the_sample_corpus(tmp_path):
    history = slam.pretrain("mslam_tiny", str(tmp_path), steps=150)
    assert (tmp_path / "loss_curves.png").stat().st_size > 0
    check_every_loss_falls(history, ("contrastive", "w2v_mlm", "text_mlm", "tlm", "ctc"))


@pytest.mark.slow(backend="tensorflow")
def test_slam_tiny_pretrains_on_the_sample_corpus(tmp_path):
    history = slam.pretrain("slam_tiny", str(tmp_path), steps=150)
    assert (tmp_path / "loss_curves.png").stat().st_size > 0
    # TLM is computed (at weight 0) from the start; its speech half predicts
    # codes that the diversity loss keeps spreading (the codebook perplexity
    # rises while it is trained), so its total is checked over the whole run.
    check_every_loss_falls(history, ("contrastive", "w2v_mlm", "text_mlm", "tlm"))
    # STM joins at step 75 (epoch 8 of 15).
    check_every_loss_falls(history, ("stm",), first_epoch=8)


@pytest.mark.slow(backend="torch")
def test_w2v_bert_tiny_runs_and_reports_its_codebook(tmp_path):
    """Finite losses, consistent perplexities, the plots; the collapse
    monitor (on by default) stops the run if fewer than 10% of the codes
    are used (3 checks in 30 steps; the JAX pass's 250-step run checks the
    codebook stays in use)."""
    history = slam.pretrain("w2v_bert_tiny", str(tmp_path), steps=30)
    for name in ("loss_curves.png", "codebook_usage.png"):
        assert (tmp_path / name).stat().st_size > 0
    for name in ("contrastive_loss", "w2v_mlm_loss", "diversity_loss", "codebook_usage"):
        assert np.all(np.isfinite(history[name])), name
    perplexity, frame_perplexity = (
        np.asarray(history[k]) for k in ("codebook_perplexity", "codebook_frame_perplexity")
    )
    assert np.all(
        (frame_perplexity >= 1.0) & (frame_perplexity <= perplexity) & (perplexity <= 64.0)
    )


# On torch, which compiles no step: the JAX pass already pre-trains twice.
@pytest.mark.slow(backend="torch")
def test_recipes_stop_loudly_on_collapse(tmp_path, monkeypatch):
    """The monitor is on by default: a threshold no codebook can reach
    stops the recipe at the first check, naming metric, threshold and step."""
    monkeypatch.setattr(slam, "COLLAPSE_THRESHOLDS", {"codebook_usage": 1.01})
    with pytest.raises(
        CodebookCollapseError, match=r"codebook_usage = .* < threshold 1\.01 at step 5 "
    ):
        slam.pretrain("w2v_bert_tiny", str(tmp_path), steps=10, steps_per_epoch=5)


@pytest.mark.slow(backend="torch")
def test_st_recipe_runs_every_setting_resumes_and_saves_a_translator(tmp_path, monkeypatch):
    from keras_slam.models.speech_translator import SpeechTranslator
    from recipes import st

    table = st.run("st_smoke", str(tmp_path / "run"), cache=str(tmp_path / "speech"), verbose=0)
    config = st.CONFIGS["st_smoke"]
    names = [name for name, _, _ in st.settings(config)]
    settings = [
        "st_pretrained",
        "zero_shot_mt_pretrained",
        "st_random_init",
        "zero_shot_mt_random_init",
        "st_mt_pretrained",
        "st_mt_random_init",
    ]
    assert list(table) == settings + ["constant_best_bleu", "constant_best_chrf"]
    pairs = {f"{spoken}-{target}" for spoken, target in st.CONFIGS["st_smoke"]["directions"]}
    for name, scores in table.items():
        assert set(scores["pairs"]) == pairs, name
        assert (
            0.0 <= scores["average"]["bleu"] <= 100.0 and 0.0 <= scores["average"]["chrf"] <= 100.0
        )
        # The models' translations (the constant rows have none).
        assert (tmp_path / "run" / "eval" / name / "report.json").is_file() == (name in settings)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["scores"] == table
    assert all(np.isfinite(results[name]["loss"]).all() for name in names)
    limit = config["max_translation_length"]
    for name in names:
        # Only test pairs within the training limits are scored.
        rows = (tmp_path / "run" / "eval" / name / "translations.jsonl").read_text().splitlines()
        assert len(rows) == table[name]["average"]["sentences"] > 0, name
        assert all(len(json.loads(row)["reference"]) <= limit for row in rows), name
        reliance = table[name]["encoder_reliance"]
        assert reliance["items"] >= 2 and np.isfinite(reliance["gap"]), (name, reliance)
        assert np.isfinite(results[name]["ctc_loss"]).all() and results[name]["cpu_seconds"] > 0
        # The CTC-fine-tuned encoder it started from (`st.ctc_encoder`).
        encoder_ctc = results[name]["encoder_ctc"]
        assert np.isfinite(encoder_ctc["ctc_loss"]).all() and encoder_ctc["cer"] >= 0.0, name
        assert encoder_ctc["cpu_seconds"] > 0, name
    # One CTC phase per init, shared by its ST and joint settings.
    for init in ("pretrained", "random_init"):
        assert results[f"st_{init}"]["encoder_ctc"] == results[f"st_mt_{init}"]["encoder_ctc"]
    assert results["st_pretrained"]["encoder_ctc"] != results["st_random_init"]["encoder_ctc"]
    # The constant baselines: one training translation for every scored test row.
    read = st.read_pairs(config)
    english = {
        pair["en"] for language, _ in config["directions"] for pair in read(language, "train")
    }
    for metric in ("bleu", "chrf"):
        constant = table[f"constant_best_{metric}"]
        assert constant["sentence"] in english and constant["distinct_outputs"] == 1
        assert constant["average"]["sentences"] == table[settings[0]]["average"]["sentences"]
    assert (tmp_path / "run" / "results.png").stat().st_size > 0
    translator = SpeechTranslator.from_preset(str(tmp_path / "run" / "translator"))
    assert translator.mt_loss_weight == st.CONFIGS["st_smoke"]["mt_loss_weight"]
    assert isinstance(translator.translate_text(["Datei nicht gefunden."])[0], str)
    # Every phase checkpointed its last step; a rerun resumes from them and
    # trains nothing (before: no checkpoints, a rerun trained everything again).
    phases = {"pretraining": config["pretrain_steps"]}
    phases.update({f"finetuning_{name}": config["finetune_steps"] for name in names})
    for init in ("pretrained", "random_init"):
        phases[f"ctc_encoder_{init}"] = config["encoder_ctc_steps"]
        assert (tmp_path / "run" / f"ctc_encoder_{init}" / "model.weights.h5").is_file()
    for phase, steps in phases.items():
        saved = TrainingCheckpoint(str(tmp_path / "run" / "checkpoints" / phase)).checkpoints()
        assert saved and saved[-1][0] == steps, (phase, saved)
    trained = []
    monkeypatch.setattr(keras.Model, "fit", lambda *a, **k: trained.append(a[0]))
    rerun = st.run("st_smoke", str(tmp_path / "run"), cache=str(tmp_path / "speech"), verbose=0)
    assert trained == [] and rerun == table


def test_st_templated_speaks_each_training_pair_renditions_times_and_its_english_fits_in_pieces():
    from recipes import st

    config = st.CONFIGS["st_templated"]
    read = st.read_pairs(config)
    train, test = read("es", "train"), read("es", "test")
    assert len(train) == config["renditions"] * 83 and len(test) == 27
    assert [pair["id"] for pair in train[:5]] == [
        "es-abroad-0-1-r0",
        "es-abroad-0-1-r1",
        "es-abroad-0-1-r2",
        "es-abroad-0-1-r3",
        "es-abroad-0-2-r0",
    ]
    assert len({pair["es"] for pair in train[:4]}) == 1 and test[0]["id"] == "es-abroad-0-0"
    # One reading per pair of gettext (st_tiny: renditions 1).
    assert st.read_pairs(st.CONFIGS["st_tiny"])("de", "test")[0]["id"].count("-r") == 0
    # The English side in BPE pieces: every sentence round-trips (no unknown
    # piece in a test sentence) within the training limit.
    tokenizer = st.build_target_tokenizer(config)
    lengths = []
    for language, _ in config["directions"]:
        for pair in read(language, "train")[:: config["renditions"]] + read(language, "test"):
            ids = tokenizer(pair["en"])
            assert tokenizer.detokenize(ids) == pair["en"], pair
            lengths.append(len(ids))
    assert min(lengths) >= 5 and max(lengths) <= config["max_translation_length"]
    assert sum(lengths) / len(lengths) < 13  # characters: ~45
