"""Contrastive pretraining: data → sharded batches → jitted update → metrics and checkpoints.

The loop is plain JAX: one `jax.jit`-compiled update over global arrays laid out on a
``("data", "model")`` mesh (batch split over "data", parameters replicated), Grain for input and
Orbax (through `training.checkpointing`) for state. The same code runs on one CPU, on 8 simulated
devices and on several processes joined by `jax.distributed`.

The pieces live in shared modules: the data plan and `splits.json` in `runs`, the model and
optimizer in `factories`, the state and jitted steps in `steps`, the metrics files in
`metrics_log` and the loop itself in `loop` (which the supervised CNN baseline runs too). This
module wires them: `train` (the run) and `evaluate` (validation).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from sleepfm_jax.data import pipeline
from sleepfm_jax.data.store import WindowStore
from sleepfm_jax.training import checkpointing, sharding, steps
from sleepfm_jax.training.factories import make_optimizer, make_schedule
from sleepfm_jax.training.loop import Loop
from sleepfm_jax.training.metrics_log import MetricsLog
from sleepfm_jax.training.runs import (SPLITS_FILE, DataPlan, plan_data, split_record,
                                       validation_windows)


def validation_source(plan: DataPlan, config: ml_collections.ConfigDict
                      ) -> pipeline.WindowSource | None:
  """The validation windows (`runs.validation_windows`) as a source, or None without a val split."""
  if not len(plan.val):
    return None
  windows = validation_windows(plan.val, batch_size=config.batch_size,
                               max_batches=config.eval_max_batches, seed=config.eval_seed)
  return pipeline.WindowSource(config.data.store, windows, plan.modalities)


def evaluate(eval_step, state, source, plan: DataPlan, config, mesh) -> dict:
  """Validation metrics over `source` (`validation_source`), padded rows excluded.

  Losses are averaged over windows, as the original's per-window average. `acc/<term>` is the
  within-batch top-1 retrieval accuracy of each loss term, pooled over the rows the term scored;
  `top1` is its mean over terms and `top1_chance` what random embeddings would score (one correct
  candidate among a batch's valid ones: 1/batch for full batches).
  """
  sums: dict[str, float] = {}
  rows: dict[str, float] = {}
  hits: dict[str, float] = {}
  batches_with_rows: dict[str, int] = {}
  total = 0.0
  local = config.batch_size // jax.process_count()
  batches = pipeline.eval_batches(source, batch_size=local, process_index=jax.process_index(),
                                  process_count=jax.process_count())
  selection = plan.selection
  for batch in batches:
    host = selection.select(batch)
    metrics = jax.device_get(eval_step(state, sharding.host_local_batch_to_global(host, mesh)))
    # Weight each batch by its real (unpadded) windows, as the original's per-window average.
    n = float(metrics.pop("count"))
    total += n
    for k, v in metrics.items():
      if k.startswith("acc/"):
        term = k[len("acc/"):]
        r = float(metrics[f"rows/{term}"])
        rows[term] = rows.get(term, 0.0) + r
        hits[term] = hits.get(term, 0.0) + float(v) * r
        batches_with_rows[term] = batches_with_rows.get(term, 0) + int(r > 0)
      elif np.ndim(v) == 0 and not k.startswith("rows/"):
        sums[k] = sums.get(k, 0.0) + float(v) * n
  if total == 0:
    raise ValueError("validation split produced no valid windows")
  out = {k: v / total for k, v in sums.items()}
  scored = [t for t in rows if rows[t] > 0]
  for t in scored:
    out[f"acc/{t}"] = hits[t] / rows[t]
  if scored:
    out["top1"] = float(np.mean([hits[t] / rows[t] for t in scored]))
    out["top1_chance"] = float(np.mean([batches_with_rows[t] / rows[t] for t in scored]))
  return out


def _mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """The run's mesh, after checking that the batch splits over its devices and processes."""
  devices = jax.devices()[:config.num_devices] if config.num_devices else None
  mesh = sharding.make_mesh(devices=devices)
  n_data = sharding.data_axis_size(mesh)
  if config.batch_size % (n_data * config.optim.grad_accum):
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the {n_data} devices on "
                     f"the data axis (x grad_accum {config.optim.grad_accum})")
  if config.batch_size % jax.process_count():
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the "
                     f"{jax.process_count()} processes")
  return mesh


