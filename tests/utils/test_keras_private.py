"""The private Keras / keras-hub APIs keras-slam uses, each still there and
behaving as the library expects; and no other module imports private APIs."""

import ast
import functools
import inspect
import json
import pathlib

import keras
import keras_hub
import numpy as np
import pytest

from keras_slam.utils import keras_private

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "keras_slam"
PRIVATE_PACKAGES = (("keras", "src"), ("keras_hub", "src"))


def private_imports(path):
    """'line: module' for each import of keras.src / keras_hub.src in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
        else:
            continue
        found += [
            f"{node.lineno}: {module}"
            for module in modules
            if tuple(module.split(".")[:2]) in PRIVATE_PACKAGES
        ]
    return found


def test_only_keras_private_imports_private_apis():
    offenders = {
        str(path.relative_to(PACKAGE)): private_imports(path)
        for path in PACKAGE.rglob("*.py")
        if path.name != "keras_private.py" and private_imports(path)
    }
    assert offenders == {}, (
        "import private Keras / keras-hub APIs from keras_slam.utils.keras_private"
    )


def test_the_scan_finds_private_imports(tmp_path):
    module = tmp_path / "module.py"
    module.write_text(
        "import keras.src.ops\nfrom keras_hub.src.utils import preset_utils\n"
        "from keras import ops\nimport keras_hub\n"
    )
    assert private_imports(module) == ["1: keras.src.ops", "2: keras_hub.src.utils"]


class Outer(keras.layers.Layer):
    def __init__(self):
        super().__init__()
        self.inner = keras.layers.Dense(2)


def check_global_state():
    # count_parameters: deferred variables are listed under this attribute.
    state = keras_private.global_state
    saved = state.get_global_attribute("uninitialized_variables", [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            variable = keras.Variable(initializer="zeros", shape=(3,))
            pending = state.get_global_attribute("uninitialized_variables")
            assert any(item is variable for item in pending)
    finally:
        state.set_global_attribute("uninitialized_variables", saved)


def check_walk_saveable():
    outer = Outer()
    assert ("inner", outer.inner) in list(keras_private.walk_saveable(outer))
    assert issubclass(keras.layers.Layer, keras_private.KerasSaveable)


def check_unique_saveable_name():
    used = {}
    names = [keras_private.unique_saveable_name("dense", used) for _ in range(3)]
    assert names == ["dense", "dense_1", "dense_2"]
    assert keras_private.to_snake_case("ConvSubsampling") == "conv_subsampling"


def check_preset_files(tmp_path):
    assert keras_private.AUDIO_CONVERTER_CONFIG_FILE == "audio_converter.json"
    assert keras_private.PREPROCESSOR_CONFIG_FILE == "preprocessor.json"
    assert keras_private.TOKENIZER_CONFIG_FILE == "tokenizer.json"
    assert keras_private.CONFIG_FILE == "config.json"
    assert keras_private.METADATA_FILE == "metadata.json"
    assert keras_private.MODEL_WEIGHTS_FILE == "model.weights.h5"
    assert keras_private.SHARDED_MODEL_WEIGHTS_CONFIG_FILE == "model.weights.json"
    assert keras_private.TASK_CONFIG_FILE == "task.json"
    assert keras_private.TASK_WEIGHTS_FILE == "task.weights.h5"
    assert not keras_private.check_file_exists(str(tmp_path), "config.json")
    (tmp_path / "config.json").write_text("{}")
    assert keras_private.check_file_exists(str(tmp_path), "config.json")


def check_get_preset_loader(tmp_path):
    keras_hub.layers.AudioConverter(name="audio_converter").save_to_preset(str(tmp_path))
    config = keras.saving.serialize_keras_object(keras.layers.Dense(2))
    (tmp_path / "config.json").write_text(json.dumps(config))
    loader = keras_private.get_preset_loader(str(tmp_path))
    converter = loader.load_audio_converter(keras_hub.layers.AudioConverter)
    assert isinstance(converter, keras_hub.layers.AudioConverter)
    for method in ("load_tokenizer", "load_preprocessor", "load_task"):
        assert callable(getattr(loader, method)), method


def check_config_json(tmp_path):
    converter = keras_hub.layers.AudioConverter()
    config = keras.saving.serialize_keras_object(converter)
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = keras_private.load_json(str(tmp_path), "config.json")
    assert keras_private.check_config_class(loaded) is keras_hub.layers.AudioConverter


def check_register_presets():
    parameters = list(inspect.signature(keras_private.register_presets).parameters)
    assert parameters == ["presets", "backbone_cls"]


def check_tensor_utils():
    ragged, unbatched, rectangular = keras_private.convert_to_ragged_batch(
        np.array([1, 2, 3], "int32")
    )
    assert unbatched and rectangular and ragged.shape[0] == 1

    class Layer:
        @keras_private.preprocessing_function
        def call(self, x):
            return x

    assert np.array_equal(keras.ops.convert_to_numpy(Layer().call(np.ones(2))), [1, 1])


def check_scale_loss_for_distribution():
    # Outside a tf.distribute strategy (and on JAX / torch) the loss is kept.
    loss = keras.ops.convert_to_tensor(3.0)
    assert float(keras.ops.convert_to_numpy(keras_private.scale_loss_for_distribution(loss))) == 3
    assert list(inspect.signature(keras_private.scale_loss_for_distribution).parameters) == [
        "value"
    ]


def check_pipeline_model_bases():
    # subclassed_task: Task's base, whose `__init__` rewrites its `__bases__`,
    # where building a functional Task injects `Functional`.
    assert keras_private.PipelineModel in keras_hub.models.Task.__bases__
    assert "PipelineModel.__bases__" in inspect.getsource(keras_private.PipelineModel.__init__)
    assert issubclass(keras_private.Functional, keras.Model)


# Symbols of `keras_private` -> the check of how the library uses them.
CHECKS = {
    "global_state": check_global_state,
    "walk_saveable KerasSaveable": check_walk_saveable,
    "unique_saveable_name to_snake_case": check_unique_saveable_name,
    "check_file_exists AUDIO_CONVERTER_CONFIG_FILE PREPROCESSOR_CONFIG_FILE "
    "TOKENIZER_CONFIG_FILE CONFIG_FILE METADATA_FILE MODEL_WEIGHTS_FILE "
    "SHARDED_MODEL_WEIGHTS_CONFIG_FILE TASK_CONFIG_FILE TASK_WEIGHTS_FILE": (check_preset_files),
    "load_json check_config_class": check_config_json,
    "get_preset_loader": check_get_preset_loader,
    "register_presets": check_register_presets,
    "convert_to_ragged_batch preprocessing_function": check_tensor_utils,
    "scale_loss_for_distribution": check_scale_loss_for_distribution,
    "PipelineModel Functional": check_pipeline_model_bases,
}


@pytest.mark.parametrize("symbol", CHECKS)
def test_private_symbol_behaves_as_expected(symbol, tmp_path):
    check = CHECKS[symbol]
    if "tmp_path" in inspect.signature(check).parameters:
        check = functools.partial(check, tmp_path)
    try:
        check()
    except Exception as error:
        raise AssertionError(
            f"keras_private.{symbol} changed in Keras {keras.__version__} / keras-hub "
            f"{keras_hub.__version__}: {type(error).__name__}: {error}"
        ) from error


def test_every_exported_symbol_is_checked():
    checked = {name for symbols in CHECKS for name in symbols.split()}
    assert set(keras_private.__all__) == checked | {"PRIVATE_ATTRIBUTES"}


INSTANCES = {
    "keras.layers.Layer": lambda: keras.layers.Dense(2),
    "keras.optimizers.Optimizer": lambda: keras.optimizers.SGD(),
    "keras_hub.tokenizers.Tokenizer": lambda: keras_hub.tokenizers.Tokenizer(),
}


@pytest.mark.parametrize(
    "owner, attribute, user",
    keras_private.PRIVATE_ATTRIBUTES,
    ids=[f"{owner}.{attribute}" for owner, attribute, _ in keras_private.PRIVATE_ATTRIBUTES],
)
def test_private_attribute_exists(owner, attribute, user):
    instance = INSTANCES[owner]()
    assert hasattr(instance, attribute), (
        f"{owner}.{attribute} (used by keras_slam/{user}) is gone in Keras "
        f"{keras.__version__} / keras-hub {keras_hub.__version__}"
    )
