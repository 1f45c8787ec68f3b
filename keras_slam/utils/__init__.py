"""Low-level helpers that import no other keras_slam module but the version."""