def _meta(store: WindowStore, plan: DataPlan, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The checkpoints' meta (also the run's config.json)."""
  return {"config": config.to_dict(), "in_channels": plan.in_channels,
          "channels": {m: list(c) for m, c in plan.channels.items()},
          "modalities": list(plan.modalities), "sample_rate": store.sample_rate,
          "samples": store.samples, "store": os.path.abspath(config.data.store),
          # What `sleepfm_jax.embed` needs to preprocess new recordings exactly like the training
          # data, even where that store is not at hand.
          "montage": store.index["montage"], "preprocessing": store.index.get("preprocessing", {}),
          "window_seconds": store.index.get("window_seconds", 30.0)}


def _train_iterator(plan: DataPlan, config: ml_collections.ConfigDict, sample_rate: float):
  """The shuffled, resumable Grain iterator over this process's part of the pretrain windows."""
  source = pipeline.WindowSource(config.data.store, plan.pretrain, plan.modalities)
  micro = config.batch_size // config.optim.grad_accum  # rows per jitted call (global)
  shift = int(round(config.data.cross_modal_shift_seconds * sample_rate))
  dataset = pipeline.train_dataset(source, global_batch=micro, seed=config.seed,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count(), cross_modal_shift=shift,
                                   recordings_per_batch=config.data.recordings_per_batch)
  return pipeline.train_iterator(dataset, worker_count=config.data.worker_count,
                                 prefetch=config.data.prefetch)


def train(config: ml_collections.ConfigDict, workdir: str, *, resume: bool = False) -> dict:
  """Runs pretraining; returns the final train/val metrics. Writes everything under `workdir`."""
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  mesh = _mesh(config)

  # -- data --
  store = WindowStore(config.data.store)
  plan = plan_data(store, config)
  data_iter = _train_iterator(plan, config, store.sample_rate)
  val_src = validation_source(plan, config)
  steps_per_epoch = len(plan.pretrain) // config.batch_size
  total_steps = config.total_steps or math.ceil(config.num_epochs * steps_per_epoch)

  # -- model, optimizer, sharded state --
  schedule = make_schedule(config, steps_per_epoch, total_steps)
  tx = make_optimizer(config, schedule)
  graphdef, state, state_sharding = steps.init_state(config, plan.in_channels, mesh, tx)
  train_step, eval_step = steps.make_steps(graphdef, config, mesh, state_sharding,
                                           sharding.data_sharding(mesh))

  # -- checkpoints --
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.max_to_keep,
                                    async_save=config.async_checkpointing)
  meta = _meta(store, plan, config)
  start = 0
  latest = ckpt.latest_step()
  if latest is not None and not resume:
    raise ValueError(f"{workdir} already has checkpoints (latest step {latest}); pass --resume to "
                     "continue that run or choose another --workdir")
  if latest is not None:
    state = steps.restore(ckpt, latest, graphdef, state, state_sharding, data_iter)
    start = latest
  log = MetricsLog(workdir, resume_step=start if latest is not None else None, enabled=is_main)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(meta, f, indent=2, default=str)
    with open(os.path.join(workdir, SPLITS_FILE), "w") as f:
      json.dump(split_record(store, plan, config), f, indent=2)

  def save(step, state, force=False):
    model_t, opt_t = steps.pure_trees(graphdef, state)
    ckpt.save(step, model=model_t, optimizer=opt_t, data_iter=data_iter, meta=meta, force=force)

  # -- loop --
  summary: dict[str, Any] = {"start_step": start, "total_steps": total_steps}
  loop = Loop(total_steps=total_steps, start_step=start, batch_size=config.batch_size,
              grad_accum=config.optim.grad_accum, log_every=config.log_every,
              learning_rate=lambda step: schedule(step - 1), transfer_guard=config.transfer_guard,
              log=log, progress=is_main, desc="pretrain",
              max_in_flight=config.get("max_steps_in_flight", -1))  # absent in older configs

  def after_step(step, state):
    if val_src is not None and config.eval_every and (step % config.eval_every == 0
                                                      or step == total_steps):
      val = evaluate(eval_step, state, val_src, plan, config, mesh)
      log.write(step, "val", val)
      log.flush()
      summary["val"] = val
      ckpt.save_best(step, val["loss"], model=steps.pure_trees(graphdef, state)[0], meta=meta)
      loop.restart_clock()  # evaluation time is not training throughput
    if config.stop_at_step and step >= config.stop_at_step:
      return True  # a clean stop (time-sliced or preemptible jobs): the final save still runs
    if step % config.checkpoint_every == 0 and step != total_steps:
      save(step, state)
    return False

  selection = plan.selection
  batches = (sharding.host_local_batch_to_global(selection.select(b), mesh) for b in data_iter)
  state = loop.run(state, train_step, batches, after_step=after_step)
  if loop.final_step > start:
    save(loop.final_step, state, force=True)
  ckpt.close()
  if hasattr(data_iter, "close"):  # stop Grain's reader threads now, not at interpreter exit
    data_iter.close()
  log.flush()
  if loop.first_step_s is not None:
    summary["first_step_s"] = loop.first_step_s
  if loop.train:
    summary["train"] = loop.train
  summary["final_step"] = loop.final_step
  if is_main:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return summary
