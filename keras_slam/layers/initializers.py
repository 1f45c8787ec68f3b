"""`clone_initializer`: one initializer instance per weight."""

import keras


def clone_initializer(initializer):
    """A new instance of `initializer` (a name, config dict or instance).

    An unseeded Keras initializer fixes its seed when it is created, so one
    instance shared by same-shaped weights gives them equal values. An
    unseeded clone draws a fresh seed (reproducible under
    `keras.utils.set_random_seed`); a seeded one keeps its seed.
    """
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())
