"""End-to-end supervised CNN baseline, cross-validated exactly like the embedding probes.

For each outer fold of the probe protocol (`evaluation.probes.outer_folds`: subject-wise K-fold,
or time blocks with a gap for a single subject; label-fraction subsets by the same seeded rule), a
fresh `SupervisedCNN` (the SleepFM EffNet-1D encoders, pooled features concatenated, one linear
head) is trained from scratch on the fold's labelled training windows and predicts class
probabilities for the fold's test windows. The folds' predictions together cover every labelled
window once, out of fold, in the predictions format v1 (`evaluation.predictions`); the windows are
those of `evaluation.baselines.select_windows`, i.e. those the `concat` probe scores on an export of
the same recordings.

Training shares the pretraining machinery: the model and optimizer factories (`factories`: the
config's `model` and `optim` blocks), the `("data", "model")` mesh with batches split over "data"
and replicated parameters (`sharding`), Grain batches from `data.pipeline` (a shuffled
`train_dataset` over the fold's windows; padded `eval_batches` with a validity mask for
prediction), the channel selection of `data.selection`, and the training loop itself
(`loop.Loop`: transfer guard, first-step timing, one metrics fetch per log interval); the jitted
update donates the state and reseeds dropout from (seed, step). Loss: cross-entropy, optionally
weighted per class by n / (K n_c) of the fold's training labels (`class_balanced`).

No early stopping: each fold trains for a fixed budget, `max(min_steps, num_epochs x windows /
batch)` steps (or `total_steps`). An inner validation split would take subjects away from already
small downstream sets and add a model-selection step the probes do not share (their inner CV only
picks the L2 strength); a fixed budget keeps the folds comparable. Single process (any number of
local devices).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sleepfm_jax.data import pipeline
from sleepfm_jax.data.selection import ChannelSelection
from sleepfm_jax.data.store import WindowStore
from sleepfm_jax.evaluation import baselines, probes
from sleepfm_jax.evaluation.predictions import Predictions
from sleepfm_jax.models.sleepfm import SupervisedCNN
from sleepfm_jax.training import sharding
from sleepfm_jax.training.factories import build_supervised_model, make_optimizer, make_schedule
from sleepfm_jax.training.loop import Loop
from sleepfm_jax.training.metrics_log import MetricsLog

LABEL_KEYS = {"staging": "stage", "sdb": "sdb"}


def class_weights(y: np.ndarray, num_classes: int, balanced: bool) -> np.ndarray:
  """[K] float32 loss weights: n / (K n_c) per class present (0 if absent), or all ones."""
  if not balanced:
    return np.ones(num_classes, np.float32)
  counts = np.bincount(np.asarray(y, np.int64), minlength=num_classes).astype(np.float64)
  w = np.divide(len(y), num_classes * counts, out=np.zeros(num_classes), where=counts > 0)
  return w.astype(np.float32)


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array
                           ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Σ w_y CE / Σ w_y (PyTorch's `CrossEntropyLoss(weight=w)`), and the batch accuracy."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  w = weights[labels]
  loss = jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-12)
  acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
  return loss, {"accuracy": acc, "unweighted_loss": jnp.mean(ce)}


@dataclasses.dataclass
class FoldRun:
  """What happened in one outer fold."""

  fold: int
  train_index: np.ndarray  # store window indices trained on (after the label fraction)
  test_index: np.ndarray   # store window indices predicted
  steps: int
  seconds: float
  first_step_s: float
  samples_per_s: float
  final_loss: float

  def summary(self) -> dict[str, Any]:
    return {"fold": self.fold, "n_train": int(len(self.train_index)),
            "n_test": int(len(self.test_index)), "steps": self.steps,
            "seconds": round(self.seconds, 2), "first_step_s": round(self.first_step_s, 2),
            "samples_per_s": round(self.samples_per_s, 1),
            "final_loss": round(self.final_loss, 5)}


def scale_by_learning_rate_arg() -> optax.GradientTransformationExtraArgs:
  """Multiplies the updates by the `learning_rate` given to `update` (an extra argument).

  The optimizer is built with a unit learning rate and this as its last element, so the
  per-fold schedule is a host-side input and every fold (whatever its budget) shares one compiled
  update. Exact for SGD (momentum is traced before the rate) and AdamW (decay is scaled by it).
  """

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None, *, learning_rate, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda u: u * learning_rate.astype(u.dtype), updates), state

  return optax.GradientTransformationExtraArgs(init, update)


class Trainer:
  """Jitted init / update / predict for one task's `SupervisedCNN`, shared by all folds.

  Every fold and label fraction reuses the compiled functions (same shapes; the learning rate is
  an input); `init` returns a fresh, identically initialised state.
  """

  def __init__(self, config: ml_collections.ConfigDict, channels: Mapping[str, Sequence[str]],
               channel_index: Mapping[str, np.ndarray], task: str, num_classes: int):
    self.config = config
    self.task = task
    self.label_key = LABEL_KEYS[task]
    self.num_classes = num_classes
    self.selection = ChannelSelection({m: tuple(c) for m, c in channels.items()},
                                      {m: np.asarray(i) for m, i in channel_index.items()})
    self.in_channels = self.selection.in_channels
    if jax.process_count() > 1:
      raise ValueError("the supervised baseline runs in a single process (any number of its "
                       "devices)")
    devices = jax.devices()[:config.num_devices] if config.num_devices else None
    self.mesh = sharding.make_mesh(devices=devices)
    sharding.check_global_batch(config.batch_size // config.optim.grad_accum, self.mesh)
    sharding.check_global_batch(config.eval_batch_size, self.mesh)
    self._replicated = sharding.replicated(self.mesh)
    self._build()

  def _build(self):
    config = self.config
    tx = optax.chain(make_optimizer(config, optax.constant_schedule(1.0)),
                     scale_by_learning_rate_arg())

    def make():
      model = build_supervised_model(config, self.in_channels, self.num_classes, config.seed)
      return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    graphdef, abstract = nnx.split(nnx.eval_shape(make))
    state_sharding = jax.tree.map(lambda _: self._replicated, abstract)
    batch_sharding = sharding.data_sharding(self.mesh)
    dropout_key = jax.random.key(config.seed + 2)
    modalities = tuple(self.in_channels)

    def train_step(state, batch, weights, learning_rate):
      model, optimizer = nnx.merge(graphdef, state)
      # Dropout noise is a pure function of (seed, update count), as in pretraining.
      nnx.reseed(model, dropout=jax.random.fold_in(dropout_key, optimizer.step[...]))

      def objective(model):
        logits = model({m: batch[m] for m in modalities}, train=True)
        return weighted_cross_entropy(logits, batch["label"], weights)

      (loss, metrics), grads = nnx.value_and_grad(objective, has_aux=True)(model)
      optimizer.update(model, grads, learning_rate=learning_rate)
      return nnx.state((model, optimizer)), dict(metrics, loss=loss,
                                                 grad_norm=optax.tree.norm(grads))

    def predict(state, batch):
      model, _ = nnx.merge(graphdef, state)
      logits = model({m: batch[m] for m in modalities}, train=False)
      return jax.nn.softmax(logits, axis=-1)

    rep = self._replicated
    # Built once, eagerly (compiling the random initialisation costs far more than running it on
    # CPU, as in the trainer), and kept on the host: every fold starts from a replicated copy,
    # since the update donates its state.
    self._initial = jax.device_get(nnx.state(make()))
    self._train_step = jax.jit(train_step,
                               in_shardings=(state_sharding, batch_sharding, rep, rep),
                               out_shardings=(state_sharding, None), donate_argnums=(0,))
    self._predict = jax.jit(predict, in_shardings=(state_sharding, batch_sharding),
                            out_shardings=batch_sharding)

  # -- host side --
  def inputs(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Model inputs of a store batch: the selected channels per modality, plus "label".

    Channels enter as stored (missing ones are zero-filled by the store), as the exporter feeds
    the pretrained encoders.
    """
    out = self.selection.select(batch, presence=False)
    out["label"] = np.maximum(np.asarray(batch[self.label_key], np.int32), 0)
    return out

  def budget(self, n_train: int) -> tuple[int, int]:
    """(steps per epoch, steps) of a fold with `n_train` training windows."""
    c = self.config
    per_epoch = max(1, n_train // c.batch_size)
    steps = c.total_steps or max(c.min_steps, math.ceil(c.num_epochs * n_train / c.batch_size))
    return per_epoch, int(steps)

  def learning_rates(self, n_train: int) -> np.ndarray:
    """[steps] learning rate of each update of a fold (`make_schedule` on its budget)."""
    per_epoch, steps = self.budget(n_train)
    schedule = make_schedule(self.config, per_epoch, steps)
    return np.asarray(jax.vmap(schedule)(jnp.arange(steps)), np.float32)

  def init(self):
    """A freshly initialised (model, optimizer) state (the same for every fold)."""
    return sharding.replicate(self._initial, self.mesh)

  def step(self, state, batch: Mapping[str, np.ndarray], weights: np.ndarray,
           learning_rate: float):
    """One update on a host batch (from `inputs`); returns (state, metrics)."""
    batch = sharding.host_local_batch_to_global(batch, self.mesh)
    rep = self._replicated
    return self._train_step(state, batch, jax.device_put(np.asarray(weights, np.float32), rep),
                            jax.device_put(np.float32(learning_rate), rep))

  def fit(self, store_path: str, train_index: np.ndarray, *, modalities: Sequence[str],
          seed: int, log_dir: str | os.PathLike | None = None, desc: str = "fit",
          progress: bool = True):
    """Trains a fresh model on store windows `train_index` (all labelled); returns (state, info)."""
    c = self.config
    lrs = self.learning_rates(len(train_index))
    steps = len(lrs)
    source = pipeline.WindowSource(store_path, train_index, modalities)
    labels = source.store.get_batch(train_index, modalities=())[self.label_key]
    weights = jax.device_put(class_weights(labels, self.num_classes, c.class_balanced),
                             self._replicated)
    data = pipeline.train_iterator(
        pipeline.train_dataset(source, global_batch=c.batch_size // c.optim.grad_accum,
                               seed=seed),
        worker_count=c.data.worker_count, prefetch=c.data.prefetch)
    log = None
    if log_dir is not None:
      pathlib.Path(log_dir).mkdir(parents=True, exist_ok=True)
      log = MetricsLog(str(log_dir), resume_step=None)
    rep = self._replicated
    loop = Loop(total_steps=steps, batch_size=c.batch_size, grad_accum=c.optim.grad_accum,
                log_every=c.log_every, learning_rate=lambda step: lrs[step - 1],
                transfer_guard=c.transfer_guard, log=log, progress=progress, desc=desc,
                leave=False)
    batches = (sharding.host_local_batch_to_global(self.inputs(b), self.mesh) for b in data)
    state = loop.run(self.init(), self._train_step, batches,
                     step_args=lambda step: (weights, jax.device_put(lrs[step - 1], rep)))
    timed = loop.wall_s - loop.first_step_s
    info = {"steps": steps, "seconds": loop.wall_s, "first_step_s": loop.first_step_s,
            "samples_per_s": (steps - 1) * c.batch_size / timed if steps > 1 else 0.0,
            "final_loss": loop.train["loss"]}
    return state, info

  def predict(self, state, store_path: str, index: np.ndarray, *,
              modalities: Sequence[str]) -> np.ndarray:
    """[len(index), K] float32 class probabilities of store windows `index` (eval mode)."""
    source = pipeline.WindowSource(store_path, index, modalities)
    out = []
    for batch in pipeline.eval_batches(source, batch_size=self.config.eval_batch_size):
      valid = np.asarray(batch["valid"], bool)
      x = sharding.host_local_batch_to_global(self.inputs(batch), self.mesh)
      out.append(np.asarray(jax.device_get(self._predict(state, x)), np.float32)[valid])
    return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)


