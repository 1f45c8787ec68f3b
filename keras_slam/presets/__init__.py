"""keras-slam's named presets (`registry`) and checkpoint converters
(`hf_w2v_bert`); both register into `keras_slam.utils.preset_utils`."""
