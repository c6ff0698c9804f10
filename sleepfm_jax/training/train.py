"""Contrastive pretraining: data → sharded batches → jitted update → metrics and checkpoints.

The loop is plain JAX: one `jax.jit`-compiled update over global arrays laid out on a
``("data", "model")`` mesh (batch split over "data", parameters replicated), Grain for input and
Orbax (through `training.checkpointing`) for state. The same code runs on one CPU, on 8 simulated
devices and on several processes joined by `jax.distributed`.

Sections: splits → model/optimizer → update and eval steps → metrics → the loop (`train`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sleepfm_jax.training import checkpointing, losses, sharding
from sleepfm_jax.data import pipeline, splits
from sleepfm_jax.data.channels import MODALITIES
from sleepfm_jax.data.store import WindowStore
from sleepfm_jax.models.sleepfm import SleepFM

# ----------------------------------------------------------------------------------------------
# Data selection
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataPlan:
  """What the run reads: modalities, channel selection per modality, and window indices."""

  modalities: tuple[str, ...]
  channels: dict[str, tuple[str, ...]]  # modality -> channel names used (subset of the montage)
  channel_index: dict[str, np.ndarray]  # modality -> positions of those channels in the store
  pretrain: np.ndarray
  val: np.ndarray
  downstream: np.ndarray

  @property
  def in_channels(self) -> dict[str, int]:
    return {m: len(self.channels[m]) for m in self.modalities}


def plan_data(store: WindowStore, config: ml_collections.ConfigDict) -> DataPlan:
  """Checks the config against the store and splits windows into pretrain / val / downstream."""
  cfg = config.data
  unknown = [m for m in cfg.modalities if m not in MODALITIES]
  if unknown:
    raise ValueError(f"config.data.modalities has unknown modalities {unknown}; "
                     f"choose from {MODALITIES}")
  montage = store.montage
  wanted = dict(cfg.get("channels", None) or {})
  channels, index = {}, {}
  for m in cfg.modalities:
    have = tuple(montage.channels(m))
    names = tuple(wanted.get(m, have))
    absent = [n for n in names if n not in have]
    if absent:
      raise ValueError(f"{store.path}: config.data.channels[{m!r}] asks for {absent}, which the "
                       f"store does not have; its {m} channels are {list(have)}")
    if names:
      channels[m] = names
      index[m] = np.array([have.index(n) for n in names], np.int64)
  mods = tuple(m for m in cfg.modalities if m in channels)
  if len(mods) < 2:
    raise ValueError(f"{store.path}: contrastive pretraining needs at least two modalities with "
                     f"channels; config asks for {list(cfg.modalities)}, the store's montage has "
                     f"{ {m: list(montage.channels(m)) for m in MODALITIES} }")

  fractions = {"downstream": 1.0 - cfg.pretrain_fraction,
               "val": cfg.pretrain_fraction * cfg.val_fraction,
               "pretrain": cfg.pretrain_fraction * (1.0 - cfg.val_fraction)}
  fractions = {k: v for k, v in fractions.items() if v > 0}
  if cfg.split == "subject":
    groups = splits.split_subjects(store.subject_ids, fractions, seed=cfg.split_seed)
    idx = {k: store.indices_for_subjects(v) for k, v in groups.items()}
  elif cfg.split == "time":
    per_recording = [store.indices_for_recording(r["recording_id"]) for r in store.recordings]
    idx = splits.time_block_split(per_recording, fractions, seed=cfg.split_seed)
  else:
    raise ValueError(f"config.data.split must be 'subject' or 'time', got {cfg.split!r}")
  empty = np.zeros((0,), np.int64)
  plan = DataPlan(mods, channels, index, idx.get("pretrain", empty), idx.get("val", empty),
                  idx.get("downstream", empty))
  if len(plan.pretrain) < config.batch_size:
    raise ValueError(f"{store.path}: the pretrain split has {len(plan.pretrain)} windows, fewer than "
                     f"one global batch ({config.batch_size}); lower batch_size or add data")
  return plan


SPLITS_FILE = "splits.json"


def split_record(store: WindowStore, plan: DataPlan,
                 config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What each split of a run holds, by recording and subject id (the run's `splits.json`).

  Baselines and evaluations read it to work on exactly the windows pretraining never saw
  (`run_splits`). A part's `whole_recordings` is False when it holds only some windows of a
  recording (the "time" split).
  """
  cfg = config.data
  out: dict[str, Any] = {
      "store": os.path.abspath(str(store.path)), "split": cfg.split,
      "split_seed": int(cfg.split_seed), "pretrain_fraction": float(cfg.pretrain_fraction),
      "val_fraction": float(cfg.val_fraction), "modalities": list(plan.modalities),
      "channels": {m: list(c) for m, c in plan.channels.items()}, "parts": {}}
  for name in ("pretrain", "val", "downstream"):
    idx = getattr(plan, name)
    counts = np.bincount(store.recording_of(idx), minlength=len(store.recordings))
    held = np.flatnonzero(counts)
    out["parts"][name] = {
        "recordings": [store.recording_ids[r] for r in held],
        "subjects": sorted({store.recordings[r]["subject_id"] for r in held}),
        "num_windows": int(len(idx)),
        "whole_recordings": bool(all(counts[r] == int(store.recordings[r]["num_windows"])
                                     for r in held))}
  return out


