"""One training step under tf.distribute.MirroredStrategy on 2 logical CPUs.

Run by tests/models/test_mirrored_strategy.py in its own process
(KERAS_BACKEND=tensorflow): logical devices must be configured before
TensorFlow initialises. Prints one JSON line: {"replicas", "loss":
|loss - single-device loss|, "weights": max |weight diff|}.
"""

import json

import keras
import numpy as np
import tensorflow as tf

from tests.models.distribution_worker import make_batch, make_recognizer, one_step


def main():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    keras.utils.set_random_seed(0)
    initial = make_recognizer().get_weights()
    batch = make_batch()
    # Keras clips each replica's gradient before the all-reduce (TF
    # optimizer), so clipping differs from one device's; compare without.
    # The replicas' gradients are summed in another order than one device's:
    # lr 1e-4 keeps that round-off (see one_step) under 1e-5.
    step = dict(global_clipnorm=None, learning_rate=1e-4)
    loss, weights = one_step(initial, batch, **step)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored_loss, mirrored_weights = one_step(initial, batch, **step)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(weights, mirrored_weights))
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "loss": abs(mirrored_loss - loss),
                "weights": difference,
            }
        )
    )


if __name__ == "__main__":
    main()
