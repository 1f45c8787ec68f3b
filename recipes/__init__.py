"""Training recipes. Each checkpoints, resumes when rerun and ends with a preset
through `keras_slam.checkpointing` (`add_training_arguments`,
`checkpoint_from_args`, `fit`): a new recipe adopts it in three lines."""