def _run_dir(path: str) -> str:
  """The work directory of a run from it or a checkpoint path inside it (best/, checkpoints/N)."""
  cand = os.path.abspath(path)
  for _ in range(4):
    if any(os.path.exists(os.path.join(cand, f)) for f in (SPLITS_FILE, "config.json")):
      return cand
    cand = os.path.dirname(cand)
  raise FileNotFoundError(f"{path}: not inside a pretraining work directory (no {SPLITS_FILE} or "
                          "config.json here or in the parent directories)")


def run_splits(path: str, store: str | None = None) -> dict[str, Any]:
  """The splits of a pretraining run: its `splits.json`, or recomputed from its `config.json`.

  Args:
    path: the run's work directory or a checkpoint location inside it.
    store: the window store, if not at the path recorded in the run (recomputation only).
  """
  workdir = _run_dir(path)
  file = os.path.join(workdir, SPLITS_FILE)
  if os.path.exists(file):
    with open(file) as f:
      return json.load(f)
  with open(os.path.join(workdir, "config.json")) as f:  # runs from before splits.json existed
    config = ml_collections.ConfigDict(json.load(f)["config"])
  store = WindowStore(store or config.data.store)
  return split_record(store, plan_data(store, config), config)


def downstream_selection(path: str, store: str | None = None
                         ) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
  """What a run held out for downstream use: (recording ids, the encoders' channels, provenance).

  The provenance dict (`split_from_checkpoint`, `split_part`) goes into the meta of whatever is
  computed on those recordings (baseline predictions, summaries).
  """
  split = run_splits(path, store=store)
  return (held_out_recordings(split), split["channels"],
          {"split_from_checkpoint": path, "split_part": "downstream"})


def held_out_recordings(splits_: Mapping[str, Any], part: str = "downstream") -> list[str]:
  """Recording ids of a split part, refusing parts that hold only some windows of a recording."""
  info = splits_["parts"][part]
  if not info["recordings"]:
    raise ValueError(f"the run's '{part}' split is empty")
  if not info["whole_recordings"]:
    raise ValueError(f"the run's '{part}' split holds only part of its recordings (split "
                     f"'{splits_['split']}': time blocks within each night), but exports and "
                     "baselines work on whole recordings; pass the recordings explicitly")
  return list(info["recordings"])


def _select(batch: Mapping[str, np.ndarray], plan: DataPlan) -> dict[str, np.ndarray]:
  """Host-side: keeps the used modalities/channels and derives per-window presence."""
  out = {}
  for m in plan.modalities:
    sel = plan.channel_index[m]
    mask = np.asarray(batch[f"mask_{m}"])[:, sel]
    out[m] = np.asarray(batch[m], np.float32)[:, sel]
    out[f"present_{m}"] = mask.any(axis=-1)
  valid = batch.get("valid")
  if valid is not None:
    valid = np.asarray(valid, bool)
    for m in plan.modalities:
      out[f"present_{m}"] &= valid
    out["valid"] = valid
  return out


