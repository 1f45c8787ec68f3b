"""How a name becomes a model: keras-slam's `from_preset`, on keras-hub's.

One dispatcher, `from_preset(cls, preset, **kwargs)`, which every keras-slam
backbone and task reaches through `PresetMixin`. It tries, in order:

1. a named preset (a `PresetSpec`, registered by `register_named_presets`
   from each model family's table beside it: `models/slam_backbone_presets.py`,
   `models/speech_encoder_presets.py`): built from its config; without
   published weights it is randomly initialised and a warning names it;
2. a preset source (`register_preset_source`, e.g. the Hugging Face
   w2v-BERT converter in `keras_slam.presets.hf_w2v_bert`): a predicate
   recognises the preset and a loader builds the model from it;
3. a keras-hub preset (local directory or remote handle), read by
   keras-hub's own loader: a backbone class gets `config.json` +
   `model.weights.h5`; a task class gets `task.json` + `task.weights.h5`
   when the preset holds this task, otherwise its backbone wrapped in a new
   task, with the preprocessor the preset holds (`preprocessor.json`, or
   its tokenizer and audio converter).

This module imports only keras, keras-hub, the standard library and
`keras_slam.utils`, so models import it, and `keras_slam.models` (the
preset tables) and the converters register into it: there is no import
circle. `import keras_slam.models` runs the registrations.

Checks with clear errors: unknown preset name (listing the known ones),
missing files (naming the file), keras-slam version (`check_version`), and
weights that do not fit the config (naming the first mismatching variable
and both shapes). `save_to_preset` adds `keras_slam_version` to
`metadata.json`.

Version policy (`check_version`): `metadata.json["keras_slam_version"]`
is compared with the installed version on (major, minor). Equal: loads
silently. Older preset: loads with a warning (defaults may have changed).
Newer preset: `ValueError` (its config may use options this version lacks;
upgrade keras-slam). No `keras_slam_version` (a preset saved by plain
keras-hub): loads with a warning.
"""

import dataclasses
import json
import os
import warnings

import h5py
import keras
import keras_hub

from keras_slam import __version__ as KERAS_SLAM_VERSION
from keras_slam.utils.keras_private import (
    CONFIG_FILE,
    METADATA_FILE,
    MODEL_WEIGHTS_FILE,
    SHARDED_MODEL_WEIGHTS_CONFIG_FILE,
    TASK_CONFIG_FILE,
    TASK_WEIGHTS_FILE,
    KerasSaveable,
    check_config_class,
    check_file_exists,
    get_preset_loader,
    load_json,
    register_presets,
    to_snake_case,
    unique_saveable_name,
    walk_saveable,
)
from keras_slam.utils.parameters import count_parameters

RANDOM_WEIGHTS = "random"

# {name: PresetSpec}, in registration order.
NAMED_PRESETS = {}
# Registered `PresetSource`s, tried in order after the named presets.
PRESET_SOURCES = []


@dataclasses.dataclass(frozen=True)
class PresetSpec:
    """A named preset: `backbone_cls(**config)` and what it is.

    `weights` is RANDOM_WEIGHTS for presets whose weights are not published
    (all of them today) or the handle of a published preset directory.
    """

    backbone_cls: type
    config: dict
    description: str
    paper: str
    paper_params: float | None = None
    weights: str = RANDOM_WEIGHTS

    def metadata(self, name):
        """keras-hub's preset metadata, plus paper and weights.

        "params" is the paper's count (None for test sizes); computing ours
        builds the model, so `parameter_count()` does it on demand.
        """
        return {
            "description": self.description,
            "params": self.paper_params,
            "path": name,
            "paper": self.paper,
            "weights": self.weights,
        }

    def parameter_count(self):
        """Parameters of the built backbone, counted without allocating weights."""
        return count_parameters(self.backbone_cls, **self.config)


@dataclasses.dataclass(frozen=True)
class PresetSource:
    """A preset format keras-hub does not read (e.g. a Hugging Face checkpoint).

    `matches(preset) -> bool` recognises it; `load(cls, preset, **kwargs)`
    returns `cls.from_preset(preset, **kwargs)`.
    """

    name: str
    matches: object
    load: object


def register_named_presets(presets):
    """Adds {name: PresetSpec} to `NAMED_PRESETS` and to keras-hub's listing
    (`Backbone.presets`), per backbone class."""
    NAMED_PRESETS.update(presets)
    for backbone_cls in {spec.backbone_cls for spec in presets.values()}:
        # keras-hub requires a handle; ours are built by `from_preset`,
        # never by keras-hub's downloader.
        register_presets(
            {
                name: {
                    "metadata": spec.metadata(name),
                    "kaggle_handle": f"keras_slam://{name}",
                }
                for name, spec in presets.items()
                if spec.backbone_cls is backbone_cls
            },
            backbone_cls,
        )


