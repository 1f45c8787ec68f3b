"""`keras-slam presets` and `keras-slam convert-w2v-bert` (registered in cli.py)."""

from keras_slam.presets.hf_w2v_bert import convert_to_preset
from keras_slam.utils.preset_utils import format_parameter_counts


def add_presets_arguments(parser):
    del parser  # no options


def run_presets(args):
    print(format_parameter_counts())
    return 0


def add_convert_w2v_bert_arguments(parser):
    parser.add_argument(
        "hf_dir",
        help="Hugging Face Wav2Vec2Bert checkpoint directory (config.json + model.safetensors)",
    )
    parser.add_argument(
        "preset_dir",
        help="output keras-slam preset directory, new or empty (written all or nothing)",
    )


def run_convert_w2v_bert(args):
    convert_to_preset(args.hf_dir, args.preset_dir)
    print(f"wrote {args.preset_dir}")
    return 0


COMMANDS = [
    (
        "presets",
        "list the named presets with their parameter counts",
        add_presets_arguments,
        run_presets,
    ),
    (
        "convert-w2v-bert",
        "convert a Hugging Face w2v-BERT 2.0 (Wav2Vec2Bert) checkpoint into a keras-slam preset",
        add_convert_w2v_bert_arguments,
        run_convert_w2v_bert,
    ),
]
