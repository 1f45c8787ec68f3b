"""Shared checks for keras-slam tests (in the spirit of keras-hub's test_case).

Every layer, loss and model test uses these:

- `run_layer_test`: build, call, output shapes, trainable weight count.
- `assert_serialization_roundtrip`: get_config/from_config and `.keras`
  save/load give identical outputs.
- `assert_padding_invariant`: a padded batch gives, at every real position,
  the outputs of each item run alone.
- `assert_backend_parity`: the same weights on another backend (a worker
  subprocess) give the same outputs.
- `assert_mixed_precision_finite`: mixed_bfloat16 call gives finite outputs.
- `gradients`: d loss / d variables on the current backend.

One call per model runs them all (as keras-hub's TestCase does):
`run_backbone_test`, `run_task_test` (adds one `fit` on a tf.data dataset
whose batches differ in length) and `run_preset_test` (save_to_preset /
from_preset keep the outputs).

Conventions. A *call function* takes a dict of numpy inputs and returns a
dict of outputs; each output is either an array (compared whole) or a pair
`(array, mask)` where `mask` (B, T) marks the real positions along axis 1
(only those are compared). A *builder* is a module-level function
`builder(inputs) -> (obj, call_fn)` that returns a built Keras object whose
weights fully determine `call_fn`; it is named by "module:function" so the
parity worker can import it on another backend. Weights travel keyed by
variable path (`variables_by_path`), so builders name their layers or let
`build_case` give automatic names as a fresh process would.
"""

import collections
import contextlib
import importlib
import os
import tempfile

import keras
import numpy as np
from keras.src.backend.common import global_state

BACKENDS = ("jax", "tensorflow", "torch")
# Wall-clock limit for a test's subprocess (parity and distribution workers,
# guides, recipes, benchmarks): a guard against a hang, not a speed check, so
# it leaves room for a loaded 2-core machine (the main-job test takes ~2 min
# idle, 10+ under CI's two lanes and other load).
SUBPROCESS_TIMEOUT_S = 2400


def backend():
    return keras.backend.backend()


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def random_padding_mask(rng, batch_size, max_length, min_length=1):
    """(B, T) float32 mask with random lengths; one item is always full."""
    lengths = rng.integers(min_length, max_length + 1, size=batch_size)
    lengths[0] = max_length
    return (np.arange(max_length)[None, :] < lengths[:, None]).astype("float32")


def normalize_outputs(outputs):
    """Turns a call function's result into {name: (array, mask_or_None)}."""
    if not isinstance(outputs, dict):
        outputs = {"output": outputs}
    normalized = {}
    for name, value in outputs.items():
        if isinstance(value, tuple):
            array, mask = value
            normalized[name] = (to_numpy(array), to_numpy(mask))
        else:
            normalized[name] = (to_numpy(value), None)
    return normalized


def assert_outputs_close(expected, actual, atol, rtol=0.0, where=""):
    """Compares two normalized output dicts (see `normalize_outputs`)."""
    assert expected.keys() == actual.keys(), (expected.keys(), actual.keys())
    for name in expected:
        (a, mask_a), (b, mask_b) = expected[name], actual[name]
        assert a.shape == b.shape, f"{where}{name}: shape {a.shape} vs {b.shape}"
        if mask_a is not None:
            np.testing.assert_array_equal(mask_a, mask_b, err_msg=f"{where}{name}")
            keep = mask_a.astype(bool)
            a, b = a[keep], b[keep]
        np.testing.assert_allclose(
            a.astype("float64"),
            b.astype("float64"),
            atol=atol,
            rtol=rtol,
            err_msg=f"{where}{name}",
        )


def flatten_shapes(shapes):
    """A shape tuple, or a list/tuple/dict of them -> list of tuples, in
    `keras.tree.flatten` order (dicts by sorted key)."""
    if isinstance(shapes, dict):
        return [s for key in sorted(shapes) for s in flatten_shapes(shapes[key])]
    if all(d is None or isinstance(d, int) for d in shapes):
        return [tuple(shapes)]
    return [s for item in shapes for s in flatten_shapes(item)]


def run_layer_test(
    layer, inputs, expected_output_shapes, expected_num_trainable_weights, **call_kwargs
):
    """Builds and calls `layer(**inputs, **call_kwargs)`.

    Args:
        layer: an unbuilt layer instance.
        inputs: dict of numpy arrays passed as keyword arguments.
        expected_output_shapes: a shape tuple, or a tuple/dict of them
            matching the structure of the layer's output.
        expected_num_trainable_weights: number of trainable variables.
    Returns:
        The layer's output.
    """
    outputs = layer(**inputs, **call_kwargs)
    actual = [tuple(x.shape) for x in keras.tree.flatten(outputs)]
    assert actual == flatten_shapes(expected_output_shapes), (actual, expected_output_shapes)
    assert len(layer.trainable_weights) == expected_num_trainable_weights, len(
        layer.trainable_weights
    )
    assert layer.built
    return outputs