def cross_validate(store: WindowStore | str, table: baselines.WindowTable, task: str,
                   config: ml_collections.ConfigDict, *,
                   probe_config: probes.ProbeConfig = probes.ProbeConfig(),
                   label_fraction: float = 1.0, trainer: Trainer | None = None,
                   log_dir: str | os.PathLike | None = None, name: str = "cnn",
                   progress: bool = True, log=print
                   ) -> tuple[Predictions | probes.Skipped, list[FoldRun]]:
  """Out-of-fold CNN predictions of every labelled window of `table` for `task`.

  Args:
    store: the window store `table` was selected from.
    table: the windows (`baselines.select_windows`).
    task: "staging" (5 classes) or "sdb" (binary).
    config: a `configs/supervised.py` config.
    probe_config: outer folds, seed and gap of the probe protocol (other fields unused).
    label_fraction: fraction of each training fold's labels (`probes.label_subset`).
    trainer: reuse compiled functions across calls (same config and task); default a new one.
    log_dir: metrics JSONL per fold under `<log_dir>/fold_<f>/metrics.jsonl`.
    name: the predictions' name (meta).
    progress: tqdm bars.
    log: one-line messages.

  Returns:
    (`Predictions`, per-fold `FoldRun`s), or (`probes.Skipped`, []) when the task cannot run.
  """
  store = store if isinstance(store, WindowStore) else WindowStore(store)
  reason = table.skip_reason(task)
  if reason is not None:
    return probes.Skipped(task, "cnn", reason), []
  y, classes = table.labels(task)
  plan = probes.outer_folds(y, table.subject_id, probe_config, label_fraction)
  if trainer is None:
    trainer = Trainer(config, table.channels, table.channel_index, task, len(classes))
  elif trainer.config.to_dict() != config.to_dict() or trainer.task != task:
    raise ValueError("the trainer was built for another config or task")
  prob = np.full((len(plan.index), len(classes)), np.nan, np.float32)
  fold_of = np.full(len(plan.index), -1, np.int32)
  runs: list[FoldRun] = []
  for f, (tr, te) in enumerate(plan.folds):
    train_index = table.index[plan.index[tr]]
    test_index = table.index[plan.index[te]]
    fold_dir = None if log_dir is None else pathlib.Path(log_dir) / f"fold_{f}"
    state, info = trainer.fit(
        table.store_path, train_index, modalities=table.modalities,
        seed=config.seed * 1000 + f, log_dir=fold_dir, progress=progress,
        desc=f"{name} {task}@{label_fraction:g} fold {f + 1}/{len(plan.folds)}")
    prob[te] = trainer.predict(state, table.store_path, test_index, modalities=table.modalities)
    fold_of[te] = f
    del state
    run = FoldRun(f, train_index, test_index, **info)
    runs.append(run)
    log(f"[{name}] {task}@{label_fraction:g} fold {f}: {len(train_index)} train / "
        f"{len(test_index)} test windows, {info['steps']} steps, loss {info['final_loss']:.4f}, "
        f"{info['samples_per_s']:.1f} windows/s ({info['seconds']:.1f}s)")
  assert (fold_of >= 0).all(), "every labelled window is predicted exactly once"
  meta = {"name": name, "feature": "cnn", "label_fraction": float(label_fraction),
          "scheme": plan.scheme, **baselines.provenance(table, probe_config),
          "config": config.to_dict(), "folds": [r.summary() for r in runs]}
  preds = baselines.to_predictions(table, plan.index, task=task, classes=classes, y_true=plan.y,
                                   y_prob=prob, fold=fold_of, unit=plan.units, meta=meta)
  return preds, runs