# ----------------------------------------------------------------------------------------------
# Model and optimizer
# ----------------------------------------------------------------------------------------------


def build_model(config: ml_collections.ConfigDict, in_channels: Mapping[str, int],
                seed: int) -> SleepFM:
  m = config.model
  return SleepFM(
      dict(in_channels),
      embed_dim=m.embed_dim,
      widths=tuple(m.widths),
      depths=tuple(m.depths),
      head_width=m.head_width,
      dropout=m.dropout,
      dtype=jnp.dtype(m.dtype),
      temperature_init=config.loss.temperature_init,
      rngs=nnx.Rngs(params=seed, dropout=seed + 1),
  )


def make_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
  o = config.optim
  if o.schedule == "constant":
    main = optax.constant_schedule(o.lr)
  elif o.schedule == "step":  # PyTorch StepLR, stepped once per epoch as the original
    main = optax.exponential_decay(o.lr, transition_steps=o.step_every_epochs * steps_per_epoch,
                                   decay_rate=o.step_factor, staircase=True)
  elif o.schedule == "cosine":
    main = optax.cosine_decay_schedule(o.lr, max(1, total_steps - o.warmup_steps))
  else:
    raise ValueError(f"config.optim.schedule must be constant, step or cosine, got {o.schedule!r}")
  if o.warmup_steps > 0:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, o.lr, o.warmup_steps), main], [o.warmup_steps])
  return main