def with_non_finite_padding(inputs, padded):
    """A copy of `inputs` whose float arrays named in `padded` hold NaN, +inf
    and -inf (in turn) at every padded position (integer arrays unchanged)."""
    poisoned = dict(inputs)
    for key, mask_key in padded.items():
        array = inputs[key]
        if not np.issubdtype(array.dtype, np.floating):
            continue
        pad = inputs[mask_key] <= 0
        pad = pad.reshape(pad.shape + (1,) * (array.ndim - pad.ndim))
        pad = np.broadcast_to(pad, array.shape)
        cycle = np.array([np.nan, np.inf, -np.inf], array.dtype)
        garbage = cycle[np.arange(array.size).reshape(array.shape) % len(cycle)]
        poisoned[key] = np.where(pad, garbage, array)
    return poisoned


def compiled(call_fn):
    """`call_fn` jit-compiled whole on JAX, as is on TensorFlow and torch.

    JAX's eager dispatch compiles every primitive on its own for each new
    input shape: the tiny SLAM backbone took 5-9 CPU s per new shape op by
    op, 2.2 s compiled whole. Weights enter as constants, so the object must
    be built and `call_fn` must not assign variables (an inference call)."""
    if backend() != "jax":
        return call_fn
    import jax

    return jax.jit(call_fn)


def assert_padding_invariant(call_fn, inputs, padded, atol=1e-5, compile_items=True):
    """Checks that padding never changes the outputs at real positions.

    The batch runs twice: as given, and with NaN/inf at every padded
    position of its float arrays (`with_non_finite_padding`); both must give
    each item's outputs alone, so padding is removed by a select, never by a
    multiply (0 * NaN = NaN).

    Args:
        call_fn: dict of numpy inputs -> outputs (see module docstring).
        inputs: dict of batched numpy arrays.
        padded: dict {array_key: mask_key}: each array is padded along axis 1
            as its mask (B, T) says; masks map to themselves implicitly.
            Arrays not named here are sliced per item.
        atol: max |diff| allowed (fp32 default 1e-5, DESIGN.md).
        compile_items: run each item alone through `compiled(call_fn)`
            (the batches stay eager, so the first call builds the object);
            False for a call that assigns a variable or uses numpy.
    """
    item_fn = compiled(call_fn) if compile_items else call_fn
    # Each item alone runs once per distinct input: cutting a padded item to
    # its length drops the NaN/inf, so the second batch's items are the
    # first's (compared, not assumed) and their outputs are reused.
    runs = []
    for padding, batch in (
        ("", inputs),
        ("non-finite padding, ", with_non_finite_padding(inputs, padded)),
    ):
        _assert_batch_matches_items(call_fn, item_fn, batch, padded, atol, padding, runs)


def _run_alone(item_fn, single, runs):
    """item_fn(single), reusing the outputs of an equal input in `runs`
    (a list of (inputs, outputs) pairs it extends)."""
    for seen, outputs in runs:
        if seen.keys() == single.keys() and all(
            seen[key].shape == value.shape and np.array_equal(seen[key], value, equal_nan=True)
            for key, value in single.items()
        ):
            return outputs
    outputs = normalize_outputs(item_fn(single))
    runs.append((single, outputs))
    return outputs


def _assert_batch_matches_items(call_fn, item_fn, inputs, padded, atol, where, runs):
    batched = normalize_outputs(call_fn(inputs))
    batch_size = next(iter(inputs.values())).shape[0]
    mask_keys = set(padded.values())
    for i in range(batch_size):
        single = {}
        for key, value in inputs.items():
            item = value[i : i + 1]
            length_key = key if key in mask_keys else padded.get(key)
            if length_key is not None:
                length = int(np.sum(inputs[length_key][i] > 0))
                item = item[:, :length]
            single[key] = item
        alone = _run_alone(item_fn, single, runs)
        for name, (array, mask) in batched.items():
            alone_array, alone_mask = alone[name]
            if mask is None:
                np.testing.assert_allclose(
                    array[i], alone_array[0], atol=atol, err_msg=f"{where}item {i} {name}"
                )
                continue
            real = mask[i].astype(bool)
            alone_real = alone_mask[0].astype(bool)
            assert real.sum() == alone_real.sum(), (
                f"{where}item {i} {name}: {real.sum()} real positions in the batch, "
                f"{alone_real.sum()} alone"
            )
            np.testing.assert_allclose(
                array[i][real],
                alone_array[0][alone_real],
                atol=atol,
                err_msg=f"{where}item {i} {name}",
            )


