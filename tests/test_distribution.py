"""keras_slam.distribution: the recipes' `--mesh` and each host's training shards.

The unit tests run on every backend. The end-to-end check (recipes.slam on a
simulated 2x4 mesh against one device) is slow and JAX-only: the 8 devices
need XLA_FLAGS before JAX starts, so it runs the recipe in subprocesses.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_slam import distribution
from keras_slam.data import pipeline
from keras_slam.models.slam_backbone import SLAMBackbone
from recipes import asr, slam
from recipes import main as main_recipe
from tests import test_case
from tests.conftest import xla_flags_with_devices

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_mesh():
    assert distribution.parse_mesh("2x4") == (2, 4)
    assert distribution.parse_mesh("8") == (8, 1)
    for bad in ("0x4", "2x", "2x4x1", "two"):
        with pytest.raises(ValueError, match="DATA or DATAxMODEL"):
            distribution.parse_mesh(bad)


def test_no_mesh_sets_nothing():
    assert distribution.apply_mesh(None) is None
    if keras.backend.backend() == "jax":
        assert keras.distribution.distribution() is None


REFUSED = {
    "jax": {
        "64": "--mesh 64 needs 64 devices; JAX has 1 .*device_count=64",
        "1x2": "--mesh 1x2: this model has no layout map; use --mesh 1",
    },
    "tensorflow": {
        "2x4": r"--mesh 2x4: TensorFlow trains data parallel only \(MirroredStrategy\); "
        "use --mesh 8"
    },
    "torch": {"2": "--mesh 2: the torch backend has no multi-device training"},
}


def test_a_mesh_that_cannot_run_is_refused_by_name():
    for mesh, message in REFUSED[keras.backend.backend()].items():
        with pytest.raises(ValueError, match=message):
            distribution.apply_mesh(mesh)
    if keras.backend.backend() == "jax":
        assert keras.distribution.distribution() is None


def reader_calls(monkeypatch, build, host):
    """The shard lists `build()` hands to the pipeline's readers on `host` of 2."""
    monkeypatch.setattr(distribution, "processes", lambda: host)
    calls = []
    for reader in ("speech_dataset", "text_dataset"):
        monkeypatch.setattr(pipeline, reader, lambda files, *a, **k: calls.append(files))
    monkeypatch.setattr(pipeline, "mix_streams", lambda streams: streams)
    build()
    return calls


TRAINING_DATASETS = {
    "slam": lambda: slam.make_dataset(
        slam.CONFIGS["slam_tiny"], slam.SAMPLE_CORPUS, tokenizer=None, frontend="front end"
    ),
    "asr": lambda: asr.paired_dataset(None, None, "train", training=True),
    "main": lambda: main_recipe.pretraining_dataset(main_recipe.DEFAULT, None, None),
}


def listed_synth_corpus(root):
    """`main_recipe.synthesised_corpus` that synthesises nothing: a corpus
    folder of 3 empty paired training shards per language (what the shard
    lists read)."""

    def synthesised_corpus(settings, hours, seed):
        corpus = os.path.join(root, f"{hours:g}h_seed{seed}")
        for language in settings.languages:
            folder = os.path.join(corpus, "paired", "train", language)
            os.makedirs(folder, exist_ok=True)
            for index in range(3):
                open(os.path.join(folder, f"{index:05d}.tfrecord.gz"), "w").close()
        return corpus

    return synthesised_corpus


@pytest.mark.parametrize("recipe", sorted(TRAINING_DATASETS))
def test_two_hosts_read_disjoint_shards_that_cover_all(monkeypatch, tmp_path, recipe):
    monkeypatch.setattr(main_recipe, "synthesised_corpus", listed_synth_corpus(tmp_path))
    build = TRAINING_DATASETS[recipe]
    everything = reader_calls(monkeypatch, build, (1, 0))
    hosts = [reader_calls(monkeypatch, build, (2, index)) for index in (0, 1)]
    assert len(everything) == len(hosts[0]) == len(hosts[1]) >= 1
    for all_files, first, second in zip(everything, *hosts):
        assert first and second and not set(first) & set(second), (first, second)
        assert sorted(first + second) == sorted(all_files)


def real_rows(dataset):
    """[(rows, rows with a real frame)] of each batch of a speech dataset."""
    return [
        (len(mask), int((mask.max(axis=1) > 0).sum()))
        for mask in (batch["speech_padding_mask"] for batch in dataset.as_numpy_iterator())
    ]