def _decay_mask(params: Any) -> Any:
  """Weight decay on conv/linear kernels only (not biases, norms or the temperature)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: getattr(path[-1], "key", None) == "kernel" and np.ndim(x) > 1, params)


def make_optimizer(config: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  o = config.optim
  parts = []
  if o.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(o.grad_clip))
  if o.name == "sgd":
    if o.weight_decay > 0:  # PyTorch SGD's coupled weight decay (added to the gradient)
      parts.append(optax.add_decayed_weights(o.weight_decay, mask=_decay_mask))
    parts.append(optax.sgd(schedule, momentum=o.momentum))
  elif o.name == "adamw":
    parts.append(optax.adamw(schedule, weight_decay=o.weight_decay, mask=_decay_mask))
  else:
    raise ValueError(f"config.optim.name must be sgd or adamw, got {o.name!r}")
  tx = optax.chain(*parts)
  if o.grad_accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=o.grad_accum)
  return tx


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------


def init_state(config: ml_collections.ConfigDict, in_channels: Mapping[str, int],
               mesh: jax.sharding.Mesh, tx: optax.GradientTransformation):
  """The model and its optimizer as replicated global arrays over `mesh`.

  Returns `(graphdef, state, state_sharding)`; `state` is `nnx.state((model, optimizer))`, the
  argument `make_steps`' train step takes (and donates). Initialised eagerly from the seed
  (identical on every process; jit-compiling the random init of three encoders takes minutes on
  CPU), then laid out as replicated global arrays.
  """
  model = build_model(config, in_channels, config.seed)
  graphdef, state = nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
  state = sharding.replicate(state, mesh)
  replicated = sharding.replicated(mesh)
  return graphdef, state, jax.tree.map(lambda _: replicated, state)


def contrastive_loss(model: SleepFM, batch: Mapping[str, jax.Array], *, mode: str,
                     renormalise: bool, mesh: jax.sharding.Mesh, train: bool):
  embs = model({m: batch[m] for m in model.modalities}, train=train)
  present = {m: batch[f"present_{m}"] for m in model.modalities}
  return losses.gathered_loss(embs, present, model.t[...], mesh=mesh, mode=mode,
                              renormalise_rest=renormalise)


def make_steps(graphdef, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               state_sharding, batch_sharding):
  """Returns jitted (train_step, eval_step) closed over the static pieces."""
  loss_fn = functools.partial(contrastive_loss, mode=config.loss.mode,
                              renormalise=config.loss.renormalise_rest, mesh=mesh)
  t_lo, t_hi = config.loss.temperature_min, config.loss.temperature_max
  dropout_key = jax.random.key(config.seed + 2)

  def train_step(state, batch):
    model, optimizer = nnx.merge(graphdef, state)
    # Dropout noise is a pure function of (seed, update count): resumed runs replay it exactly.
    nnx.reseed(model, dropout=jax.random.fold_in(dropout_key, optimizer.step[...]))

    def objective(model):
      return loss_fn(model, batch, train=True)

    (loss, metrics), grads = nnx.value_and_grad(objective, has_aux=True)(model)
    optimizer.update(model, grads)
    model.t[...] = jnp.clip(model.t[...], t_lo, t_hi)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                   temperature=model.t[...])
    return nnx.state((model, optimizer)), metrics

  def eval_step(state, batch):
    model, _ = nnx.merge(graphdef, state)
    loss, metrics = loss_fn(model, batch, train=False)
    return dict(metrics, loss=loss, count=jnp.sum(batch["valid"].astype(jnp.int32)))

  train_step = jax.jit(train_step, in_shardings=(state_sharding, batch_sharding),
                       out_shardings=(state_sharding, None), donate_argnums=(0,))
  eval_step = jax.jit(eval_step, in_shardings=(state_sharding, batch_sharding))
  return train_step, eval_step


# ----------------------------------------------------------------------------------------------
# Metrics files
# ----------------------------------------------------------------------------------------------


class MetricsLog:
  """Appends metrics to ``metrics.jsonl``; rewrites ``metrics.csv`` and ``curves.png`` on flush."""

  def __init__(self, workdir: str, *, resume_step: int | None, enabled: bool = True):
    self.enabled = enabled
    self.jsonl = os.path.join(workdir, "metrics.jsonl")
    self.rows: list[dict] = []
    if os.path.exists(self.jsonl):
      with open(self.jsonl) as f:
        rows = [json.loads(line) for line in f if line.strip()]
      # Resumed runs drop what was logged after the restored checkpoint, so no step appears twice.
      self.rows = [r for r in rows if resume_step is not None and r["step"] <= resume_step]
      if enabled:
        self._rewrite_jsonl()

  def _rewrite_jsonl(self):
    with open(self.jsonl, "w") as f:
      for r in self.rows:
        f.write(json.dumps(r) + "\n")

  def write(self, step: int, split: str, metrics: Mapping[str, Any]):
    row = {"step": int(step), "split": split,
           **{k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}}
    self.rows.append(row)
    if self.enabled:
      with open(self.jsonl, "a") as f:
        f.write(json.dumps(row) + "\n")

  def flush(self):
    if not self.enabled or not self.rows:
      return
    keys = sorted({k for r in self.rows for k in r} - {"step", "split"})
    with open(self.jsonl[:-len(".jsonl")] + ".csv", "w", newline="") as f:
      w = csv.DictWriter(f, ["step", "split", *keys])
      w.writeheader()
      w.writerows(self.rows)
    plot_curves(self.rows, os.path.join(os.path.dirname(self.jsonl), "curves.png"))


def plot_curves(rows: list[dict], path: str):
  """Training/validation loss, retrieval accuracy and temperature against step."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for split, style in (("train", "-"), ("val", "o-")):
    rs = [r for r in rows if r["split"] == split]
    if not rs:
      continue
    steps = [r["step"] for r in rs]
    axes[0].plot(steps, [r["loss"] for r in rs], style, label=f"{split} loss")
    acc_keys = sorted(k for k in rs[-1] if k.startswith("acc/"))
    for k in acc_keys:
      axes[1].plot(steps, [r.get(k, np.nan) for r in rs], style, label=f"{split} {k[4:]}")
    if split == "train":
      axes[2].plot(steps, [r.get("temperature", np.nan) for r in rs], label="t (logit scale = e^t)")
  axes[0].set_title("contrastive loss")
  axes[1].set_title("top-1 retrieval in batch")
  axes[2].set_title("temperature")
  for ax in axes:
    ax.set_xlabel("step")
    if ax.lines:
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def evaluate(eval_step, state, source, plan: DataPlan, config, mesh) -> dict:
  """Validation metrics over the val split, averaged over windows (padded rows excluded)."""
  sums: dict[str, float] = {}
  total = 0.0
  local = config.batch_size // jax.process_count()
  batches = pipeline.eval_batches(source, batch_size=local, process_index=jax.process_index(),
                                  process_count=jax.process_count())
  for i, batch in enumerate(batches):
    if config.eval_max_batches and i >= config.eval_max_batches:
      break
    host = _select(batch, plan)
    metrics = jax.device_get(eval_step(state, sharding.host_local_batch_to_global(host, mesh)))
    # Weight each batch by its real (unpadded) windows, as the original's per-window average.
    n = float(metrics.pop("count"))
    total += n
    for k, v in metrics.items():
      if np.ndim(v) == 0 and not k.startswith("rows/"):
        sums[k] = sums.get(k, 0.0) + float(v) * n
  if total == 0:
    raise ValueError("validation split produced no valid windows")
  return {k: v / total for k, v in sums.items()}


