"""A model's weights from its config, without allocating a single weight.

Variables are created inside a `keras.StatelessScope`, which defers their
initialisation; their paths and shapes are read and the deferred
initialisers dropped. Named presets (`preset_utils.PresetSpec.parameter_count`),
`keras-slam presets` and `keras-slam plan` (`memory_plan`) see the
paper-size models this way.
"""

import math

import keras

from keras_slam.utils.keras_private import global_state


def weight_shapes(model_cls, **config):
    """[(variable path, shape)] of `model_cls(**config)`, with no weight allocated.

    The model is built inside a `keras.StatelessScope`, where Keras creates
    variables with their shapes but defers their initialisation; the
    deferred variables are discarded unallocated.
    """
    pending = global_state.get_global_attribute("uninitialized_variables", [])
    pending = list(pending or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = model_cls(**config)
            return [(weight.path, tuple(weight.shape)) for weight in model.weights]
    finally:
        global_state.set_global_attribute("uninitialized_variables", pending)


def count_parameters(model_cls, **config):
    """Parameter count of `model_cls(**config)`, with no weight allocated."""
    return sum(math.prod(shape) for _, shape in weight_shapes(model_cls, **config))
