"""What `SpeechClassifier` and `TextClassifier` share: head, loss, labels.

    encoder output (B, T, D), padding mask (B, T)
      -> ClassificationHead "classification_head" (pooling, dropout, Dense)
      -> logits (B, C)

Labels are int (B,) class ids, -1 for rows to leave out (a pipeline's
padded batch rows); the loss is
`keras_slam.objectives.classification.classification_loss`.

Linear probe vs fine-tuning: `freeze_encoder=True` sets
`backbone.trainable = False` and runs the encoder in inference mode, also
inside `fit` (`InferenceModeEncoder`), so only the head trains and it sees
the features it will classify. `freeze_encoder=False` fine-tunes
everything, the encoder at `encoder_learning_rate_multiplier` x the head's
learning rate.
"""

import keras
import keras_hub
import numpy as np

from keras_slam.layers.pooling import ClassificationHead
from keras_slam.models.asr_preprocessor import SpeechRecognizerPreprocessor
from keras_slam.models.layout_map import LayoutMapMixin
from keras_slam.objectives.classification import classification_loss
from keras_slam.optimizers import EncoderHeadAdam, log_finite_losses, skip_non_finite_steps
from keras_slam.utils.keras_private import scale_loss_for_distribution
from keras_slam.utils.preset_utils import PresetMixin, saved_task_config

HEAD_NAME = "classification_head"


def split_classification_batch(batch, feature_keys, label_key="label"):
    """Pipeline batch dict -> (x dict of `feature_keys`, y labels (B,)) for `fit`."""
    return {key: batch[key] for key in feature_keys}, batch[label_key]


def with_encoder_input(encoder_input, encoder_output, pool_encoder_input):
    """What the head pools: the shared encoder's output (B, T, D), or with
    `pool_encoder_input` its input and output side by side (B, T, 2D).

    Why: the tiny shared encoder (dim 32, one layer) turns word pieces into
    features of the training templates that do not carry over to unseen
    wording, while a bag of the pieces themselves does (measured in
    `recipes.classify.Config`); pooling its input keeps both.
    """
    if not pool_encoder_input:
        return encoder_output
    return keras.ops.concatenate([encoder_input, encoder_output], axis=-1)


def check_saved_classes(preset, task_config, num_classes=None, class_names=None):
    """Raises when `num_classes` / `class_names` disagree with the trained head
    a classifier task preset holds (`task_config`: its saved config).

    Naming an unnamed saved head (`class_names` of its class count) is allowed.
    """
    saved_count, saved_names = task_config["num_classes"], task_config.get("class_names")
    count_differs = num_classes is not None and num_classes != saved_count
    names_differ = class_names is not None and (
        len(class_names) != saved_count
        or (saved_names is not None and [str(n) for n in class_names] != saved_names)
    )
    if count_differs or names_differ:
        given = class_names if class_names is not None else f"num_classes={num_classes}"
        raise ValueError(
            f"{preset} holds a trained head for {saved_count} classes {saved_names}, not "
            f"{given}; for a new head on its encoder build the classifier around "
            f"`keras_hub.models.Backbone.from_preset({preset!r})`"
        )


def resolve_head(backbone, num_classes, class_names, head, pooling, dropout, extra_features=0):
    """The head a classifier uses: `head` as given, or a new one (taking
    `extra_features` per utterance besides the pooled sequence).

    Returns:
        (head, num_classes, class_names as a list or None).
    Raises:
        ValueError: the class count is missing or disagrees between
            `num_classes`, `class_names` and `head`, or `head` takes other
            extra features.
    """
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names has duplicates: {class_names}")
        if num_classes is None:
            num_classes = len(class_names)
    if head is not None and num_classes is None:
        num_classes = head.num_classes
    if num_classes is None:
        raise ValueError("pass num_classes or class_names")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"num_classes is {num_classes} but class_names has {len(class_names)}")
    if head is None:
        head = ClassificationHead(
            num_classes,
            pooling,
            dropout,
            extra_features=extra_features,
            dtype=backbone.dtype_policy,
            name=HEAD_NAME,
        )
    elif head.num_classes != num_classes:
        raise ValueError(f"the head has {head.num_classes} classes, not {num_classes}")
    elif head.extra_features != extra_features:
        raise ValueError(
            f"the head takes {head.extra_features} extra features per utterance, not "
            f"{extra_features}"
        )
    return head, num_classes, class_names