def train(config: ml_collections.ConfigDict, workdir: str, *, resume: bool = False) -> dict:
  """Runs pretraining; returns the final train/val metrics. Writes everything under `workdir`."""
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  devices = jax.devices()[:config.num_devices] if config.num_devices else None
  mesh = sharding.make_mesh(devices=devices)
  n_data = sharding.data_axis_size(mesh)
  if config.batch_size % (n_data * config.optim.grad_accum):
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the {n_data} devices on "
                     f"the data axis (x grad_accum {config.optim.grad_accum})")
  if config.batch_size % jax.process_count():
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the "
                     f"{jax.process_count()} processes")

  # -- data --
  store = WindowStore(config.data.store)
  plan = plan_data(store, config)
  train_src = pipeline.WindowSource(config.data.store, plan.pretrain, plan.modalities)
  val_src = (pipeline.WindowSource(config.data.store, plan.val, plan.modalities)
             if len(plan.val) else None)
  steps_per_epoch = len(plan.pretrain) // config.batch_size
  total_steps = config.total_steps or math.ceil(config.num_epochs * steps_per_epoch)
  micro = config.batch_size // config.optim.grad_accum  # rows per jitted call (global)
  dataset = pipeline.train_dataset(train_src, global_batch=micro, seed=config.seed,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
  data_iter = pipeline.train_iterator(dataset, worker_count=config.data.worker_count,
                                      prefetch=config.data.prefetch)

  # -- model, optimizer, sharded state --
  schedule = make_schedule(config, steps_per_epoch, total_steps)
  tx = make_optimizer(config, schedule)

  graphdef, state, state_sharding = init_state(config, plan.in_channels, mesh, tx)
  batch_sharding = sharding.data_sharding(mesh)
  train_step, eval_step = make_steps(graphdef, config, mesh, state_sharding, batch_sharding)

  # -- checkpoints --
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.max_to_keep,
                                    async_save=config.async_checkpointing)
  meta = {"config": config.to_dict(), "in_channels": plan.in_channels,
          "channels": {m: list(c) for m, c in plan.channels.items()},
          "modalities": list(plan.modalities), "sample_rate": store.sample_rate,
          "samples": store.samples, "store": os.path.abspath(config.data.store),
          # What `sleepfm_jax.embed` needs to preprocess new recordings exactly like the training
          # data, even where that store is not at hand.
          "montage": store.index["montage"], "preprocessing": store.index.get("preprocessing", {}),
          "window_seconds": store.index.get("window_seconds", 30.0)}
  start = 0
  latest = ckpt.latest_step()
  if latest is not None and not resume:
    raise ValueError(f"{workdir} already has checkpoints (latest step {latest}); pass --resume to "
                     "continue that run or choose another --workdir")
  if latest is not None:
    state = _restore(ckpt, latest, graphdef, state, state_sharding, data_iter)
    start = latest
  log = MetricsLog(workdir, resume_step=start if latest is not None else None, enabled=is_main)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(meta, f, indent=2, default=str)
    with open(os.path.join(workdir, SPLITS_FILE), "w") as f:
      json.dump(split_record(store, plan, config), f, indent=2)

  def save(step, force=False):
    model_t, opt_t = _pure_trees(graphdef, state)
    ckpt.save(step, model=model_t, optimizer=opt_t, data_iter=data_iter, meta=meta, force=force)

  # -- loop --
  def guard():  # a fresh context each time: context managers are single-use
    return jax.transfer_guard("disallow") if config.transfer_guard else contextlib.nullcontext()

  summary: dict[str, Any] = {"start_step": start, "total_steps": total_steps}
  pending, t_last, n_last = [], time.perf_counter(), 0
  progress = _progress(start, total_steps, is_main)
  step = start
  for step in range(start + 1, total_steps + 1):
    for _ in range(config.optim.grad_accum):
      batch = sharding.host_local_batch_to_global(_select(next(data_iter), plan), mesh)
      with guard():  # the batch upload above is the step's only intended host->device transfer
        state, metrics = train_step(state, batch)
    pending.append(metrics)
    n_last += config.batch_size
    progress.update(1)
    if step == start + 1:  # keep compilation out of the throughput figures
      jax.block_until_ready(metrics)
      summary["first_step_s"] = time.perf_counter() - t_last
      t_last, n_last = time.perf_counter(), 0
    if step % config.log_every == 0 or step == total_steps:
      fetched = jax.device_get(pending)  # one sync per log interval, not per step
      avg = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1] if k != "count"}
      dt = time.perf_counter() - t_last
      avg.update(lr=float(schedule(step - 1)))
      if n_last:
        avg["samples_per_s"] = n_last / dt
      log.write(step, "train", avg)
      progress.set_postfix(loss=f"{avg['loss']:.4f}", sps=f"{avg.get('samples_per_s', 0):.1f}")
      summary["train"] = avg
      pending, t_last, n_last = [], time.perf_counter(), 0
    if val_src is not None and config.eval_every and (step % config.eval_every == 0
                                                      or step == total_steps):
      val = evaluate(eval_step, state, val_src, plan, config, mesh)
      log.write(step, "val", val)
      log.flush()
      summary["val"] = val
      ckpt.save_best(step, val["loss"], model=_pure_trees(graphdef, state)[0], meta=meta)
      t_last = time.perf_counter()  # evaluation time is not training throughput
    if config.stop_at_step and step >= config.stop_at_step:
      break  # a clean stop (time-sliced or preemptible jobs): the final save below still runs
    if step % config.checkpoint_every == 0 and step != total_steps:
      save(step)
  progress.close()
  if step > start:
    save(step, force=True)
  ckpt.close()
  if hasattr(data_iter, "close"):  # stop Grain's reader threads now, not at interpreter exit
    data_iter.close()
  log.flush()
  summary["final_step"] = step
  if is_main:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return summary


