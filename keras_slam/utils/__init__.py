"""Low-level helpers that import no keras_slam module outside `utils` but the version.

One exception, a leaf that nothing imports: `memory_plan` reads the models'
configs and layout rules.
"""
