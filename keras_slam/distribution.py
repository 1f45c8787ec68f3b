"""`--mesh`: the devices a recipe trains on, and the input shards each host reads.

    --mesh 8      data parallel over 8 devices
    --mesh 2x4    2 (data) x 4 (model): weights sharded by the layout map (JAX)

Every recipe adds the flag with `add_mesh_argument(parser)` and calls
`apply_mesh(args.mesh, Task.get_layout_map)` before it builds a model; it
holds for the rest of the process:

- JAX: `keras.distribution.DataParallel` (model axis 1) or `ModelParallel`
  with `get_layout_map(DeviceMesh((data, model), ("batch", "model")))`, over
  the first data x model devices of `keras.distribution.list_devices()`.
  Each batch is split over the "batch" axis, so every batch size must
  divide by `data` (per host: `data` / hosts); the pipeline rounds its bucket
  batch sizes up to that multiple (`batch_multiple`). On several hosts every
  host runs the same command with Keras' variables set
  (`KERAS_DISTRIBUTION_NUM_PROCESSES`, and off Cloud TPU
  `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_PROCESS_ID`):
  `keras.distribution.initialize()` runs first, and the mesh spans every
  host's devices (the model axis within one host).
- TensorFlow: `tf.distribute.MirroredStrategy` over `data` GPUs, made the
  default strategy; on a host without GPUs over `data` logical CPUs split
  from its CPU (a simulation, as XLA_FLAGS does for JAX). No model axis.
  Batch sizes are rounded up to a multiple of `data` too, so every replica
  gets an equal part.
- torch: refused.

`pipeline.host_shards(paths)` lists the training shards of this host: on a
multi-process JAX run process i of n reads the files i::n
(`pipeline.list_shards(paths, num_hosts, host_index)`), so the hosts read
disjoint shards that together cover all, and a host's batches are its part
of the global batch (global batch = hosts x the recipe's batch). Keras'
own dataset auto-sharding (every host reads every file and keeps 1/n of
the batches) is turned off. Vocabularies and evaluation read all shards.
"""

import os

import keras

DATA_AXIS, MODEL_AXIS = "batch", "model"
# Keras' settings of a multi-host JAX run (`keras.distribution.initialize`).
MULTI_HOST_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


def add_mesh_argument(parser):
    """Adds `--mesh DATA[xMODEL]` (default: one device) to an argparse parser."""
    parser.add_argument(
        "--mesh",
        default=None,
        help="devices as DATA or DATAxMODEL, e.g. 8 (data parallel) or 2x4 (2 data x 4 "
        "model, JAX); default: one device",
    )


def parse_mesh(text):
    """Mesh flag -> (data, model) devices: "2x4" -> (2, 4), "8" -> (8, 1)."""
    parts = str(text).lower().split("x")
    if len(parts) not in (1, 2) or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"--mesh {text!r}: expected DATA or DATAxMODEL, e.g. 8 or 2x4")
    data, model = (int(part) for part in parts + ["1"] * (2 - len(parts)))
    return data, model


def apply_mesh(mesh, get_layout_map=None):
    """Sets up `--mesh` for the models built afterwards (module docstring).

    Args:
        mesh: the flag's text ("8", "2x4") or None (one device: nothing set).
        get_layout_map: the task's `get_layout_map(device_mesh)`, needed
            when the model axis is > 1.
    Returns:
        The `keras.distribution.Distribution` (JAX), the
        `tf.distribute.Strategy` (TensorFlow), or None.
    """
    if mesh is None:
        return None
    data, model = parse_mesh(mesh)
    backend = keras.backend.backend()
    if backend == "jax":
        return _apply_jax_mesh(mesh, data, model, get_layout_map)
    if backend == "tensorflow":
        return _apply_mirrored_strategy(mesh, data, model)
    raise ValueError(
        f"--mesh {mesh}: the {backend} backend has no multi-device training here; "
        "use KERAS_BACKEND=jax (keras.distribution) or tensorflow (MirroredStrategy)"
    )


def _apply_jax_mesh(mesh, data, model, get_layout_map):
    import jax

    if any(name in os.environ for name in MULTI_HOST_VARIABLES):
        keras.distribution.initialize()  # reads them; before JAX computes anything
    if model > 1 and get_layout_map is None:
        raise ValueError(f"--mesh {mesh}: this model has no layout map; use --mesh {data}")
    devices = keras.distribution.list_devices()
    if data * model > len(devices):
        raise ValueError(
            f"--mesh {mesh} needs {data * model} devices; JAX has {len(devices)} "
            f"({devices[0]}, ...). On a CPU, simulate them with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={data * model}"
        )
    if data % jax.process_count():
        raise ValueError(
            f"--mesh {mesh}: the data axis ({data}) does not split evenly over "
            f"{jax.process_count()} hosts; use a multiple of {jax.process_count()}"
        )
    if jax.process_count() > 1 and model > jax.local_device_count():
        raise ValueError(
            f"--mesh {mesh}: the model axis ({model}) spans hosts of "
            f"{jax.local_device_count()} devices each; keep it within one host"
        )
    devices = devices[: data * model]
    if model == 1:
        distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    else:
        device_mesh = keras.distribution.DeviceMesh((data, model), (DATA_AXIS, MODEL_AXIS), devices)
        distribution = keras.distribution.ModelParallel(
            layout_map=get_layout_map(device_mesh),
            batch_dim_name=DATA_AXIS,
            auto_shard_dataset=False,
        )
    keras.distribution.set_distribution(distribution)
    print(f"--mesh {mesh}: {type(distribution).__name__} over {data * model} devices", flush=True)
    return distribution


def _apply_mirrored_strategy(mesh, data, model):
    import tensorflow as tf

    if model > 1:
        raise ValueError(
            f"--mesh {mesh}: TensorFlow trains data parallel only (MirroredStrategy); "
            f"use --mesh {data * model}, or KERAS_BACKEND=jax for a model axis"
        )
    kind = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    if kind == "CPU" and data > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            configuration = [tf.config.LogicalDeviceConfiguration()] * data
            tf.config.set_logical_device_configuration(cpu, configuration)
        except RuntimeError as error:
            raise ValueError(
                f"--mesh {mesh}: TensorFlow started before the CPU could be split into "
                f"{data} devices; apply the mesh before anything runs on TensorFlow"
            ) from error
    devices = tf.config.list_logical_devices(kind)
    if data > len(devices):
        raise ValueError(
            f"--mesh {mesh} needs {data} devices; TensorFlow has {len(devices)} {kind}s"
        )
    strategy = tf.distribute.MirroredStrategy([device.name for device in devices[:data]])
    tf.distribute.experimental_set_strategy(strategy)
    print(f"--mesh {mesh}: MirroredStrategy over {data} {kind}s", flush=True)
    return strategy


def processes():
    """(process count, this process's index) of a multi-process JAX run; (1, 0) else."""
    if keras.backend.backend() != "jax":
        return 1, 0
    import jax

    return jax.process_count(), jax.process_index()


def batch_multiple():
    """Rows a host's batch must be a multiple of: the data-parallel devices it
    feeds (JAX: the mesh's data axis / hosts; TF: the strategy's replicas); 1
    without `--mesh`."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.distribute.get_strategy().num_replicas_in_sync
    current = keras.distribution.distribution()
    if current is None:
        return 1
    mesh = current.device_mesh
    data = mesh.shape[mesh.axis_names.index(current.batch_dim_name)]
    return data // processes()[0]
