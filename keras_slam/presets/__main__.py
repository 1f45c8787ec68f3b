"""`python -m keras_slam.presets`: the named presets and their parameter counts."""

from keras_slam.presets.registry import format_parameter_counts

if __name__ == "__main__":
    print(format_parameter_counts())
