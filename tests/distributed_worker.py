"""One process of the 2-process `jax.distributed` test of the contrastive losses.

Started by `tests/test_distributed.py` through `tests/multiprocess.py`: every process builds the
same fixed problem (a tiny linear encoder per modality and a batch with presence masks), feeds
only its own contiguous slice of the batch through `host_local_batch_to_global`, and writes the
loss, metrics and gradients of both modes (gathered and plain losses) to `OUT/process_<i>.npz`,
which the test compares with a single-process computation.

The helpers `fixed_problem` and `linear_loss` are shared with the in-process 8-device tests.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

MODALITIES = ("bas", "ecg", "resp")


def fixed_problem(batch: int, features: int = 6, dim: int = 4, seed: int = 0):
  """A tiny deterministic problem: `(params, t, batch_dict)` as numpy arrays.

  `params[m]` is the `[features, dim]` weight of modality m's linear encoder. Presence masks are
  uneven on purpose: BAS misses a few windows, ECG is absent for a whole block of `batch // 8`
  windows (a whole device's rows on an 8-device mesh) and RESP is missing at random.
  """
  rng = np.random.default_rng(seed)
  params = {m: rng.normal(size=(features, dim)).astype(np.float32) for m in MODALITIES}
  data = {m: rng.normal(size=(batch, features)).astype(np.float32) for m in MODALITIES}
  bas = np.ones(batch, bool)
  bas[[1, batch // 2 + 1, batch // 2 + 2]] = False
  ecg = rng.random(batch) > 0.2
  block = max(batch // 8, 1)
  ecg[block:2 * block] = False
  resp = rng.random(batch) > 0.35
  for m, mask in zip(MODALITIES, (bas, ecg, resp)):
    data[f"mask_{m}"] = mask
  data["index"] = np.arange(batch, dtype=np.int32)
  return params, np.float32(0.3), data


def linear_loss(params, t, batch, *, mode: str, mesh=None):
  """Encodes each modality linearly and returns the contrastive `(loss, metrics)`.

  With `mesh` the gathered loss is used, otherwise the plain one.
  """
  from sleepfm_jax.training import losses  # pylint: disable=import-outside-toplevel

  embs = {m: batch[m] @ params[m] for m in MODALITIES}
  masks = {m: batch[f"mask_{m}"] for m in MODALITIES}
  if mesh is None:
    return losses.contrastive_loss(embs, masks, t, mode=mode)
  return losses.gathered_loss(embs, masks, t, mesh=mesh, mode=mode)


def flatten_results(prefix: str, loss, metrics, grads) -> dict[str, np.ndarray]:
  """Flat `name -> array` view of a loss evaluation, as written to the result files."""
  g_params, g_t = grads
  out = {f"{prefix}/loss": loss, f"{prefix}/grad_t": g_t}
  out.update({f"{prefix}/grad_{m}": g for m, g in g_params.items()})
  out.update({f"{prefix}/metric/{k}": v for k, v in metrics.items()})
  return {k: np.asarray(v) for k, v in out.items()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", required=True)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--coordinator", required=True)
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--process_id", type=int, required=True)
  args = parser.parse_args(argv)

  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.training import losses, sharding  # pylint: disable=import-outside-toplevel

  # CPU cross-process collectives need no set-up here: jax 0.10's default
  # `jax_cpu_collectives_implementation` is "gloo" (the other choices are "mpi" and "megascale").
  jax.distributed.initialize(
      coordinator_address=args.coordinator,
      num_processes=args.num_processes,
      process_id=args.process_id,
      initialization_timeout=60,
  )
  print(f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} local, "
        f"{jax.device_count()} global devices", flush=True)
  mesh = sharding.make_mesh()
  params, t, data = fixed_problem(args.batch)
  local = args.batch // jax.process_count()
  lo = jax.process_index() * local
  batch = sharding.host_local_batch_to_global(
      {k: v[lo:lo + local] for k, v in data.items()}, mesh)
  # Process i's rows must land at global rows [i * local, (i + 1) * local).
  index = multihost_utils.process_allgather(batch["index"], tiled=True)
  if not np.array_equal(index, np.arange(args.batch)):
    raise RuntimeError(f"global batch order is {index}, expected 0..{args.batch - 1}")
  params = jax.device_put(params, sharding.replicated(mesh))
  t = jax.device_put(t, sharding.replicated(mesh))

  results = {}
  for mode in losses.MODES:
    for name, use_mesh in (("gathered", mesh), ("plain", None)):
      fn = jax.jit(jax.value_and_grad(
          lambda p, tt, b, mode=mode, m=use_mesh: linear_loss(p, tt, b, mode=mode, mesh=m),
          argnums=(0, 1), has_aux=True))
      (loss, metrics), grads = fn(params, t, batch)
      # Outputs are replicated; every process reads its first local copy.
      value = jax.tree.map(lambda a: a.addressable_data(0), (loss, metrics, grads))
      results.update(flatten_results(f"{name}/{mode}", *value))
  path = os.path.join(args.out, f"process_{jax.process_index()}.npz")
  np.savez(path, **results)
  print(f"wrote {len(results)} arrays to {path}", flush=True)
  jax.distributed.shutdown()
  return 0


if __name__ == "__main__":
  sys.exit(main())
