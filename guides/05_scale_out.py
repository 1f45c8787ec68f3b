# %% [markdown]
# # Scale out: one training script on 1 device, a data-parallel mesh and a 2x4 model-parallel mesh
#
# The same few CTC training steps of a tiny SLAM `SpeechRecognizer` on the
# bundled sample shards run three times: on one device, data-parallel over
# 8 devices (`keras.distribution.DataParallel`) and on a 2 (batch) x 4
# (model) mesh whose weights are sharded by the layout map
# (`SpeechRecognizer.get_layout_map`). The losses agree. Then: the same
# through the recipes' `--mesh` flag, the commands for a TPU slice and a
# multi-GPU host, and `keras-slam plan` for the paper's 2B model.
#
# On a CPU, JAX simulates the 8 devices (what the tests run, ~1 minute):
#
#     XLA_FLAGS=--xla_force_host_platform_device_count=8 KERAS_BACKEND=jax \
#         python guides/05_scale_out.py

# %%
import os
import sys

# Before JAX starts: 8 simulated CPU devices unless the caller set flags.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import numpy as np

from keras_slam import cli
from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_recognizer import SpeechRecognizer, split_asr_batch
from recipes import asr

BATCH, STEPS = 8, 2
devices = keras.distribution.list_devices()
print(f"backend {keras.backend.backend()}, {len(devices)} devices: {devices[:2]} ...")
if keras.backend.backend() != "jax" or len(devices) < 8:
    sys.exit("run with KERAS_BACKEND=jax and XLA_FLAGS=--xla_force_host_platform_device_count=8")

# %% [markdown]
# ## 1. The training script
# Fixed batches of 8 utterances of one length bucket from the sample corpus
# (the batch is split over the data axis, so it must divide by it; one
# shape compiles once), a dropout-free tiny model, and a function that
# trains it for a few steps from given weights.

# %%
tokenizer = asr.build_tokenizer()
front_end = asr.make_front_end()
batches = []
dataset = asr.paired_dataset(tokenizer, front_end, "train", batch_seconds=64.0)
for batch in dataset.as_numpy_iterator():
    x, y = split_asr_batch({key: value[:BATCH] for key, value in batch.items()})
    shape = x["speech_features"].shape
    if shape[0] == BATCH and (not batches or shape == batches[0][0]["speech_features"].shape):
        batches.append((x, y))
    if len(batches) == STEPS:
        break
print("batches:", [x["speech_features"].shape for x, _ in batches])

# Widths divisible by the 4-device model axis.
BACKBONE = dict(
    vocabulary_size=tokenizer.vocabulary_size(),
    hidden_dim=32,
    num_speech_layers=1,
    num_shared_layers=1,
    subsampling_filters=8,
    conformer=ConformerConfig(num_heads=4, ffn_dim=64, conv_norm_groups=4, dropout=0.0),
)


def make_recognizer():
    return SpeechRecognizer(
        SLAMBackbone(**BACKBONE),
        vocabulary_size=tokenizer.vocabulary_size(),
        spec_augment=None,
        head_dropout=0.0,
    )


def train(initial_weights):
    """Losses of STEPS training steps from `initial_weights`."""
    model = make_recognizer()
    model.set_weights(initial_weights)
    model.compile(learning_rate=1e-3)
    return [
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history["loss"][0]
        for x, y in batches
    ]


keras.utils.set_random_seed(0)
initial = make_recognizer().get_weights()

# %% [markdown]
# ## 2. One device, data parallel, model parallel
# A distribution's `scope()` places every variable created inside it (and
# splits each input batch over the "batch" axis): nothing else in the
# script changes.

# %%
mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices[:8])
distributions = {
    "1 device": None,
    "data parallel x8": keras.distribution.DataParallel(devices=devices[:8]),
    "model parallel 2x4": keras.distribution.ModelParallel(
        layout_map=SpeechRecognizer.get_layout_map(mesh), batch_dim_name="batch"
    ),
}
losses = {}
for name, distribution in distributions.items():
    if distribution is None:
        losses[name] = train(initial)
    else:
        with distribution.scope():
            losses[name] = train(initial)
    print(f"{name:<20} losses " + " ".join(f"{loss:.6f}" for loss in losses[name]))
reference = np.array(losses["1 device"])
for name, values in losses.items():
    difference = np.abs(np.array(values) - reference).max() / np.abs(reference).max()
    print(f"{name:<20} max |loss - 1 device| / loss = {difference:.1e}")
    assert difference < 1e-5, (name, difference)

