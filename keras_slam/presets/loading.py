"""keras-slam's `from_preset` / `save_to_preset`, on top of keras-hub's.

keras-hub does the work (config.json, model.weights.h5, metadata.json,
task.json + task.weights.h5, tokenizer.json + assets); this module adds:

- named keras-slam presets (`registry.PRESETS`): built from their config;
  without published weights they are randomly initialised and a warning
  names the preset;
- Hugging Face Wav2Vec2Bert checkpoints: a local directory (config.json with
  `model_type` "wav2vec2-bert") is converted on the fly; "hf://org/name"
  is downloaded first where the Hub is reachable, else a clear error says
  what to do offline;
- checks with clear errors: unknown preset name (listing the known ones),
  missing files (naming the file), keras-slam version, and weights that do
  not fit the config (naming the first mismatching variable and both
  shapes);
- `metadata.json` gains `keras_slam_version` (and any extra metadata).

Version policy (`check_version`): `metadata.json["keras_slam_version"]`
is compared with the installed version on (major, minor). Equal: loads
silently. Older preset: loads with a warning (defaults may have changed).
Newer preset: `ValueError` (its config may use options this version lacks;
upgrade keras-slam). No `keras_slam_version` (a preset saved by plain
keras-hub): loads with a warning.

Classes opt in by inheriting `PresetMixin` before the keras-hub base:
`class SpeechEncoder(PresetMixin, keras_hub.models.Backbone)`.
"""

import json
import os
import warnings

import keras

from keras_slam import __version__ as KERAS_SLAM_VERSION

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
MODEL_WEIGHTS_FILE = "model.weights.h5"
SHARDED_WEIGHTS_FILE = "model.weights.json"
TASK_CONFIG_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
HF_PREFIX = "hf://"


def _major_minor(version):
    return tuple(int(part) for part in str(version).split(".")[:2])


def check_version(preset, metadata):
    """Applies the version policy of the module docstring."""
    saved = metadata.get("keras_slam_version")
    if saved is None:
        warnings.warn(
            f"{preset}: {METADATA_FILE} has no keras_slam_version (not saved by "
            f"keras-slam); loading it with keras-slam {KERAS_SLAM_VERSION}"
        )
        return
    if _major_minor(saved) > _major_minor(KERAS_SLAM_VERSION):
        raise ValueError(
            f"{preset} was saved by keras-slam {saved}, newer than the installed "
            f"{KERAS_SLAM_VERSION}; its config may use options this version "
            "does not have. Upgrade keras-slam to load it."
        )
    if _major_minor(saved) < _major_minor(KERAS_SLAM_VERSION):
        warnings.warn(
            f"{preset} was saved by keras-slam {saved}; loading it with "
            f"{KERAS_SLAM_VERSION}. Check its outputs: defaults may have changed."
        )


