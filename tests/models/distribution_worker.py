"""One training step on 8 simulated CPU devices (JAX), for test_layout_map.

XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before JAX
starts, so `tests/models/test_layout_map.py` runs this module in its own
process (KERAS_BACKEND=jax) and reads the JSON it prints as the last line:
{"sharding": {path: [expected axes, actual axes]}, "steps": {distribution:
{"loss": |loss - single-device loss|, "weights": max |weight diff|}}}.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np

from keras_slam.layers.conformer import ConformerConfig
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.slam_pretrainer import SLAMPretrainer
from keras_slam.models.speech_recognizer import SpeechRecognizer
from tests import test_case

BATCH, FRAMES, FEATURES, VOCABULARY = 8, 32, 12, 16
# Every width divisible by the 4-device model axis and the 2-device data axis.
BACKBONE = dict(
    vocabulary_size=VOCABULARY,
    hidden_dim=16,
    num_speech_layers=1,
    num_shared_layers=1,
    feature_dim=FEATURES,
    subsampling_filters=4,
    conformer=ConformerConfig(
        num_heads=2, ffn_dim=32, kernel_size=3, conv_norm_groups=4, dropout=0.0
    ),
)


def run_worker(module, **env):
    """Runs `python -m module` with `env` added; returns its last JSON line."""
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-m", module],
        capture_output=True,
        text=True,
        cwd=repo_root,
        env=dict(os.environ, PYTHONPATH=repo_root, **env),
        timeout=test_case.SUBPROCESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def make_recognizer():
    """A dropout-free CTC recognizer: one step is deterministic."""
    return SpeechRecognizer(
        SLAMBackbone(**BACKBONE), vocabulary_size=VOCABULARY, spec_augment=None, head_dropout=0.0
    )


def make_batch():
    rng = np.random.default_rng(0)
    lengths = rng.integers(FRAMES // 2, FRAMES + 1, size=BATCH)
    x = {
        "speech_features": rng.normal(size=(BATCH, FRAMES, FEATURES)).astype("float32"),
        "speech_padding_mask": (np.arange(FRAMES)[None] < lengths[:, None]).astype("float32"),
    }
    y = {
        "token_ids": rng.integers(1, VOCABULARY, size=(BATCH, 3)).astype("int32"),
        "token_padding_mask": np.ones((BATCH, 3), "float32"),
    }
    return x, y


def one_step(
    initial_weights, batch, global_clipnorm=5.0, learning_rate=1e-3, make_model=make_recognizer
):
    """(loss, updated weights) of one training step of `make_model()` from
    `initial_weights`."""
    model = make_model()
    model.set_weights(initial_weights)
    # Adam's first step is lr * g / (|g| + epsilon): a gradient near epsilon
    # turns its round-off into a weight change of up to lr, so lr is small.
    model.compile(learning_rate=learning_rate, global_clipnorm=global_clipnorm)
    history = model.fit(*batch, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return history.history["loss"][0], [keras.ops.convert_to_numpy(w) for w in model.weights]


def sharding_of(model, layout_map):
    """{path: [declared axes, the axes of the variable's jax sharding]}."""
    found = {}
    for variable in model.weights:
        layout = layout_map[variable.path]
        declared = list(layout.axes) if layout is not None else [None] * len(variable.shape)
        spec = list(variable.value.sharding.spec)
        spec += [None] * (len(variable.shape) - len(spec))
        found[variable.path] = [declared, spec]
    return found


def main():
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 8, devices
    keras.utils.set_random_seed(0)
    initial = make_recognizer().get_weights()
    batch = make_batch()
    loss, weights = one_step(initial, batch)

    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
    layout_map = SpeechRecognizer.get_layout_map(mesh)
    distributions = {
        "data_parallel": keras.distribution.DataParallel(devices=devices),
        "model_parallel_2x4": keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"
        ),
    }
    steps = {}
    for name, distribution in distributions.items():
        with distribution.scope():
            parallel_loss, parallel_weights = one_step(initial, batch)
        steps[name] = {
            "loss": abs(parallel_loss - loss),
            "weights": max(float(np.abs(a - b).max()) for a, b in zip(weights, parallel_weights)),
        }

    with distributions["model_parallel_2x4"].scope():
        pretrainer = SLAMPretrainer(
            SLAMBackbone(**BACKBONE), num_codes=16, code_dim=8, num_negatives=4
        )
        sharding = sharding_of(pretrainer, layout_map)
    print(json.dumps({"sharding": sharding, "steps": steps, "loss": loss}))


if __name__ == "__main__":
    main()
