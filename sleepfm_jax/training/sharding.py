"""Device mesh and batch sharding helpers.

Training runs `jax.jit` over global arrays laid out on a 2-D mesh with axes `("data", "model")`:
the batch dimension is split over "data"; "model" (size 1 today) leaves room for splitting
parameters later without touching call sites. Mesh axes are `AxisType.Auto`, so XLA propagates
shardings through `a @ b.T` and backward passes without explicit-sharding type errors (JAX >= 0.8
makes `jax.make_mesh` default to Explicit axes).

Every process feeds only its own part of the global batch; `host_local_batch_to_global` turns those
process-local numpy arrays into one global `jax.Array` per key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding

DATA_AXIS = "data"
MODEL_AXIS = "model"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> bool:
  """Joins a multi-process JAX job if asked to; returns whether `jax.distributed` was initialised.

  Call it first thing in `main()`, before any JAX computation. Either name the job explicitly
  (`coordinator_address` "HOST:PORT" of process 0, plus `num_processes` and `process_id`), or pass
  `auto=True` to let `jax.distributed.initialize()` detect them: Cloud TPU VMs (pod slices: from the
  TPU metadata), Slurm (`srun`), Open MPI (`mpirun`). Values given explicitly override detected ones.
  With neither, nothing happens and the job is this single process.

  On a TPU pod slice every host sees all chips without this, but Orbax's multi-host checkpointing
  needs the distributed client, so multi-host training must initialise it.

  Raises:
    ValueError: `num_processes` or `process_id` given without an address or `auto`.
  """
  if not coordinator_address and not auto:
    if num_processes is not None or process_id is not None:
      raise ValueError("num_processes/process_id need a coordinator address (or automatic "
                       "detection); got no coordinator_address and auto=False")
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address or None,
                             num_processes=num_processes, process_id=process_id)
  return True


def make_mesh(
    data: int | None = None,
    model: int = 1,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
  """Builds the `("data", "model")` mesh over all devices (or `devices`).

  Args:
    data: size of the data axis; default: all devices not used by `model`.
    model: size of the model axis (1: parameters replicated).
    devices: the devices to use; default `jax.devices()` (all processes' devices).

  Returns:
    A `Mesh` whose axes are both `AxisType.Auto`.

  Raises:
    ValueError: if `data * model` differs from the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if model < 1 or n % model:
    raise ValueError(f"model axis size {model} must be >= 1 and divide the {n} devices")
  if data is None:
    data = n // model
  if data < 1 or data * model != n:
    raise ValueError(
        f"mesh data={data} x model={model} = {data * model} devices, but {n} are available; "
        "the mesh must use every device"
    )
  return jax.make_mesh(
      (data, model),
      (DATA_AXIS, MODEL_AXIS),
      axis_types=(AxisType.Auto, AxisType.Auto),
      devices=devices,
  )


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch: dimension 0 split over "data", the rest (and "model") replicated."""
  return NamedSharding(mesh, jax.P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of a value held in full by every device (parameters, temperature, step)."""
  return NamedSharding(mesh, jax.P())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places host values, identical on every process, as replicated global arrays on `mesh`.

  Works with several processes (where `jax.device_put` cannot address other processes' devices)
  and for typed PRNG key arrays. Use it for parameters initialised eagerly from a shared seed: that
  is much faster than compiling the initialiser under `jax.jit` on CPU (threefry unrolls).
  """
  sharding = replicated(mesh)

  def put(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree)


def data_axis_size(mesh: Mesh) -> int:
  """Number of batch shards (the size of the "data" axis)."""
  return mesh.shape[DATA_AXIS]


def check_global_batch(global_batch: int, mesh: Mesh) -> None:
  """Raises `ValueError` unless `global_batch` splits evenly over the data axis.

  Args:
    global_batch: the batch size summed over all processes.
    mesh: the training mesh.
  """
  n = data_axis_size(mesh)
  if global_batch < 1 or global_batch % n:
    raise ValueError(
        f"global batch size {global_batch} is not a positive multiple of the data-axis size {n} "
        f"(mesh {dict(mesh.shape)}, {jax.process_count()} process(es)); choose a multiple of {n}"
    )


def _local_data_shards(mesh: Mesh) -> int:
  """Number of distinct data-axis positions among this process's devices."""
  axis = mesh.axis_names.index(DATA_AXIS)
  me = jax.process_index()
  rows = {idx[axis] for idx, d in np.ndenumerate(mesh.devices) if d.process_index == me}
  return len(rows)


def host_local_batch_to_global(
    batch: Mapping[str, Any], mesh: Mesh
) -> dict[str, jax.Array]:
  """Assembles each process's part of a batch into global arrays sharded over "data".

  Every process calls this with its own slice of the global batch (same keys, same per-key shapes
  and dtypes on every process). Each value's leading dimension is the process-local batch; the
  global batch is the concatenation over processes in process order.

  Args:
    batch: mapping key -> array-like `[local_batch, ...]`.
    mesh: the training mesh.

  Returns:
    key -> `jax.Array` of shape `[global_batch, ...]` with `data_sharding(mesh)`.

  Raises:
    ValueError: if a value has no batch dimension, the leading dimensions differ, or the batch
      does not split evenly over the data-axis devices.
  """
  sharding = data_sharding(mesh)
  local = {k: np.asarray(v) for k, v in batch.items()}
  sizes = {k: (v.shape[0] if v.ndim else None) for k, v in local.items()}
  if any(s is None for s in sizes.values()):
    raise ValueError(f"every batch value needs a leading batch dimension; got shapes {sizes}")
  if len(set(sizes.values())) > 1:
    raise ValueError(f"batch values disagree on the local batch size: {sizes}")
  if not local:
    return {}
  local_batch = next(iter(sizes.values()))
  shards = _local_data_shards(mesh)
  n_data = data_axis_size(mesh)
  global_batch = local_batch * n_data // shards if shards else 0
  if shards == 0 or local_batch % shards:
    raise ValueError(
        f"process {jax.process_index()}: local batch {local_batch} does not split over its "
        f"{shards} data-axis shard(s); the global batch must be a multiple of the data-axis size "
        f"{n_data} (mesh {dict(mesh.shape)}, {jax.process_count()} process(es))"
    )
  check_global_batch(global_batch, mesh)
  return {
      k: jax.make_array_from_process_local_data(sharding, v, (global_batch,) + v.shape[1:])
      for k, v in local.items()
  }