# %% [markdown]
# ## 3. The recipes: `--mesh`
# Every recipe (`recipes.slam`, `asr`, `main`, `ablation`, `st`,
# `classify`, `lm`, `slm`) takes `--mesh DATA[xMODEL]`
# (`keras_slam.distribution`): `--mesh 8` trains data parallel on 8
# devices, `--mesh 2x4` on this guide's 2 (batch) x 4 (model) mesh with
# the task's layout map, set before the model is built. Batches are global
# and split over the data axis, so the data pipeline rounds every bucket's
# batch size up to a multiple of the data-parallel devices (the pre-training
# configs' 8 / 16 / 8 stay; the budget-sized buckets of `asr`, `main`, `st`
# and `classify`, e.g. 5 / 3 / 2 utterances of <= 3 / 5 / 8 s, become
# 6 / 4 / 2 on `--mesh 2`); a partial batch is filled with masked rows.
# On a CPU, simulated (`tests/test_distribution.py` checks that the losses
# equal the single-device run's, and that `recipes.asr` trains on `--mesh 2`):
#
#     XLA_FLAGS=--xla_force_host_platform_device_count=8 KERAS_BACKEND=jax \
#         python -m recipes.slam --config slam_tiny --mesh 2x4
#
# ## 4. A TPU slice (multi-host JAX)
# Every host runs the same command. With `KERAS_DISTRIBUTION_NUM_PROCESSES`
# set, `--mesh` first calls `keras.distribution.initialize()` (on Cloud
# TPU it finds the coordinator itself; elsewhere also set
# `KERAS_DISTRIBUTION_JOB_ADDRESSES` and `KERAS_DISTRIBUTION_PROCESS_ID`);
# the mesh then spans every host's chips, with the model axis inside one
# host. Each host reads its own training shards (process i of n reads the
# files i::n, `pipeline.host_shards`), so the global batch is n times
# the recipe's batch; vocabularies and evaluation read every shard. On a
# v4-64 slice (8 hosts x 4 chips), 8 x 4:
#
#     gcloud compute tpus tpu-vm ssh my-v4-64 --zone us-central2-b --worker=all \
#         --command "cd keras-slam && KERAS_BACKEND=jax KERAS_DISTRIBUTION_NUM_PROCESSES=8 \
#         python -m recipes.slam --config slam_tiny --mesh 8x4 --output /mnt/disks/runs/slam"
#
# The long-run flags (`keras_slam.checkpointing`) serve such a job:
# `--checkpoint-every-steps`, `--keep-checkpoints` (a rerun resumes after
# preemption), `--mixed-precision bf16`, `--gradient-accumulation-steps`,
# `--clipnorm`. On several JAX hosts the checkpoints are Orbax's
# (`--checkpointer auto`; `pip install 'keras-slam[orbax]'`): each host
# writes its shards of the sharded weights and optimizer state,
# asynchronously, and a rerun loads them into the same (or a new) mesh;
# one host keeps Keras weight files (`--checkpointer h5`), or Orbax with
# `--checkpointer orbax`. `tests/test_orbax_checkpoints.py` resumes a fit
# saved on a simulated 2x4 mesh to the uninterrupted fit's weights.
#
# ## 5. A multi-GPU host (TensorFlow)
# On TensorFlow `--mesh N` runs the recipe under
# `tf.distribute.MirroredStrategy` over N GPUs (without GPUs, over N
# logical CPUs); the tasks' losses are scaled by 1 / replicas as Keras'
# own are, and Keras clips each replica's gradient before the all-reduce.
# A model axis is JAX-only; torch refuses `--mesh`.
#
# (fine-tuning the preset `python -m recipes.main --output runs/main` pre-trained):
#
#     CUDA_VISIBLE_DEVICES=0,1,2,3 KERAS_BACKEND=tensorflow \
#         python -m recipes.asr --preset runs/main/pretrained --output runs/asr --mesh 4

# %% [markdown]
# ## 6. Will it fit? `keras-slam plan`
# Per-device weights, gradients, optimizer slots and activations of a
# training step, with and without rematerialisation
# (`ConformerConfig(remat=True)`), for the paper's mSLAM 2B on a TPU v4
# slice of 32 chips (32 GiB each; an 8 x 4 mesh), 256 utterances of 30 s:

# %%
for flags in ([], ["--remat", "--precision", "bf16"]):
    cli.main(
        ["plan", "--preset", "mslam_2b", "--mesh", "8x4", "--batch", "256", "--seconds", "30"]
        + ["--device-memory-gb", "32"]
        + flags
    )
print("guide finished")