def resolve_builder(builder):
    module_name, function_name = builder.split(":")
    return getattr(importlib.import_module(module_name), function_name)


# keras.src.utils.naming's counters of automatic layer names.
_NAME_UIDS = "object_name_uids"


@contextlib.contextmanager
def fresh_auto_names():
    """Layers named automatically get the names a fresh process gives them.

    Variable paths come from layer names; this makes a builder's paths the
    same in the test process and in the parity worker.
    """
    saved = global_state.get_global_attribute(_NAME_UIDS)
    global_state.set_global_attribute(_NAME_UIDS, collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute(_NAME_UIDS, saved)


def build_case(builder, inputs):
    """Runs a "module:function" builder with fresh auto names -> (obj, call_fn)."""
    with fresh_auto_names():
        return resolve_builder(builder)(inputs)


def variables_by_path(obj):
    """{variable.path: variable} for every weight of `obj`.

    Paths, unlike `get_weights()` positions, are the same on every backend
    (torch lists a multi-branch functional model's weights in another
    order). A keras-hub Task on torch tracks only the backbone layers its
    graph uses, so a held `backbone` adds all of its weights.
    """
    weights = list(obj.weights)
    backbone = getattr(obj, "backbone", None)
    if isinstance(backbone, keras.layers.Layer):
        weights += backbone.weights
    by_path = {}
    for variable in weights:
        other = by_path.setdefault(variable.path, variable)
        if other is not variable:
            raise ValueError(f"two weights of {obj.name} share the path {variable.path!r}")
    return by_path


def save_case(directory, obj, inputs):
    """Writes an object's weights (keyed by path) and the inputs to npz files."""
    weights_path = os.path.join(directory, "weights.npz")
    inputs_path = os.path.join(directory, "inputs.npz")
    weights = {path: to_numpy(v) for path, v in variables_by_path(obj).items()}
    np.savez(weights_path, **weights)
    np.savez(inputs_path, **inputs)
    return weights_path, inputs_path


def load_weights(obj, weights_path):
    """Assigns the weights `save_case` wrote, matched by variable path."""
    variables = variables_by_path(obj)
    with np.load(weights_path) as data:
        missing = sorted(set(variables) - set(data.files))
        extra = sorted(set(data.files) - set(variables))
        if missing or extra:
            raise ValueError(
                f"{weights_path} does not match {obj.name}'s weights: "
                f"missing {missing}, extra {extra}"
            )
        for path, variable in variables.items():
            variable.assign(data[path])


def next_backend(name=None):
    """The backend whose worker checks parity from `name`'s run.

    The three runs form a cycle (jax->tensorflow->torch->jax), so every pair
    of backends is compared once per suite.
    """
    name = name or backend()
    return BACKENDS[(BACKENDS.index(name) + 1) % len(BACKENDS)]


def assert_backend_parity(builder, inputs, atol=1e-4, parity_worker=None, built=None):
    """Same weights, same inputs, another backend: same outputs.

    Args:
        builder: "module:function" (see module docstring).
        inputs: dict of numpy arrays.
        atol: cross-backend tolerance (1e-4 in DESIGN.md).
        parity_worker: the `parity_worker` fixture (a running worker on
            `next_backend()`).
        built: (obj, call_fn) that `build_case(builder, inputs)` returned,
            to check instead of building another (its current weights go to
            the worker).
    """
    obj, call_fn = built or build_case(builder, inputs)
    expected = normalize_outputs(call_fn(inputs))
    with tempfile.TemporaryDirectory() as directory:
        weights_path, inputs_path = save_case(directory, obj, inputs)
        output_path = os.path.join(directory, "outputs.npz")
        parity_worker.run(builder, weights_path, inputs_path, output_path)
        with np.load(output_path) as data:
            actual = {}
            for name in expected:
                mask = data.get(name + "/mask")
                actual[name] = (data[name], mask)
    assert_outputs_close(
        expected,
        actual,
        atol=atol,
        where=f"{backend()} vs {parity_worker.backend}: ",
    )


def assert_serialization_roundtrip(obj, call_fn_of, inputs, atol=1e-6):
    """get_config/from_config and .keras save/load reproduce the outputs.

    Args:
        obj: a built layer or model.
        call_fn_of: obj -> call function (see module docstring).
        inputs: dict of numpy arrays.
    """
    expected = normalize_outputs(call_fn_of(obj)(inputs))
    config = keras.saving.serialize_keras_object(obj)
    clone = keras.saving.deserialize_keras_object(config)
    call_fn_of(clone)(inputs)  # builds the clone
    clone.set_weights(obj.get_weights())
    assert_outputs_close(expected, normalize_outputs(call_fn_of(clone)(inputs)), atol)
    holder = obj if isinstance(obj, keras.Model) else LayerHolder(obj)
    if holder is not obj:
        holder(inputs)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "object.keras")
        holder.save(path)
        restored = keras.saving.load_model(path)
    if holder is not obj:
        restored = restored.layer
    assert_outputs_close(
        expected, normalize_outputs(call_fn_of(restored)(inputs)), atol, where=".keras: "
    )


