"""Every private Keras / keras-hub API keras-slam uses, in one place.

Library modules import these names from here, never from `keras.src` or
`keras_hub.src` directly (`tests/utils/test_keras_private.py` scans for
that), so a Keras or keras-hub upgrade that moves or changes one of them
fails `test_keras_private.py` with the symbol's name instead of somewhere
deep in a training run. Each entry says who uses it and why no public API
does the job.
"""

# utils/parameters.py `weight_shapes`: the deferred variables of a
# `keras.StatelessScope(initialize_variables=False)` are kept in the global
# attribute "uninitialized_variables"; restoring it discards them unallocated.
from keras.src.backend.common import global_state

# models/speech_recognizer.py, slam_pretrainer.py, sequence_classifier.py
# `compute_loss`: the 1 / replicas factor Keras' own losses apply under
# tf.distribute, so that the replicas' summed gradients are those of the
# global batch mean.
from keras.src.losses.loss import scale_loss_for_distribution

# models/subclassed_task.py: keras-hub's `PipelineModel.__init__` rewrites
# `PipelineModel.__bases__` and Keras injects `Functional` there; a
# subclassed Task undoes both for itself (no public API names either class).
from keras.src.models.functional import Functional

# utils/preset_utils.py `weight_mismatch`: walks a model the way Keras' weights
# file does (`_walk_saveable`, `_get_unique_name` for container entries,
# snake-case class names) to name the first variable that does not fit.
from keras.src.saving.keras_saveable import KerasSaveable
from keras.src.saving.saving_lib import _get_unique_name as unique_saveable_name
from keras.src.saving.saving_lib import _walk_saveable as walk_saveable
from keras.src.utils.naming import to_snake_case
from keras_hub.src.utils.pipeline_model import PipelineModel

# Preset files and loaders (keras-hub exports only `from_preset` /
# `save_to_preset`): preset_utils registers named presets, tasks and
# preprocessors read a preset's parts.
from keras_hub.src.utils.preset_utils import (
    AUDIO_CONVERTER_CONFIG_FILE,
    CONFIG_FILE,
    METADATA_FILE,
    MODEL_WEIGHTS_FILE,
    PREPROCESSOR_CONFIG_FILE,
    SHARDED_MODEL_WEIGHTS_CONFIG_FILE,
    TASK_CONFIG_FILE,
    TASK_WEIGHTS_FILE,
    TOKENIZER_CONFIG_FILE,
    check_config_class,
    check_file_exists,
    get_preset_loader,
    load_json,
    register_presets,
)

# data/tokenizers.py: keras-hub's tokenizers convert eager inputs and ragged
# batches with these; `CharacterTokenizer` does the same.
from keras_hub.src.utils.tensor_utils import (
    convert_to_ragged_batch,
    preprocessing_function,
)

# Private attributes of public classes the library touches:
# (public class path, attribute, where it is used).
PRIVATE_ATTRIBUTES = (
    ("keras.layers.Layer", "_trainable_variables", "utils/preset_utils.py"),
    ("keras.layers.Layer", "_non_trainable_variables", "utils/preset_utils.py"),
    ("keras.layers.Layer", "_flatten_layers", "utils/preset_utils.py"),
    (
        "keras.optimizers.Optimizer",
        "_trainable_variables",
        "models/speech_recognizer.py",
    ),
    (
        "keras.optimizers.Optimizer",
        "_get_variable_index",
        "models/speech_recognizer.py (TF hands over its own tf.Variable)",
    ),
    ("keras_hub.tokenizers.Tokenizer", "_add_special_token", "data/tokenizers.py"),
    (
        "keras_hub.tokenizers.Tokenizer",
        "_update_special_token_ids",
        "data/tokenizers.py",
    ),
)

__all__ = [
    "AUDIO_CONVERTER_CONFIG_FILE",
    "CONFIG_FILE",
    "Functional",
    "METADATA_FILE",
    "MODEL_WEIGHTS_FILE",
    "PREPROCESSOR_CONFIG_FILE",
    "PipelineModel",
    "PRIVATE_ATTRIBUTES",
    "SHARDED_MODEL_WEIGHTS_CONFIG_FILE",
    "TASK_CONFIG_FILE",
    "TASK_WEIGHTS_FILE",
    "TOKENIZER_CONFIG_FILE",
    "KerasSaveable",
    "check_config_class",
    "check_file_exists",
    "load_json",
    "convert_to_ragged_batch",
    "get_preset_loader",
    "global_state",
    "preprocessing_function",
    "register_presets",
    "scale_loss_for_distribution",
    "to_snake_case",
    "unique_saveable_name",
    "walk_saveable",
]