def run(store: str, config: ml_collections.ConfigDict, tasks: Sequence[str] = ("staging", "sdb"),
        *, recordings: Sequence[str] | None = None,
        channels: Mapping[str, Sequence[str]] | None = None,
        probe_config: probes.ProbeConfig = probes.ProbeConfig(),
        label_fractions: Sequence[float] = (1.0,), out_dir: str | os.PathLike | None = None,
        name: str = "cnn", meta: Mapping[str, Any] | None = None, progress: bool = True,
        log=print) -> dict[tuple[str, float], Predictions | probes.Skipped]:
  """`cross_validate` for each task and label fraction.

  Channels: `channels` if given (e.g. a pretrained checkpoint's), else `config.data.channels`,
  else every montage channel of `config.data.modalities`. With `out_dir`, writes the predictions
  files and `summary.json` (`baselines.save_results`) and per-fold metrics under
  `<out_dir>/logs/<task>_<fraction>/fold_<f>/metrics.jsonl`. `meta` is added to every predictions
  file's meta and to the summary.
  """
  store_obj = WindowStore(store)
  chosen = channels or (dict(config.data.channels) or None)
  table = baselines.select_windows(store_obj, recordings, chosen,
                                   modalities=tuple(config.data.modalities))
  results: dict[tuple[str, float], Predictions | probes.Skipped] = {}
  for task in tasks:
    reason = table.skip_reason(task)
    if reason is not None:
      log(f"[{name}] {task}: skipped: {reason}")
      results.update({(task, float(f)): probes.Skipped(task, "cnn", reason)
                      for f in label_fractions})
      continue
    trainer = Trainer(config, table.channels, table.channel_index, task,
                      len(probes.TASKS[task]))
    for f in label_fractions:
      log_dir = None if out_dir is None else pathlib.Path(out_dir) / "logs" / f"{task}_{f:g}"
      pred, _ = cross_validate(
          store_obj, table, task, config, probe_config=probe_config, label_fraction=f,
          trainer=trainer, log_dir=log_dir, name=name, progress=progress, log=log)
      pred.meta.update(meta or {})
      results[(task, float(f))] = pred
  if out_dir is not None:
    baselines.save_results(out_dir, results, store=str(store), recordings=table.recordings,
                           config=config.to_dict(), **(meta or {}))
  return results