def format_parameter_counts():
    """A table of every named preset's parameter count, ours beside the paper's
    (`keras-slam presets`); no weight is allocated."""
    lines = [f"{'preset':<14} {'class':<14} {'parameters':>15} {'paper':>9}  weights"]
    for name, spec in NAMED_PRESETS.items():
        count = spec.parameter_count()
        paper = "" if spec.paper_params is None else f"{spec.paper_params / 1e9:.2f}B"
        cls_name = spec.backbone_cls.__name__
        lines.append(f"{name:<14} {cls_name:<14} {count:>15,} {paper:>9}  {spec.weights}")
    return "\n".join(lines)


def register_preset_source(source):
    """Adds a `PresetSource` (replacing one of the same name)."""
    PRESET_SOURCES[:] = [known for known in PRESET_SOURCES if known.name != source.name]
    PRESET_SOURCES.append(source)


def _major_minor(version):
    return tuple(int(part) for part in str(version).split(".")[:2])


def check_version(preset, metadata):
    """Applies the version policy of the module docstring."""
    saved = metadata.get("keras_slam_version")
    if saved is None:
        warnings.warn(
            f"{preset}: {METADATA_FILE} has no keras_slam_version (not saved by "
            f"keras-slam); loading it with keras-slam {KERAS_SLAM_VERSION}",
            stacklevel=2,
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
            f"{KERAS_SLAM_VERSION}. Check its outputs: defaults may have changed.",
            stacklevel=2,
        )