@keras.saving.register_keras_serializable(package="keras_slam_tests")
class LayerHolder(keras.Model):
    """Wraps a single layer so it can go through `.keras` save/load."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, inputs):
        return self.layer(**inputs)

    def get_config(self):
        config = super().get_config()
        config["layer"] = keras.saving.serialize_keras_object(self.layer)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


def gradients(variables, loss_fn, compiled=True):
    """d loss_fn() / d variables as numpy arrays, on the current backend
    (zeros for a variable the loss does not reach).

    JAX compiles the whole gradient once (op by op, its eager dispatch
    compiled every primitive of the forward and backward pass on its own, a
    third more CPU); `compiled=False` keeps it op by op, for a test that
    compares two formulations to 1e-5 which XLA would fuse differently."""
    if backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, variables)
        return [np.zeros(v.shape) if g is None else np.asarray(g) for g, v in zip(grads, variables)]
    if backend() == "torch":
        for v in variables:
            v.value.grad = None
        loss_fn().backward()
        return [
            np.zeros(v.shape) if v.value.grad is None else v.value.grad.numpy() for v in variables
        ]
    import jax

    def stateless(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return loss_fn()

    gradient = jax.grad(stateless)
    if compiled:
        gradient = jax.jit(gradient)
    return [np.asarray(g) for g in gradient([v.value for v in variables])]


def assert_mixed_precision_finite(builder, inputs):
    """Under mixed_bfloat16 the call runs and every output is finite."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        _, call_fn = resolve_builder(builder)(inputs)
        outputs = normalize_outputs(call_fn(inputs))
    finally:
        keras.config.set_dtype_policy(previous)
    for name, (array, mask) in outputs.items():
        values = array[mask.astype(bool)] if mask is not None else array
        assert np.all(np.isfinite(values.astype("float32"))), f"{name} not finite"


def call_with_unknown_lengths(function, *arrays, known_lengths=()):
    """`function(*arrays)` compiled as a training step sees them, as numpy.

    TensorFlow traces it once with batch and time dimensions unknown (None),
    as a tf.data pipeline with several length buckets publishes them (the
    arrays at the indices `known_lengths` keep a static time dimension, as a
    fixed-length token field does), and compiles with XLA as `fit` does; JAX
    jit-compiles it for these shapes; torch runs it eagerly.
    """
    if backend() == "tensorflow":
        import tensorflow as tf

        signature = [
            tf.TensorSpec((None, a.shape[1] if i in known_lengths else None) + a.shape[2:], a.dtype)
            for i, a in enumerate(arrays)
        ]
        function = tf.function(function, input_signature=signature, jit_compile=True)
    elif backend() == "jax":
        import jax

        function = jax.jit(function)
    return keras.tree.map_structure(to_numpy, function(*arrays))


def run_preset_test(obj, call_fn_of, inputs, preset_dir, load=None):
    """`obj.save_to_preset(preset_dir)` then `load(preset_dir)` (default
    `type(obj).from_preset`) gives an object of the same class and outputs.

    Returns:
        The loaded object.
    """
    obj.save_to_preset(preset_dir)
    restored = (load or type(obj).from_preset)(preset_dir)
    assert type(restored) is type(obj), type(restored)
    expected = normalize_outputs(call_fn_of(obj)(inputs))
    actual = normalize_outputs(call_fn_of(restored)(inputs))
    assert_outputs_close(expected, actual, atol=1e-6, where="preset: ")
    return restored