def read_metadata(preset):
    path = os.path.join(preset, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`{METADATA_FILE}` is missing from preset directory `{preset}`")
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def check_preset_dir(preset, load_weights=True, needs_backbone=True):
    """Checks a local keras-slam preset directory before keras-hub reads it."""
    if not needs_backbone:
        return
    for name in (CONFIG_FILE, METADATA_FILE):
        if not os.path.isfile(os.path.join(preset, name)):
            raise FileNotFoundError(f"`{name}` is missing from preset directory `{preset}`")
    check_version(preset, read_metadata(preset))
    if load_weights and not any(
        os.path.isfile(os.path.join(preset, name)) for name in (MODEL_WEIGHTS_FILE, SHARDED_WEIGHTS_FILE)
    ):
        raise FileNotFoundError(
            f"`{MODEL_WEIGHTS_FILE}` is missing from preset directory `{preset}` "
            "(pass load_weights=False for a randomly initialised model)"
        )


def _variables_by_h5_path(model, skip=()):
    """{dataset path in a Keras weights file: variable}, as Keras saves them.

    Follows Keras' own traversal (attributes in sorted order, containers
    named by class, `vars/<i>` per layer), so that a weights file can be
    checked against a model variable by variable.
    """
    from keras_slam.utils.keras_private import KerasSaveable
    from keras_slam.utils.keras_private import to_snake_case
    from keras_slam.utils.keras_private import unique_saveable_name
    from keras_slam.utils.keras_private import walk_saveable

    found, visited = {}, set(id(obj) for obj in skip)

    def visit(saveable, path):
        if id(saveable) in visited:
            return
        visited.add(id(saveable))
        if isinstance(saveable, keras.layers.Layer):
            own = saveable._trainable_variables + saveable._non_trainable_variables
            for i, variable in enumerate(own):
                found[f"{path}/vars/{i}".lstrip("/")] = variable
        for attr, child in walk_saveable(saveable):
            if isinstance(child, KerasSaveable):
                visit(child, f"{path}/{attr}")
            elif isinstance(child, (list, dict, tuple)):
                visit_container(child, f"{path}/{attr}")

    def visit_container(container, path):
        if id(container) in visited:
            return
        visited.add(id(container))
        used = {}
        for child in container.values() if isinstance(container, dict) else container:
            if isinstance(child, KerasSaveable):
                base = to_snake_case(child.__class__.__name__)
                visit(child, f"{path}/{unique_saveable_name(base, used)}")
            elif isinstance(child, (list, dict, tuple)):
                visit_container(child, f"{path}/{unique_saveable_name('container', used)}")

    visit(model, "")
    return found


def weight_mismatch(model, weights_path, skip=()):
    """First difference between `model` and a Keras weights file, or None.

    Returns:
        A message naming the variable (its path in the model) and both
        shapes, or the file's surplus variables.
    """
    import h5py

    saved = {}
    with h5py.File(weights_path, "r") as file:
        file.visititems(
            lambda name, item: saved.__setitem__(name, item.shape)
            if isinstance(item, h5py.Dataset)
            else None
        )
    expected = _variables_by_h5_path(model, skip)
    file_name = os.path.basename(weights_path)
    for path, variable in expected.items():
        if path not in saved:
            return f"{variable.path} (shape {tuple(variable.shape)}) is missing from {file_name}"
        if tuple(saved[path]) != tuple(variable.shape):
            return (
                f"{variable.path}: the config gives shape {tuple(variable.shape)}, "
                f"{file_name} holds shape {tuple(saved[path])}"
            )
    surplus = sorted(path for path in saved if path not in expected and "/vars/" in f"/{path}")
    if surplus:
        return f"{file_name} holds {len(surplus)} variables the config does not create, first {surplus[0]}"
    return None


def _keras_hub_method(cls, name):
    """`name` as defined by the first keras-hub class in `cls`'s MRO."""
    for base in cls.__mro__:
        if base.__module__.startswith("keras_hub") and name in base.__dict__:
            return base.__dict__[name]
    raise TypeError(f"{cls.__name__} has no keras-hub base class defining {name}")


def _is_tokenizer(cls):
    import keras_hub

    return issubclass(cls, keras_hub.tokenizers.Tokenizer)


def _is_task(cls):
    import keras_hub

    return issubclass(cls, keras_hub.models.Task)


def _check_weights(cls, preset, load_weights, kwargs):
    """After a failed load: raises a clear error if the weights do not fit."""
    if not load_weights:
        return
    base_from_preset = _keras_hub_method(cls, "from_preset").__func__
    model = base_from_preset(cls, preset, load_weights=False, **kwargs)
    backbone = model.backbone if _is_task(cls) else model
    path = os.path.join(preset, MODEL_WEIGHTS_FILE)
    if os.path.isfile(path):
        message = weight_mismatch(backbone, path)
        if message:
            raise ValueError(f"{preset}: weights do not match the config: {message}")
    task_path = os.path.join(preset, TASK_WEIGHTS_FILE)
    if _is_task(cls) and os.path.isfile(task_path):
        message = weight_mismatch(model, task_path, skip=backbone._flatten_layers())
        if message:
            raise ValueError(f"{preset}: task weights do not match the config: {message}")


def from_preset(cls, preset, **kwargs):
    """`cls.from_preset` with keras-slam's names, checks and HF import."""
    from keras_slam.presets import hf_w2v_bert
    from keras_slam.presets import registry

    if not isinstance(preset, str):
        raise ValueError(f"a preset is a name or a path, got {preset!r}")
    if preset in registry.PRESETS:
        return registry.build(cls, preset, **kwargs)
    if preset.startswith(HF_PREFIX):
        preset = hf_w2v_bert.download(preset)
    load_weights = kwargs.get("load_weights", True)
    if os.path.isdir(preset):
        if hf_w2v_bert.is_hf_w2v_bert_dir(preset):
            return hf_w2v_bert.from_hf_dir(cls, preset, **kwargs)
        check_preset_dir(preset, load_weights, needs_backbone=not _is_tokenizer(cls))
    elif "://" not in preset:
        raise ValueError(
            f"unknown preset {preset!r}: not a keras-slam preset name, nor a "
            f"directory. Known presets: {', '.join(registry.PRESETS)}"
        )
    base_from_preset = _keras_hub_method(cls, "from_preset").__func__
    if _is_tokenizer(cls) or not os.path.isdir(preset):
        return base_from_preset(cls, preset, **kwargs)
    try:
        return base_from_preset(cls, preset, **kwargs)
    except (ValueError, KeyError, TypeError) as error:
        rest = {key: value for key, value in kwargs.items() if key != "load_weights"}
        _check_weights(cls, preset, load_weights, rest)
        raise error


def update_metadata(preset_dir, **extra):
    """Adds `keras_slam_version` and `extra` to an existing metadata.json."""
    path = os.path.join(preset_dir, METADATA_FILE)
    metadata = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as file:
            metadata = json.load(file)
    metadata.update(keras_slam_version=KERAS_SLAM_VERSION, **extra)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(metadata, file, indent=4)


def save_to_preset(obj, preset_dir, **kwargs):
    """keras-hub's `save_to_preset`, plus keras-slam metadata."""
    _keras_hub_method(type(obj), "save_to_preset")(obj, preset_dir, **kwargs)
    if not _is_tokenizer(type(obj)):
        update_metadata(preset_dir)


class PresetMixin:
    """keras-slam preset loading/saving for keras-hub Backbones, Tasks, Tokenizers.

    Put it first among the bases; see the module docstring for what it adds.
    """

    @classmethod
    def from_preset(cls, preset, **kwargs):
        return from_preset(cls, preset, **kwargs)

    def save_to_preset(self, preset_dir, **kwargs):
        save_to_preset(self, preset_dir, **kwargs)