@keras.saving.register_keras_serializable(package="keras_slam")
class InferenceModeEncoder(keras.layers.Layer):
    """`encode(*inputs, training=False)` as one layer of a functional model.

    A functional model passes the `training` it is called with (True in
    `fit`) to every layer of its graph whose `call` takes one, overriding a
    `training=False` given when the graph was built: a frozen encoder called
    directly would run its dropout in `fit`, and the head's standardisation
    would learn statistics of noisy features. This layer's `call` takes no
    `training`, so the encoder it calls stays in inference mode.

    Args:
        backbone: the encoder's backbone (tracked: its weights are this layer's).
        encode: `encode(*inputs, training=...)` -> outputs, a function of
            `backbone`'s layers.
    """

    def __init__(self, backbone, encode, **kwargs):
        super().__init__(dtype=backbone.dtype_policy, autocast=False, **kwargs)
        self.backbone = backbone
        self.encode = encode

    def call(self, *inputs):
        return self.encode(*inputs, training=False)

    def compute_output_spec(self, *inputs):
        # On KerasTensors the encoder's layers give their own output specs.
        return self.encode(*inputs, training=False)


class SequenceClassifier(LayoutMapMixin, PresetMixin, keras_hub.models.Task):
    """Base of the classifiers: subclasses build the functional graph
    (inputs -> encoder -> `self.head`) and name their input keys in
    `feature_keys`; this class compiles, trains and predicts, and gives the
    layout map of its weights (`get_layout_map`, head included)."""

    backbone_cls = keras_hub.models.Backbone
    preprocessor_cls = SpeechRecognizerPreprocessor
    feature_keys = ()  # (input key, its padding mask key)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """`PresetMixin.from_preset`; a task preset of this class restores
        its trained head, so `num_classes` / `class_names` given must match
        it (`check_saved_classes`)."""
        task_config = saved_task_config(preset, cls)
        if task_config is not None:
            check_saved_classes(
                preset, task_config, kwargs.get("num_classes"), kwargs.get("class_names")
            )
        return super().from_preset(preset, **kwargs)

    def _set_layers(
        self,
        backbone,
        preprocessor,
        num_classes,
        class_names,
        head,
        pooling,
        dropout,
        freeze,
        extra_features=0,
    ):
        """Sets backbone (frozen or not), preprocessor and head (`resolve_head`)
        before the subclass builds its graph; returns (num_classes, class_names)."""
        head, num_classes, class_names = resolve_head(
            backbone, num_classes, class_names, head, pooling, dropout, extra_features
        )
        backbone.trainable = not freeze
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.head = head
        return num_classes, class_names

    def _encode(self, encode, *inputs):
        """`encode(*inputs, training=...)` in the graph; in inference mode
        when the encoder is frozen (`InferenceModeEncoder`)."""
        if self.backbone.trainable:
            return encode(*inputs)
        return InferenceModeEncoder(self.backbone, encode, name="frozen_encoder")(*inputs)

    def _set_classifier_config(self, num_classes, class_names, freeze_encoder):
        self.num_classes = num_classes
        self.class_names = class_names
        self.freeze_encoder = freeze_encoder
        self.pooling = self.head.pooling
        self.dropout = self.head.dropout

    def compile(
        self,
        optimizer="auto",
        learning_rate=1e-3,
        encoder_learning_rate_multiplier=1.0,
        global_clipnorm=5.0,
        gradient_accumulation_steps=None,
        **kwargs,
    ):
        """Compiles with the cross-entropy of `compute_loss`.

        Args:
            optimizer: "auto" builds `EncoderHeadAdam` from the next four
                arguments; any other optimizer is used as given. Steps with
                a non-finite loss or gradient are skipped and counted.
            learning_rate: head learning rate (float or schedule).
            encoder_learning_rate_multiplier: encoder lr / head lr (when
                the encoder is not frozen).
            global_clipnorm: gradient clipping of the "auto" optimizer.
            gradient_accumulation_steps: steps whose gradients the "auto"
                optimizer averages into one update (None: every step).
            **kwargs: `keras.Model.compile` arguments.
        """
        if optimizer == "auto":
            optimizer = EncoderHeadAdam(
                head_prefix=HEAD_NAME,
                encoder_learning_rate_multiplier=encoder_learning_rate_multiplier,
                learning_rate=learning_rate,
                global_clipnorm=global_clipnorm,
                gradient_accumulation_steps=gradient_accumulation_steps,
            )
        super().compile(optimizer=skip_non_finite_steps(optimizer), **kwargs)
        log_finite_losses(self)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Cross-entropy, mean over the rows whose label is not -1 (divided by
        the replicas under tf.distribute, whose gradients are summed)."""
        loss = classification_loss(y, y_pred)
        loss = loss + keras.ops.cast(sum(self.losses, 0.0), "float32") if self.losses else loss
        return scale_loss_for_distribution(loss)

    def model_inputs(self, inputs):
        """A batch dict holding `feature_keys` -> the model's inputs (numpy);
        subclasses also take raw inputs through their preprocessor."""
        missing = [key for key in self.feature_keys if key not in inputs]
        if missing:
            raise ValueError(f"{type(self).__name__} inputs lack {missing}")
        return {key: np.asarray(inputs[key]) for key in self.feature_keys}

    def predict_labels(self, inputs):
        """Class names and probabilities of one batch.

        Args:
            inputs: a batch dict with `feature_keys` (e.g. a pipeline
                batch), or raw inputs (see the subclass's `model_inputs`).
        Returns:
            (labels: list of B class names (the class index as a string
            when the classifier has no class names), probabilities (B, C)
            float32 numpy).
        """
        logits = self.predict_on_batch(self.model_inputs(inputs))
        probabilities = keras.ops.convert_to_numpy(
            keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1)
        )
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        return [names[i] for i in probabilities.argmax(axis=-1)], probabilities

    def collect_predictions(self, dataset, label_key="label"):
        """True and predicted class ids over a dataset's labelled rows.

        Args:
            dataset: iterable of batch dicts with `feature_keys` and
                `label_key` (int (B,), -1 for padded rows, which are left out).
        Returns:
            (y_true (N,) int, y_pred (N,) int) numpy arrays.
        Raises:
            ValueError: a labelled row without real positions.
        """
        y_true, y_pred = [], []
        for number, batch in enumerate(dataset):
            labels = np.asarray(batch[label_key])
            rows = labels >= 0
            if not rows.any():
                continue
            mask_key = self.feature_keys[-1]
            empty = rows & ~np.asarray(batch[mask_key]).any(axis=1)
            if empty.any():
                raise ValueError(
                    f"batch {number}, rows {np.flatnonzero(empty).tolist()}: labelled but no "
                    f"real position in {mask_key!r} (audio shorter than one frame, or empty "
                    "text); nothing to classify"
                )
            logits = np.asarray(self.predict_on_batch(self.model_inputs(batch)))
            y_true.append(labels[rows])
            y_pred.append(logits[rows].argmax(axis=-1))
        if not y_true:
            return np.zeros(0, int), np.zeros(0, int)
        return np.concatenate(y_true), np.concatenate(y_pred)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            class_names=self.class_names,
            pooling=self.pooling,
            dropout=self.dropout,
            freeze_encoder=self.freeze_encoder,
        )
        return config