def _run_model_checks(
    builder,
    call_fn_of,
    inputs,
    padded,
    expected_output_shapes,
    parity_worker,
    preset_dir,
    load,
):
    """The checks shared by backbones and tasks; returns the built model."""
    model, call_fn = build_case(builder, inputs)
    outputs = normalize_outputs(call_fn(inputs))
    shapes = {name: array.shape for name, (array, _) in outputs.items()}
    assert shapes == expected_output_shapes, shapes
    assert_padding_invariant(call_fn, inputs, padded)
    assert_backend_parity(builder, inputs, parity_worker=parity_worker, built=(model, call_fn))
    assert_serialization_roundtrip(model, call_fn_of, inputs)
    run_preset_test(model, call_fn_of, inputs, preset_dir, load)
    assert_mixed_precision_finite(builder, inputs)
    return model


def run_backbone_test(
    builder,
    call_fn_of,
    inputs,
    padded,
    expected_output_shapes,
    parity_worker,
    preset_dir,
):
    """Every shared check of a backbone, in one call.

    Output shapes, padding invariance (also with NaN/inf padding), parity
    with the next backend, config and `.keras` round trip, preset round
    trip through `keras_hub.models.Backbone.from_preset`, finite outputs
    under mixed_bfloat16.

    Args:
        builder: "module:function" -> (backbone, call_fn) (module docstring).
        call_fn_of: backbone -> call function.
        inputs: dict of batched numpy arrays.
        padded: {array_key: mask_key}, as `assert_padding_invariant`.
        expected_output_shapes: {output name: shape} of the call function.
        parity_worker: the `parity_worker` fixture.
        preset_dir: an empty directory.
    """
    import keras_hub

    _run_model_checks(
        builder,
        call_fn_of,
        inputs,
        padded,
        expected_output_shapes,
        parity_worker,
        preset_dir,
        keras_hub.models.Backbone.from_preset,
    )


def run_task_test(
    builder,
    call_fn_of,
    inputs,
    padded,
    expected_output_shapes,
    parity_worker,
    preset_dir,
    train_batches,
):
    """`run_backbone_test`'s checks for a task (preset through the task's own
    `from_preset`), plus one `fit` epoch on variable-length tf.data batches.

    Args:
        train_batches: batches for `fit` (dicts or (x, y) tuples of numpy
            arrays) whose lengths differ, as bucketed pipeline output; the
            compiled task must give a finite loss and change its weights.
        Others: as `run_backbone_test`.
    """
    task = _run_model_checks(
        builder,
        call_fn_of,
        inputs,
        padded,
        expected_output_shapes,
        parity_worker,
        preset_dir,
        None,
    )
    assert_fit_on_variable_lengths(task, train_batches)


def assert_fit_on_variable_lengths(model, batches):
    """One `fit` epoch on a tf.data dataset of `batches` whose axes that
    differ between batches have unknown size, as a bucketed pipeline's:
    a finite loss and changed trainable weights."""
    import tensorflow as tf

    def spec(*arrays):
        shape = [
            sizes[0] if len(set(sizes)) == 1 else None
            for sizes in zip(*(array.shape for array in arrays))
        ]
        return tf.TensorSpec(shape, tf.as_dtype(arrays[0].dtype))

    signature = keras.tree.map_structure(spec, *batches)
    dataset = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=signature)
    before = [to_numpy(weight) for weight in model.trainable_weights]
    loss = model.fit(dataset, epochs=1, verbose=0).history["loss"][-1]
    assert np.isfinite(loss), loss
    after = [to_numpy(weight) for weight in model.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))


def train_step_traces(model, fit, shape_of):
    """Runs `fit()` with `model.train_step` wrapped; returns `shape_of(batch)`
    for every Python run of the step. Under jit (JAX, TensorFlow) the step
    runs in Python only when it is traced, so the list counts the traces
    (compiles); torch runs it eagerly at every batch."""
    traces = []
    train_step = model.train_step

    def counting_train_step(state_or_data, *data):
        traces.append(shape_of(data[-1] if data else state_or_data))
        return train_step(state_or_data, *data)

    model.train_step = counting_train_step
    try:
        fit()
    finally:
        model.train_step = train_step
    return traces


def assert_one_compile_per_bucket(traces, bucket_shapes, num_batches):
    """JAX traces the step once per bucket shape (in order of first use);
    TensorFlow traces it with the bucketed lengths unknown (None), at most
    once per bucket; torch runs it eagerly, once per batch."""
    if backend() == "jax":
        assert traces == list(bucket_shapes), traces
    elif backend() == "tensorflow":
        assert len(traces) <= len(bucket_shapes), traces
        assert all(None in shape for shape in traces), traces
    else:
        assert len(traces) == num_batches, traces
