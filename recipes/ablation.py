"""The SLAM ablation in miniature: which pre-training objectives help CTC ASR.

Every variant pre-trains the same backbone (same initial weights, seed,
optimizer, steps and data streams: `recipes.main.pretrain`) with its own
objective set, added one at a time as in SLAM's ablation (Bapna et al.
2021) and mSLAM (Bapna et al. 2022):

    w2v_bert     contrastive + diversity + w2v_mlm (speech only)
    +mlm         + text_mlm (SpanBERT on text-only data)
    +tlm         + tlm (masked speech ++ text pairs)
    +stm         + stm (speech-text matching) = SLAM
    +ctc         + ctc on the paired speech = SLAM + mSLAM's CTC term
                 (mSLAM itself has no STM)
    random_init  no pre-training: the baseline row

Each pre-trained backbone (and the random one) is then fine-tuned for CTC
ASR the same way (`recipes.main.finetune_and_evaluate`: same steps,
learning rate, seed and data) and scored by greedy CER / WER per language
on the held-out test split. One table (variant, objectives, pre-training
losses averaged over the last logging window, CER per language, mean CER
over languages), `results.json` (written after every variant, so a cut-short
run keeps its rows) and `ablation_cer.png` go to `<output>`.

    python -m recipes.ablation --config ablation_tiny --output runs/ablation
    python -m recipes.ablation --config ablation_smoke     # seconds (the tests)

Checkpoints: one folder per variant and phase (`<output>/checkpoints/
pretraining_<variant>`, `finetuning_<variant>`, "+" written "plus_"); the
same command resumes a run that was killed, and does not redo the variants
that `results.json` already holds for the same settings.
"""

import argparse
import dataclasses
import json
import os
import time

import keras
import numpy as np

from keras_slam import checkpointing, distribution
from keras_slam.models.layout_map import get_layout_map
from keras_slam.models.slam_pretrainer import SPEECH_OBJECTIVES
from recipes import asr
from recipes import main as main_recipe

# Variant name -> pre-training objectives (None: no pre-training).
VARIANTS = {
    "random_init": None,
    "w2v_bert": SPEECH_OBJECTIVES,
    "+mlm": (*SPEECH_OBJECTIVES, "text_mlm"),
    "+tlm": (*SPEECH_OBJECTIVES, "text_mlm", "tlm"),
    "+stm": (*SPEECH_OBJECTIVES, "text_mlm", "tlm", "stm"),
    "+ctc": (*SPEECH_OBJECTIVES, "text_mlm", "tlm", "stm", "ctc"),
}
LOSSES = ("contrastive", "w2v_mlm", "text_mlm", "tlm", "stm", "ctc")


@dataclasses.dataclass(frozen=True)
class Config:
    settings: main_recipe.Settings  # backbone, steps, data: the same for every variant
    variants: tuple = tuple(VARIANTS)

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"Unknown ablation variants {unknown}; choose from {list(VARIANTS)}")
        if all(VARIANTS[v] is None for v in self.variants):
            raise ValueError(
                "random_init takes its architecture from a pre-trained variant: add one"
            )


CONFIGS = {
    "ablation_tiny": Config(
        dataclasses.replace(
            main_recipe.DEFAULT,
            backbone=main_recipe.TINY_BACKBONE,
            pretrain_steps=300,
            finetune_steps=500,
        )
    ),
    "ablation_smoke": Config(
        # Compiles dominate: one pre-training (every objective), one step each.
        dataclasses.replace(main_recipe.TINY, pretrain_steps=1, finetune_steps=1),
        variants=("random_init", "+ctc"),
    ),
}


def folder_name(variant):
    """A variant's name as a folder name ("+tlm" -> "plus_tlm")."""
    return variant.replace("+", "plus_")


def objectives_label(objectives):
    """ "w2v-BERT + text_mlm + ..." for a variant's objectives ("-" for none)."""
    if objectives is None:
        return "-"
    return " + ".join(["w2v-BERT", *(o for o in objectives if o not in SPEECH_OBJECTIVES)])