def _pure_trees(graphdef, state):
  """(model, optimizer) state as pure dicts of arrays, without RNG streams."""
  model, optimizer = nnx.merge(graphdef, state)
  return (nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState))),
          nnx.to_pure_dict(nnx.state(optimizer, nnx.Not(nnx.RngState))))


def _restore(ckpt, step, graphdef, state, state_sharding, data_iter):  # noqa: ARG001
  """Restores model, optimizer and data iterator from checkpoint `step`; returns sharded state."""
  model, optimizer = nnx.merge(graphdef, state)
  no_rng = nnx.Not(nnx.RngState)
  model_state, opt_state = nnx.state(model, no_rng), nnx.state(optimizer, no_rng)
  replicated = jax.tree.leaves(state_sharding)[0]
  out = ckpt.restore(step, model=nnx.to_pure_dict(model_state),
                     optimizer=nnx.to_pure_dict(opt_state), data_iter=data_iter,
                     sharding=replicated)
  nnx.replace_by_pure_dict(model_state, out["model"])
  nnx.replace_by_pure_dict(opt_state, out["optimizer"])
  nnx.update(model, model_state)
  nnx.update(optimizer, opt_state)
  # Restored arrays already carry the replicated sharding; RNG streams are reseeded every step.
  return nnx.state((model, optimizer))


def _progress(start: int, total: int, enabled: bool):
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

  return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True,
              desc="pretrain")
