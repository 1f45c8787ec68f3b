"""`count_parameters`: a model's parameter count from its config, without
allocating a single weight.

Variables are created inside a `keras.StatelessScope`, which defers their
initialisation; their shapes are summed and the deferred initialisers
dropped. Named presets (`preset_utils.PresetSpec.parameter_count`) and
`keras-slam presets` count the paper-size models this way.
"""

import math

import keras

from keras_slam.utils.keras_private import global_state


def count_parameters(model_cls, **config):
    """Parameter count of `model_cls(**config)`, with no weight allocated.

    The model is built inside a `keras.StatelessScope`, where Keras creates
    variables with their shapes but defers their initialisation; the shapes
    are summed and the deferred variables are discarded unallocated.
    """
    pending = global_state.get_global_attribute("uninitialized_variables", [])
    pending = list(pending or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = model_cls(**config)
            return sum(math.prod(weight.shape) for weight in model.weights)
    finally:
        global_state.set_global_attribute("uninitialized_variables", pending)