def format_table(results, languages):
    """A Markdown table: one row per variant in `results`."""
    columns = ["variant", "objectives", *LOSSES, *(f"CER {lang}" for lang in languages), "mean CER"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for variant, row in results.items():
        losses = [
            f"{row['pretraining'][f'{name}_loss'][-1]:.3f}"
            if f"{name}_loss" in row["pretraining"]
            else "-"
            for name in LOSSES
        ]
        rates = [f"{row['error_rates'][lang]['cer']:.1%}" for lang in languages]
        cells = [variant, objectives_label(row["objectives"]), *losses, *rates]
        lines.append("| " + " | ".join([*cells, f"{row['mean_cer']:.1%}"]) + " |")
    return "\n".join(lines)


def plot_cer(results, languages, path):
    """Grouped bars: CER per language and the mean, one group per variant."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = [*languages, "mean"]
    width = 0.8 / len(names)
    figure, axis = pyplot.subplots(figsize=(1.6 * len(results) + 2, 4))
    positions = np.arange(len(results))
    for index, name in enumerate(names):
        values = [
            row["mean_cer"] if name == "mean" else row["error_rates"][name]["cer"]
            for row in results.values()
        ]
        axis.bar(positions + index * width, [100 * v for v in values], width, label=name)
    axis.set_xticks(positions + width * (len(names) - 1) / 2, list(results))
    axis.set_ylabel("held-out CER (%)")
    axis.set_title("CTC fine-tuning after each pre-training objective set")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def run(config, output, seed=0, args=None):
    """Pre-trains, fine-tunes and scores every variant of `config`.

    Returns: {variant: {"objectives", "pretraining": {metric: [window means]},
    "ctc_loss": [first, last], "error_rates", "mean_cer", "seconds"}}.
    """
    args = args or checkpointing.default_training_arguments()
    settings = config.settings
    tokenizer = asr.build_tokenizer(languages=settings.languages)
    front_end = asr.make_front_end()
    results_path = os.path.join(output, "results.json")
    saved = {"settings": json.loads(json.dumps(dataclasses.asdict(settings))), "variants": {}}
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as file:
            previous = json.load(file)
        if previous["settings"] == saved["settings"]:
            saved = previous  # a rerun: the variants scored there are not redone
    results = saved["variants"]
    architecture = None  # a pre-trained preset: random_init reads its config, not its weights
    # The widest comparison first, so that a run cut short keeps it: the
    # first pre-trained variant (whose preset gives random_init its
    # architecture), random_init, the last variant, then the ones between.
    pretrained = [v for v in config.variants if VARIANTS[v] is not None]
    baseline = [v for v in config.variants if VARIANTS[v] is None]
    order = [*pretrained[:1], *baseline, *pretrained[1:][-1:], *pretrained[1:-1]]
    for variant in order:
        objectives = VARIANTS[variant]
        started = time.time()
        history = {}
        name = folder_name(variant)
        preset = architecture
        if objectives is not None:
            architecture = architecture or os.path.join(output, f"pretrained_{name}")
        if variant in results:
            print(f"== {variant}: scored in {results_path}")
            continue
        if objectives is not None:
            print(f"== {variant}: pre-training {objectives} for {settings.pretrain_steps} steps")
            preset = os.path.join(output, f"pretrained_{name}")
            history = main_recipe.pretrain(
                settings,
                tokenizer,
                front_end,
                preset,
                seed,
                checkpointing.checkpoint_from_args(args, output, f"pretraining_{name}"),
                args,
                objectives=objectives,
            )
        print(f"== {variant}: CTC fine-tuning for {settings.finetune_steps} steps")
        _, losses, rates, _, _ = main_recipe.finetune_and_evaluate(
            preset,
            settings,
            tokenizer,
            front_end,
            load_weights=objectives is not None,
            seed=seed,
            checkpoint=checkpointing.checkpoint_from_args(args, output, f"finetuning_{name}"),
            args=args,
        )
        print(asr.format_error_rates(rates))
        results[variant] = {
            "objectives": objectives,
            "pretraining": history,
            "ctc_loss": [losses[0], losses[-1]],
            "error_rates": rates,
            "mean_cer": float(np.mean([rates[lang]["cer"] for lang in settings.languages])),
            "seconds": time.time() - started,
        }
        with open(results_path, "w", encoding="utf-8") as file:
            json.dump(saved, file)
    return {variant: results[variant] for variant in config.variants}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="ablation_tiny", choices=sorted(CONFIGS))
    parser.add_argument("--output", help="run directory (default runs/ablation-<timestamp>)")
    parser.add_argument("--seed", type=int, default=0)
    checkpointing.add_training_arguments(parser)
    distribution.add_mesh_argument(parser)
    args = parser.parse_args(argv)
    checkpointing.apply_mixed_precision(args)
    distribution.apply_mesh(args.mesh, get_layout_map)  # every SLAM model's
    config = CONFIGS[args.config]
    output = args.output or os.path.join("runs", time.strftime("ablation-%Y%m%d-%H%M%S"))
    os.makedirs(output, exist_ok=True)
    started = time.time()
    results = run(config, output, args.seed, args)
    settings = config.settings
    print(
        f"\n== held-out CER after {settings.pretrain_steps} pre-training and "
        f"{settings.finetune_steps} CTC fine-tuning steps (backend {keras.backend.backend()}; "
        "losses: means of the last pre-training window)"
    )
    print(format_table(results, settings.languages))
    plot = plot_cer(results, settings.languages, os.path.join(output, "ablation_cer.png"))
    print(f"plot: {plot}\nresults: {os.path.join(output, 'results.json')}")
    print(f"total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
