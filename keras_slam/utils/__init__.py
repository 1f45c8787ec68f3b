"""Low-level helpers that import no keras_slam module outside `utils` but the version."""
