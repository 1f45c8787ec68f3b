# %% [markdown]
# # The SLAM ablation in miniature: which pre-training objectives help ASR?
#
# SLAM (Bapna et al. 2021) adds text and speech-text objectives to
# w2v-BERT's speech-only pre-training; mSLAM (Bapna et al. 2022) adds CTC on
# the paired speech. This guide pre-trains one tiny backbone five times, each
# time with one more objective, fine-tunes each for CTC ASR the same way,
# adds a randomly initialised baseline, and compares held-out CER per
# language. `recipes/ablation.py` is the same thing as one command.
#
#     python guides/06_slam_ablation.py            # the ablation_tiny config
#     python guides/06_slam_ablation.py --smoke    # seconds per step (what the tests run)
#
# Any Keras backend: `KERAS_BACKEND=jax|tensorflow|torch`.

# %%
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recipes import ablation
from recipes import main as main_recipe

SMOKE = "--smoke" in sys.argv or os.environ.get("KERAS_SLAM_GUIDE_TINY") == "1"
config = ablation.CONFIGS["ablation_smoke" if SMOKE else "ablation_tiny"]
work = tempfile.mkdtemp(prefix="keras_slam_ablation_guide_")
print("working in", work)

# %% [markdown]
# ## 1. The variants
# Each row adds one objective to the row above it. `random_init` is
# fine-tuned from random weights: the row every pre-training must beat.

# %%
for variant, objectives in ablation.VARIANTS.items():
    print(f"{variant:<12} {ablation.objectives_label(objectives)}")

# %% [markdown]
# ## 2. Only the objectives differ
# `recipes.main.build_pretrainer` is what the main job's pre-training builds;
# given the same seed, every variant starts from the same weights (backbone,
# quantizer, every head) and has the same hyper-parameters. The objective
# set decides which losses are computed, and which sub-batches of the mixed
# stream the pipeline makes (`SLAMPretrainer.sub_batches`): the w2v-BERT row
# reads speech only, "+mlm" adds text-only batches, "+tlm" paired ones. (An
# objective weight of 0 would turn a loss off but still compute it.)

# %%
settings = config.settings
for variant in ("w2v_bert", "+mlm", "+tlm"):
    pretrainer = main_recipe.build_pretrainer(
        settings, 64, seed=0, objectives=ablation.VARIANTS[variant]
    )
    print(f"{variant:<10} objectives {pretrainer.objectives}  sub-batches {pretrainer.sub_batches}")

# %% [markdown]
# ## 3. Pre-train, fine-tune and score every variant
# `ablation.run` calls `recipes.main.pretrain(..., objectives=...)` and
# `recipes.main.finetune_and_evaluate` for each variant: the same
# pre-training steps and data, the same fine-tuning steps, learning rate and
# seed, greedy decoding on the held-out test split. Each phase checkpoints
# into its own folder, so rerunning resumes.

# %%
print(
    f"{len(config.variants)} variants: {settings.pretrain_steps} pre-training steps, "
    f"{settings.finetune_steps} fine-tuning steps, languages {settings.languages}"
)
results = ablation.run(config, work)

# %% [markdown]
# ## 4. The table and the plot
# Pre-training losses are the means over the last logging window ("-": the
# variant does not train that objective); CER is per language and the mean
# over languages.

# %%
print(ablation.format_table(results, settings.languages))
plot = ablation.plot_cer(results, settings.languages, os.path.join(work, "ablation_cer.png"))
with open(os.path.join(work, "results.json"), encoding="utf-8") as file:
    print("results.json variants:", sorted(json.load(file)["variants"]))
print("plot:", plot)

# %% [markdown]
# ## 5. What the ablation_tiny run shows
# MEASURED_TABLE

# %%
print("guide finished")
