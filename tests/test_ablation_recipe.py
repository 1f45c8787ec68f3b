"""recipes/ablation.py: the variants differ in their pre-training objectives only."""

import numpy as np
import pytest
from keras import ops

from keras_slam.models.slam_pretrainer import DEFAULT_WEIGHTS
from recipes import ablation
from recipes import main as main_recipe

SETTINGS = ablation.CONFIGS["ablation_smoke"].settings


def pretrainers():
    """{variant: the pre-trainer `recipes.main.pretrain` builds for it}."""
    return {
        variant: main_recipe.build_pretrainer(SETTINGS, 20, seed=0, objectives=objectives)
        for variant, objectives in ablation.VARIANTS.items()
        if objectives is not None
    }


def test_variants_differ_only_in_objectives_and_their_weights():
    built = pretrainers()
    variants = list(built)
    # Each variant adds one objective to the one before it.
    for previous, variant in zip(variants, variants[1:]):
        added = set(built[variant].objectives) - set(built[previous].objectives)
        assert set(built[previous].objectives) < set(built[variant].objectives), variant
        assert len(added) == 1, (variant, added)
    assert built["w2v_bert"].sub_batches == ("speech",)
    assert built["+mlm"].sub_batches == ("speech", "text")
    assert built["+ctc"].sub_batches == ("speech", "text", "paired")

    def config(pretrainer):
        # Everything but the objectives and the (auto-numbered) layer names.
        config = dict(pretrainer.get_config())
        del config["objectives"], config["objective_weights"], config["name"]
        config["backbone"] = dict(config["backbone"], config=dict(config["backbone"]["config"]))
        del config["backbone"]["config"]["name"]
        return config

    def weights(pretrainer):
        objective_weights = {id(v) for v in pretrainer.objective_weights.values()}
        return [
            ops.convert_to_numpy(v) for v in pretrainer.weights if id(v) not in objective_weights
        ]

    reference = built["w2v_bert"]
    for variant, pretrainer in built.items():
        assert config(pretrainer) == config(reference), variant
        # Same initial weights: backbone, quantizer, every head.
        for index, (value, expected) in enumerate(zip(weights(pretrainer), weights(reference))):
            np.testing.assert_array_equal(value, expected, err_msg=f"{variant} weight {index}")
        assert len(weights(pretrainer)) == len(weights(reference)), variant
        # An objective has the same weight in every variant that trains it.
        assert pretrainer.get_objective_weights() == pytest.approx(
            {name: DEFAULT_WEIGHTS[name] for name in pretrainer.objectives}
        ), variant


def test_configs_reject_unknown_or_baseline_only_variants():
    with pytest.raises(ValueError, match="Unknown ablation variants"):
        ablation.Config(SETTINGS, variants=("random_init", "+xyz"))
    with pytest.raises(ValueError, match="architecture from a pre-trained variant"):
        ablation.Config(SETTINGS, variants=("random_init",))


def test_table_marks_objectives_a_variant_did_not_train():
    rates = {"en": {"cer": 0.25, "wer": 0.5, "utterances": 20}}
    results = {
        "w2v_bert": {
            "objectives": ablation.VARIANTS["w2v_bert"],
            "pretraining": {"contrastive_loss": [3.0, 2.5], "w2v_mlm_loss": [4.0, 3.25]},
            "error_rates": rates,
            "mean_cer": 0.25,
        },
        "random_init": {
            "objectives": None,
            "pretraining": {},
            "error_rates": rates,
            "mean_cer": 0.25,
        },
    }
    lines = ablation.format_table(results, ("en",)).splitlines()
    assert lines[0].split("|")[1:-1] == [
        f" {c} " for c in ("variant", "objectives", *ablation.LOSSES, "CER en", "mean CER")
    ]
    assert lines[2] == "| w2v_bert | w2v-BERT | 2.500 | 3.250 | - | - | - | - | 25.0% | 25.0% |"
    assert lines[3] == "| random_init | - | - | - | - | - | - | - | 25.0% | 25.0% |"