def test_budget_sized_batches_divide_by_the_data_parallel_devices(monkeypatch):
    tokenizer, front_end = asr.build_tokenizer(), asr.make_front_end()
    batches = lambda: real_rows(asr.paired_dataset(tokenizer, front_end, "test"))  # noqa: E731
    alone = batches()
    assert any(rows % 2 for rows, _ in alone), alone  # the budget alone gives odd sizes
    monkeypatch.setattr(distribution, "batch_multiple", lambda: 2)
    split = batches()
    assert all(rows % 2 == 0 for rows, _ in split), split
    assert sum(real for _, real in split) == sum(real for _, real in alone)


def test_no_mesh_needs_no_multiple_and_a_data_axis_must_split_over_the_hosts(monkeypatch):
    assert distribution.batch_multiple() == 1
    if keras.backend.backend() == "jax":
        import jax

        monkeypatch.setattr(jax, "process_count", lambda: 2)
        with pytest.raises(ValueError, match=r"data axis \(1\) does not split evenly over 2 hosts"):
            distribution.apply_mesh("1")
        assert keras.distribution.distribution() is None


def test_evaluation_reads_every_shard_on_every_host(monkeypatch):
    build = lambda: asr.paired_dataset(None, None, "test")  # noqa: E731
    assert reader_calls(monkeypatch, build, (2, 1)) == reader_calls(monkeypatch, build, (1, 0))


def run_on_simulated_devices(arguments):
    """stdout of `python *arguments` on JAX with 8 simulated CPU devices; it must succeed."""
    result = subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO_ROOT,
        env=dict(
            os.environ,
            KERAS_BACKEND="jax",
            PYTHONPATH=REPO_ROOT,
            XLA_FLAGS=xla_flags_with_devices(),
        ),
        capture_output=True,
        text=True,
        timeout=test_case.SUBPROCESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow(backend="jax")
def test_asr_recipe_with_budget_sized_batches_trains_on_a_2_device_mesh(tmp_path):
    tokenizer = asr.build_tokenizer()
    backbone = SLAMBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), **main_recipe.TINY_BACKBONE
    )
    preset = str(tmp_path / "preset")
    backbone.save_to_preset(preset)
    tokenizer.save_to_preset(preset)
    stdout = run_on_simulated_devices(
        ["-m", "recipes.asr", "--preset", preset, "--steps", "2", "--mesh", "2"]
        + ["--output", str(tmp_path / "recognizer")]
    )
    assert "--mesh 2: DataParallel over 2 devices" in stdout
    assert "held-out test error rates" in stdout


def run_slam_recipe_on_one_device_then_a_2x4_mesh(output):
    """(stdout, one-device history, mesh history) of 2 steps of recipes.slam
    slam_tiny each, one process with 8 simulated JAX devices (one start and
    import instead of two; `pretrain` reseeds, so the runs start alike)."""
    argv = ["--config", "slam_tiny", "--steps", "2", "--steps-per-epoch", "1", "--output"]
    runs = {"one_device": [], "mesh": ["--mesh", "2x4"]}
    code = "from recipes import slam\n" + "".join(
        f"slam.main({[*argv, os.path.join(output, name), *flags]!r})\n"
        for name, flags in runs.items()
    )
    stdout = run_on_simulated_devices(["-c", code])
    histories = []
    for name in runs:
        with open(os.path.join(output, name, "history.json"), encoding="utf-8") as file:
            histories.append(json.load(file))
    return (stdout, *histories)


@pytest.mark.slow(backend="jax")
def test_slam_recipe_on_a_2x4_mesh_equals_one_device(tmp_path):
    stdout, one_device, mesh = run_slam_recipe_on_one_device_then_a_2x4_mesh(str(tmp_path))
    assert stdout.count("--mesh 2x4: ModelParallel over 8 devices") == 1
    losses = sorted(name for name in one_device if name.endswith("loss"))
    assert "loss" in losses and len(losses) > 4, losses
    for name in losses:  # after step 1, and after step 2 (the update)
        np.testing.assert_allclose(mesh[name], one_device[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_keras_multi_host_variables_initialize_jax_first(monkeypatch):
    calls = []
    monkeypatch.setattr(keras.distribution, "initialize", lambda: calls.append("initialize"))
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "4")
    with pytest.raises(ValueError):
        distribution.apply_mesh("64x2")  # refused on every backend, after initialize on JAX
    assert calls == (["initialize"] if keras.backend.backend() == "jax" else [])
