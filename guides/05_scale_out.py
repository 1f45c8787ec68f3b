# %% [markdown]
# # Scale out: one training script on 1 device, a data-parallel mesh and a 2x4 model-parallel mesh
#
# The same few CTC training steps of a tiny SLAM `SpeechRecognizer` on the
# bundled sample shards run three times: on one device, data-parallel over
# 8 devices (`keras.distribution.DataParallel`) and on a 2 (batch) x 4
# (model) mesh whose weights are sharded by the layout map
# (`SpeechRecognizer.get_layout_map`). The losses agree. Then: the flags
# for a TPU slice and a multi-GPU host, and `keras-slam plan` for the
# paper's 2B model.
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
# ## 3. A TPU slice (multi-host JAX)
# Every host runs the same script; `keras.distribution.initialize()`
# connects them (on Cloud TPU it finds the coordinator itself; elsewhere
# pass `job_addresses`, `num_processes`, `process_id`). The mesh spans all
# chips of all hosts, and each host reads its own shards:
# `pipeline.list_shards(paths, num_hosts, host_index)` gives host i the
# files `i::num_hosts`, and each host's batches are its part of the global
# batch. `train.py`:
#
# ```python
# import jax, keras
# from keras_slam.data import pipeline
# from keras_slam.models import SLAMPretrainer
#
# keras.distribution.initialize()
# devices = keras.distribution.list_devices()           # every host's chips
# mesh = keras.distribution.DeviceMesh((len(devices) // 4, 4), ("batch", "model"), devices)
# keras.distribution.set_distribution(keras.distribution.ModelParallel(
#     layout_map=SLAMPretrainer.get_layout_map(mesh), batch_dim_name="batch"))
# files = pipeline.list_shards(paths, num_hosts=jax.process_count(),
#                              host_index=jax.process_index())
# ...  # build the model and dataset as on one device, then fit
# ```
#
# launched on every worker of, e.g., a v4-64 slice (32 chips):
#
#     gcloud compute tpus tpu-vm ssh my-v4-64 --zone us-central2-b --worker=all \
#         --command "cd keras-slam && KERAS_BACKEND=jax python train.py"
#
# The recipes' long-run flags (`keras_slam.checkpointing`) serve such a
# job: `--checkpoint-dir`, `--checkpoint-every-steps`, `--keep-checkpoints`
# (a rerun resumes after preemption), `--mixed-precision bf16`,
# `--gradient-accumulation-steps`, `--clipnorm`.
#
# ## 4. A multi-GPU host (TensorFlow)
# `tf.distribute.MirroredStrategy` replicates the model on every GPU and
# splits each batch; the losses scale by 1 / replicas as Keras' own do.
#
# ```python
# import tensorflow as tf                               # KERAS_BACKEND=tensorflow
# strategy = tf.distribute.MirroredStrategy()           # all visible GPUs
# with strategy.scope():
#     recognizer = SpeechRecognizer.from_preset("slam_600m", vocabulary_size=96)
#     recognizer.compile(learning_rate=1e-4)
# recognizer.fit(train_dataset, steps_per_epoch=1000)
# ```
#
#     CUDA_VISIBLE_DEVICES=0,1,2,3 KERAS_BACKEND=tensorflow python my_training_script.py

# %% [markdown]
# ## 5. Will it fit? `keras-slam plan`
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