def _read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def check_preset_dir(preset, load_weights=True):
    """Checks a local keras-slam model preset before keras-hub reads it."""
    for name in (CONFIG_FILE, METADATA_FILE):
        if not os.path.isfile(os.path.join(preset, name)):
            raise FileNotFoundError(f"`{name}` is missing from preset directory `{preset}`")
    check_version(preset, _read_json(os.path.join(preset, METADATA_FILE)))
    weight_files = (MODEL_WEIGHTS_FILE, SHARDED_MODEL_WEIGHTS_CONFIG_FILE)
    if load_weights and not any(
        os.path.isfile(os.path.join(preset, name)) for name in weight_files
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
    found, visited = {}, {id(obj) for obj in skip}

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
        children = container.values() if isinstance(container, dict) else container
        for child in children:
            if isinstance(child, KerasSaveable):
                base = to_snake_case(child.__class__.__name__)
                visit(child, f"{path}/{unique_saveable_name(base, used)}")
            elif isinstance(child, (list, dict, tuple)):
                name = unique_saveable_name("container", used)
                visit_container(child, f"{path}/{name}")

    visit(model, "")
    return found


def weight_mismatch(model, weights_path, skip=()):
    """First difference between `model` and a Keras weights file, or None.

    Returns:
        A message naming the variable (its path in the model) and both
        shapes, or the file's surplus variables.
    """
    saved = {}
    with h5py.File(weights_path, "r") as file:
        file.visititems(
            lambda name, item: (
                saved.__setitem__(name, item.shape) if isinstance(item, h5py.Dataset) else None
            )
        )
    expected = _variables_by_h5_path(model, skip)
    file_name = os.path.basename(weights_path)
    for path, variable in expected.items():
        shape = tuple(variable.shape)
        if path not in saved:
            return f"{variable.path} (shape {shape}) is missing from {file_name}"
        if tuple(saved[path]) != shape:
            return (
                f"{variable.path}: the config gives shape {shape}, "
                f"{file_name} holds shape {tuple(saved[path])}"
            )
    surplus = sorted(path for path in saved if path not in expected and "/vars/" in f"/{path}")
    if surplus:
        return (
            f"{file_name} holds {len(surplus)} variables the config does not "
            f"create, first {surplus[0]}"
        )
    return None


def _keras_hub_method(cls, name):
    """`name` as defined by the first keras-hub class in `cls`'s MRO."""
    for base in cls.__mro__:
        if base.__module__.startswith("keras_hub") and name in base.__dict__:
            return base.__dict__[name]
    raise TypeError(f"{cls.__name__} has no keras-hub base class defining {name}")


def _is_tokenizer(cls):
    return issubclass(cls, keras_hub.tokenizers.Tokenizer)


def _is_task(cls):
    return issubclass(cls, keras_hub.models.Task)


def _build_named(cls, name, load_weights=True, dtype=None, **kwargs):
    """`cls.from_preset(name)` for a named preset.

    A backbone class (the preset's or a base of it) gets the backbone with
    `kwargs` as config overrides; a task whose `backbone_cls` the preset
    fits gets a new task around it, `kwargs` as task arguments.
    """
    spec = NAMED_PRESETS[name]
    if spec.weights != RANDOM_WEIGHTS:
        return from_preset(cls, spec.weights, load_weights=load_weights, dtype=dtype, **kwargs)
    if load_weights:
        warnings.warn(
            f"preset {name!r} has no published weights: "
            f"{spec.backbone_cls.__name__} is randomly initialised",
            stacklevel=2,
        )
    if issubclass(spec.backbone_cls, cls):
        return spec.backbone_cls(**{**spec.config, **kwargs}, dtype=dtype)
    task_backbone = getattr(cls, "backbone_cls", None)
    if task_backbone is not None and issubclass(spec.backbone_cls, task_backbone):
        return cls(backbone=spec.backbone_cls(**spec.config, dtype=dtype), **kwargs)
    raise ValueError(
        f"preset {name!r} is a {spec.backbone_cls.__name__}; {cls.__name__} cannot be built from it"
    )


def _file_exists(preset, name):
    return check_file_exists(preset, name)


def holds_task(preset, cls):
    """True when the preset's task.json is a `cls` (or a subclass)."""
    if not _file_exists(preset, TASK_CONFIG_FILE):
        return False
    task_config = load_json(preset, TASK_CONFIG_FILE)
    return issubclass(check_config_class(task_config), cls)


def saved_task_config(preset, cls):
    """The task config (`task.json`'s "config") of a local preset directory
    holding a `cls` task (or a subclass), else None."""
    if not (isinstance(preset, str) and os.path.isdir(preset) and holds_task(preset, cls)):
        return None
    return load_json(preset, TASK_CONFIG_FILE)["config"]


def _load_keras_preset(cls, preset, load_weights=True, **kwargs):
    """`cls` from a keras-hub preset, with keras-hub's loaders.

    A task whose class the preset does not hold is built around the
    preset's backbone (keras-hub's `load_task`, without its search for a
    task subclass per backbone class: one keras-slam task serves every
    backbone); its preprocessor is the preprocessor class's `from_preset`
    when the preset holds one (or its parts).
    """
    if not _is_task(cls):
        base_from_preset = _keras_hub_method(cls, "from_preset").__func__
        return base_from_preset(cls, preset, load_weights=load_weights, **kwargs)
    preprocessor_cls = cls.preprocessor_cls
    if (
        "preprocessor" not in kwargs
        and preprocessor_cls is not None
        and not holds_task(preset, cls)
    ):
        saved = preprocessor_cls.saved_in(preset)
        kwargs["preprocessor"] = preprocessor_cls.from_preset(preset) if saved else None
    return get_preset_loader(preset).load_task(cls, load_weights, True, **kwargs)


def _check_weights(cls, preset, kwargs):
    """After a failed load: raises a clear error if the weights do not fit."""
    model = _load_keras_preset(cls, preset, load_weights=False, **kwargs)
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
    """`cls.from_preset(preset, **kwargs)`: the dispatcher of the module doc.

    Args:
        cls: a keras-hub Backbone, Task or Tokenizer class.
        preset: a registered name, a directory, or a remote handle.
        **kwargs: `load_weights`, `dtype`, and config overrides (backbone)
            or constructor arguments (task).
    """
    if not isinstance(preset, str):
        raise TypeError(f"a preset is a name or a path, got {preset!r}")
    if preset in NAMED_PRESETS:
        return _build_named(cls, preset, **kwargs)
    for source in PRESET_SOURCES:
        if source.matches(preset):
            return source.load(cls, preset, **kwargs)
    load_weights = kwargs.pop("load_weights", True)
    if not os.path.isdir(preset):
        if "://" not in preset:
            raise ValueError(
                f"unknown preset {preset!r}: not a keras-slam preset name, nor a "
                f"directory. Known presets: {', '.join(NAMED_PRESETS)}"
            )
        return _load_keras_preset(cls, preset, load_weights, **kwargs)
    if _is_tokenizer(cls):
        return _load_keras_preset(cls, preset, **kwargs)
    check_preset_dir(preset, load_weights)
    try:
        return _load_keras_preset(cls, preset, load_weights, **kwargs)
    except (ValueError, KeyError, TypeError):
        if load_weights:
            _check_weights(cls, preset, kwargs)
        raise


def update_metadata(preset_dir, **extra):
    """Adds `keras_slam_version` and `extra` to the preset's metadata.json."""
    path = os.path.join(preset_dir, METADATA_FILE)
    metadata = _read_json(path) if os.path.isfile(path) else {}
    metadata.update(keras_slam_version=KERAS_SLAM_VERSION, **extra)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(metadata, file, indent=4)


class PresetMixin:
    """keras-slam's `from_preset` / `save_to_preset` for keras-hub Backbones,
    Tasks and Tokenizers: `class SpeechEncoder(PresetMixin, Backbone)`.

    Put it first among the bases; see the module docstring.
    """

    @classmethod
    def from_preset(cls, preset, **kwargs):
        return from_preset(cls, preset, **kwargs)

    def save_to_preset(self, preset_dir, **kwargs):
        """keras-hub's `save_to_preset`, plus `keras_slam_version`."""
        _keras_hub_method(type(self), "save_to_preset")(self, preset_dir, **kwargs)
        if not _is_tokenizer(type(self)):
            update_metadata(preset_dir)
