"""keras-slam's checkpoint converters (`hf_w2v_bert`, which registers a
preset source into `keras_slam.utils.preset_utils`) and the `keras-slam
presets` / `convert-w2v-bert` commands. The named presets sit beside their
models (`keras_slam/models/*_presets.py`)."""
