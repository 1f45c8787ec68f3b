"""One training step under tf.distribute.MirroredStrategy on 2 logical CPUs.

Run by tests/models/test_mirrored_strategy.py (`MIRRORED_TASK=recognizer`,
the CTC recognizer, or `translator`) and test_classifier_scale_out.py
(`MIRRORED_TASK=classifier`) in its own process
(KERAS_BACKEND=tensorflow): logical devices must be configured before
TensorFlow initialises. Prints one JSON line: {"replicas", "loss":
|loss - single-device loss|, "weights": max |weight diff|}.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from keras_slam.data.translation import split_translation_batch
from keras_slam.layers.pooling import ClassificationHead
from keras_slam.models.sequence_classifier import HEAD_NAME
from keras_slam.models.slam_backbone import SLAMBackbone
from keras_slam.models.speech_classifier import SpeechClassifier
from recipes.st import joint_batch
from tests.models.distribution_worker import (
    BACKBONE,
    BATCH,
    make_batch,
    make_recognizer,
    one_step,
)
from tests.models.test_speech_translator import SOURCES, TARGETS, make_translator, speech

NUM_CLASSES = 3


def make_classifier():
    """A dropout-free speech classifier on the shared encoder, without the
    head's batch standardisation: its training statistics are per replica
    under MirroredStrategy (as any Keras BatchNormalization that is not
    synchronized), so that step cannot equal the single-device one."""
    backbone = SLAMBackbone(**BACKBONE)
    head = ClassificationHead(NUM_CLASSES, standardize=False, name=HEAD_NAME)
    return SpeechClassifier(backbone, num_classes=NUM_CLASSES, head=head)


def make_classification_batch():
    x, _ = make_batch()
    return x, np.arange(len(x["speech_features"])) % NUM_CLASSES


def make_translation_batch():
    """A joint batch as recipes.st trains on: speech -> translation (ST) and
    its source text -> translation (MT), BATCH items each."""
    translator = make_translator()
    preprocessor = translator.preprocessor
    batch = dict(
        speech(np.random.default_rng(0), batch_size=BATCH),
        **preprocessor.tokenize_sources((SOURCES * BATCH)[:BATCH]),
        **preprocessor.tokenize_targets((TARGETS * BATCH)[:BATCH]),
    )
    x, y = split_translation_batch(joint_batch(batch), translator.bos_id, translator.eos_id)
    return keras.tree.map_structure(np.asarray, x), keras.tree.map_structure(np.asarray, y)


TASKS = {
    "recognizer": (make_recognizer, make_batch),
    "classifier": (make_classifier, make_classification_batch),
    "translator": (make_translator, make_translation_batch),
}


def main():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    make_model, make_task_batch = TASKS[os.environ.get("MIRRORED_TASK", "recognizer")]
    keras.utils.set_random_seed(0)
    initial = make_model().get_weights()
    batch = make_task_batch()
    # Keras clips each replica's gradient before the all-reduce (TF
    # optimizer), so clipping differs from one device's; compare without.
    # The replicas' gradients are summed in another order than one device's:
    # lr 1e-4 keeps that round-off (see one_step) under 1e-5.
    step = dict(global_clipnorm=None, learning_rate=1e-4, make_model=make_model)
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
