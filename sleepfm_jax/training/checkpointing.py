"""Checkpoints: the only module that imports Orbax.

A training checkpoint is one Orbax step directory with up to four items:

* ``model``     – the model's parameters and batch statistics as a pure dict of arrays
                  (``nnx.to_pure_dict``), enough to embed data without the optimizer;
* ``optimizer`` – the optimizer state (pure dict), needed only to resume training;
* ``data_iter`` – the Grain iterator state, one JSON file per process;
* ``meta``      – JSON: step, config, montage, anything a reader needs to rebuild the model.

Two managers live under a work directory: ``checkpoints/`` keeps the latest ``max_to_keep``
steps (what ``--resume`` uses) and ``best/`` keeps the single step with the lowest validation loss.
Saves are asynchronous; call :meth:`Checkpointer.wait` before reading what was written and before
the process exits. Every process must call save and restore (Orbax coordinates the writes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

ITEMS = ("model", "optimizer", "data_iter", "meta")


def _abstract(tree: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
  """Abstract arrays (shape, dtype and, when given, one sharding for all) to restore `tree`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


class Checkpointer:
  """Latest-N and best-by-validation-loss checkpoints under one work directory."""

  def __init__(self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.workdir = os.path.abspath(workdir)
    opts = dict(enable_async_checkpointing=async_save, create=True)
    self._latest = ocp.CheckpointManager(
        os.path.join(self.workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, **opts),
        item_names=ITEMS,
    )
    self._best = ocp.CheckpointManager(
        os.path.join(self.workdir, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m["val_loss"], best_mode="min", **opts
        ),
        item_names=ITEMS,
    )

  # -- writing ---------------------------------------------------------------------------------
  def _args(self, model, optimizer, data_iter, meta):
    items = {
        "model": ocp.args.StandardSave(model),
        "meta": ocp.args.JsonSave(_jsonable(meta)),
    }
    if optimizer is not None:
      items["optimizer"] = ocp.args.StandardSave(optimizer)
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    return ocp.args.Composite(**items)

  def save(self, step: int, *, model, optimizer=None, data_iter=None, meta=None, force=False):
    """Saves the latest checkpoint (subject to the manager's interval; `force` always saves)."""
    meta = dict(meta or {}, step=int(step))
    return self._latest.save(
        int(step), args=self._args(model, optimizer, data_iter, meta), force=force
    )

  def save_best(self, step: int, val_loss: float, *, model, meta=None):
    """Keeps `model` if `val_loss` is the lowest seen so far (no optimizer or data state)."""
    meta = dict(meta or {}, step=int(step), val_loss=float(val_loss))
    return self._best.save(
        int(step), args=self._args(model, None, None, meta), metrics={"val_loss": float(val_loss)}
    )

  def wait(self):
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def close(self):
    self.wait()
    self._latest.close()
    self._best.close()

  # -- reading ---------------------------------------------------------------------------------
  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def best_step(self) -> int | None:
    return self._best.best_step()

  def restore(self, step: int, *, model, optimizer=None, data_iter=None,
              sharding: jax.sharding.Sharding | None = None) -> dict:
    """Restores a latest-manager step into trees shaped like `model`/`optimizer`.

    `model` and `optimizer` are pure-dict templates (arrays or ShapeDtypeStructs); the restored
    arrays are placed with `sharding` (e.g. replicated over the mesh). `data_iter`, if given, is
    restored in place.
    """
    items = {
        "model": ocp.args.StandardRestore(_abstract(model, sharding)),
        "meta": ocp.args.JsonRestore(),
    }
    if optimizer is not None:
      items["optimizer"] = ocp.args.StandardRestore(_abstract(optimizer, sharding))
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    out = self._latest.restore(int(step), args=ocp.args.Composite(**items))
    return {k: out[k] for k in items}


def _jsonable(obj: Any) -> Any:
  """Converts numpy scalars/arrays and tuples so that the meta item is plain JSON."""
  if isinstance(obj, Mapping):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  return obj


def find_checkpoint(path: str) -> tuple[str, int]:
  """Resolves a user-given checkpoint path to (manager directory, step).

  Accepts a work directory (uses ``best/`` if present, else the latest step of ``checkpoints/``),
  a manager directory (``.../checkpoints``, ``.../best``, or any directory of step directories,
  e.g. a converted checkpoint), or a step directory (``.../123``).
  """
  path = os.path.abspath(path)
  base = os.path.basename(path.rstrip("/"))
  if base.isdigit() and os.path.isdir(os.path.join(path, "model")):
    return os.path.dirname(path), int(base)
  candidates = [path] if os.path.basename(path) in ("best", "checkpoints") else [
      os.path.join(path, "best"), os.path.join(path, "checkpoints"), path]
  for cand in candidates:
    if os.path.isdir(cand):
      steps = sorted(int(d) for d in os.listdir(cand)
                     if d.isdigit() and os.path.isdir(os.path.join(cand, d, "model")))
      if steps:
        return cand, steps[-1]
  raise FileNotFoundError(f"{path}: no checkpoint found (expected a work directory with best/ or "
                          "checkpoints/, a manager directory, or a step directory)")


def load_meta(path: str) -> dict:
  """The `meta` item (config, channels, preprocessing, step, ...) of a checkpoint location."""
  directory, step = find_checkpoint(path)
  with ocp.CheckpointManager(directory, item_names=ITEMS,
                             options=ocp.CheckpointManagerOptions(create=False)) as mgr:
    out = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  return dict(out["meta"])


def load_model(path: str, template: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
  """Restores the `model` item of a checkpoint location into the structure of `template`.

  `template` is a pure dict (arrays or ShapeDtypeStructs, e.g. from `nnx.eval_shape`); arrays come
  back with `sharding` (default: the first local device). No optimizer state is read.
  """
  directory, step = find_checkpoint(path)
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with ocp.CheckpointManager(directory, item_names=ITEMS,
                             options=ocp.CheckpointManagerOptions(create=False)) as mgr:
    out = mgr.restore(step, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(_abstract(template, sharding))))
  return out["model"]


def save_model_checkpoint(directory: str, step: int, model: Any, meta: Mapping[str, Any]) -> str:
  """Writes a model-only checkpoint (e.g. converted from PyTorch) that export/resume can read."""
  with ocp.CheckpointManager(os.path.abspath(directory), item_names=ITEMS,
                             options=ocp.CheckpointManagerOptions(create=True)) as mgr:
    mgr.save(int(step), args=ocp.args.Composite(
        model=ocp.args.StandardSave(model),
        meta=ocp.args.JsonSave(_jsonable(dict(meta, step=int(step))))))
    mgr.wait_until_finished()
  return os.path.join(os.path.abspath(directory), str(int(step)))
