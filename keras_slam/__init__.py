"""keras-slam: SLAM / mSLAM speech-text pre-training for Keras 3.

`import keras_slam` is cheap; `keras_slam.models`, `keras_slam.layers`, ...
are imported on first use, as `import keras_hub; keras_hub.models` works.
"""

import importlib

__version__ = "0.1.0"

SUBPACKAGES = ("data", "layers", "losses", "metrics", "models", "optimizers", "presets", "utils")


def __getattr__(name):
    if name in SUBPACKAGES:
        return importlib.import_module(f"keras_slam.{name}")
    raise AttributeError(f"module 'keras_slam' has no attribute {name!r}")
