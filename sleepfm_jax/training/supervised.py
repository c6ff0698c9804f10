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

Early stopping (`config.early_stopping`, on by default): each fold's labelled training windows are
split once more (`inner_split`: one fold of the probes' inner CV, i.e. by subject when the fold has
two or more subjects, else a contiguous time block with the probes' gap around it); the model is
fitted on the rest, its class-weighted cross-entropy (and macro AUROC) on the inner validation
windows is measured every `eval_every` steps, the best state is kept, and training stops after
`patience` validations without improvement. The budget `max(min_steps, num_epochs x windows /
batch)` steps (or `total_steps`) is the cap. A fold with fewer than `min_windows` labelled training
windows (small label fractions) trains the full budget on all of them. Each fold reports its budget:
steps run, best step, the cap, wall seconds. Single process (any number of local devices).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import warnings
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
from sleepfm_jax.evaluation import baselines, metrics, probes
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
  """What happened in one outer fold: its windows and its budget."""

  fold: int
  train_index: np.ndarray  # store window indices of the fold's labelled training windows
  test_index: np.ndarray   # store window indices predicted
  steps: int  # steps run
  seconds: float  # wall seconds of the fit (validations included)
  first_step_s: float
  samples_per_s: float
  final_loss: float  # training loss of the last logged interval
  max_steps: int = 0  # the budget's cap
  best_step: int = 0  # the step whose state predicted the test windows
  best_val_loss: float = float("nan")
  val_index: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.int64))
  early_stopping: str = "off"  # "subject" / "time-block" (the inner split), or why it was off

  def summary(self) -> dict[str, Any]:
    return {"fold": self.fold, "n_train": int(len(self.train_index)),
            "n_val": int(len(self.val_index)), "n_test": int(len(self.test_index)),
            "steps": self.steps, "max_steps": self.max_steps, "best_step": self.best_step,
            "early_stopping": self.early_stopping,
            "best_val_loss": None if np.isnan(self.best_val_loss) else round(self.best_val_loss, 5),
            "seconds": round(self.seconds, 2), "first_step_s": round(self.first_step_s, 2),
            "samples_per_s": round(self.samples_per_s, 1),
            "final_loss": round(self.final_loss, 5)}


def inner_split(subjects: np.ndarray, y: np.ndarray, early_stopping: ml_collections.ConfigDict,
                probe_config: probes.ProbeConfig) -> tuple[np.ndarray, np.ndarray, str] | str:
  """Splits a fold's labelled training windows into (fit rows, validation rows, scheme).

  One fold of the probes' inner cross-validation (`probes.inner_folds` with
  `round(1 / val_fraction)` folds): by subject when there are two or more, else a contiguous block
  of time (the middle one) with `probe_config.gap` windows dropped on each side. Returns the
  reason instead when there are fewer than `min_windows` windows.

  Args:
    subjects: [n] subject id per training window (windows in time order within recordings).
    y: [n] class per training window.
  """
  n = len(y)
  if n < early_stopping.min_windows:
    return f"off: {n} labelled training windows < min_windows {early_stopping.min_windows}"
  k = max(2, round(1.0 / early_stopping.val_fraction))
  config = dataclasses.replace(probe_config, inner_folds=k)
  subjects = np.asarray(subjects).astype(str)
  folds = probes.inner_folds(np.arange(n), subjects, np.asarray(y), config)
  fit, val = folds[len(folds) // 2]
  return fit, val, "subject" if len(np.unique(subjects)) >= 2 else "time-block"


def validation_loss(prob: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
  """Σ w_y (−log p_y) / Σ w_y: the training objective (`weighted_cross_entropy`) on probabilities."""
  y = np.asarray(y, np.int64)
  w = np.asarray(weights, np.float64)[y]
  nll = -np.log(np.clip(np.asarray(prob, np.float64)[np.arange(len(y)), y], 1e-12, None))
  return float(np.sum(w * nll) / max(np.sum(w), 1e-12))


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
    dropout_seed = int(config.seed) + 2
    modalities = tuple(self.in_channels)

    def train_step(state, batch, weights, learning_rate):
      model, optimizer = nnx.merge(graphdef, state)
      # Dropout noise is a pure function of (seed, update count), as in pretraining; the key is
      # made in the trace (a closed-over key array is a device constant: steps.make_steps).
      dropout_key = jax.random.key(dropout_seed)
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
          seed: int, val_index: np.ndarray | None = None,
          log_dir: str | os.PathLike | None = None, desc: str = "fit", progress: bool = True):
    """Trains a fresh model on store windows `train_index` (all labelled); returns (state, info).

    With `val_index` (labelled windows held out of `train_index`), stops early on their loss
    (`config.early_stopping`) and returns the best state; `info` says steps run, the cap
    (`max_steps`), the best step and its validation loss.
    """
    c = self.config
    lrs = self.learning_rates(len(train_index))
    steps = len(lrs)
    source = pipeline.WindowSource(store_path, train_index, modalities)
    labels = source.store.get_batch(train_index, modalities=())[self.label_key]
    weights = class_weights(labels, self.num_classes, c.class_balanced)
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
                max_in_flight=c.get("max_steps_in_flight", -1),
                leave=False)
    stopper = None
    if val_index is not None:
      stopper = _EarlyStopping(self, loop, store_path, val_index, modalities, weights, log)
    batches = (sharding.host_local_batch_to_global(self.inputs(b), self.mesh) for b in data)
    weights_dev = jax.device_put(weights, rep)
    state = loop.run(self.init(), self._train_step, batches,
                     step_args=lambda step: (weights_dev, jax.device_put(lrs[step - 1], rep)),
                     after_step=stopper)
    info = {"steps": loop.final_step, "max_steps": steps, "best_step": loop.final_step}
    if stopper is not None:
      state = stopper.restore_best(state, loop.final_step)
      info.update(best_step=stopper.best_step, best_val_loss=stopper.best_loss)
    timed = loop.wall_s - loop.first_step_s
    info.update(seconds=loop.wall_s, first_step_s=loop.first_step_s,
                samples_per_s=((loop.final_step - 1) * c.batch_size / timed
                               if loop.final_step > 1 else 0.0),
                final_loss=loop.train["loss"])
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


class _EarlyStopping:
  """The `after_step` hook of a fit with an inner validation split (see the module docstring)."""

  def __init__(self, trainer: Trainer, loop: Loop, store_path: str, index: np.ndarray,
               modalities: Sequence[str], weights: np.ndarray, log: MetricsLog | None):
    self.trainer, self.loop, self.log = trainer, loop, log
    self.store_path, self.index, self.modalities = store_path, np.asarray(index), modalities
    self.labels = np.asarray(WindowStore(store_path).get_batch(
        self.index, modalities=())[trainer.label_key], np.int64)
    self.weights = weights
    self.config = trainer.config.early_stopping
    self.classes = [str(k) for k in range(trainer.num_classes)]
    self.best_loss, self.best_step, self.best_state, self.bad = np.inf, 0, None, 0

  def __call__(self, step: int, state) -> bool:
    if step % self.config.eval_every and step != self.loop.total_steps:
      return False
    prob = self.trainer.predict(state, self.store_path, self.index, modalities=self.modalities)
    loss = validation_loss(prob, self.labels, self.weights)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)  # classes absent from the split
      auroc = metrics.classification_metrics(self.labels, prob, self.classes)["auroc_macro"]
    if self.log is not None:
      self.log.write(step, "val", {"loss": loss, "auroc_macro": auroc})
    if loss < self.best_loss:
      self.best_loss, self.best_step, self.bad = loss, step, 0
      self.best_state = jax.device_get(state)  # the update donates `state`: keep a host copy
    else:
      self.bad += 1
    self.loop.restart_clock()  # validation is not training throughput
    return self.bad >= self.config.patience

  def restore_best(self, state, final_step: int):
    """The best state (`state` itself when that is the final one)."""
    if self.best_state is None or self.best_step == final_step:
      return state
    return sharding.replicate(self.best_state, self.trainer.mesh)


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
    fit_index, val_index, scheme = train_index, None, "off"
    if config.early_stopping.enabled:
      split = inner_split(plan.subjects[tr], plan.y[tr], config.early_stopping, probe_config)
      if isinstance(split, str):
        scheme = split
      else:
        fit_rows, val_rows, scheme = split
        fit_index, val_index = train_index[fit_rows], train_index[val_rows]
    fold_dir = None if log_dir is None else pathlib.Path(log_dir) / f"fold_{f}"
    state, info = trainer.fit(
        table.store_path, fit_index, val_index=val_index, modalities=table.modalities,
        seed=config.seed * 1000 + f, log_dir=fold_dir, progress=progress,
        desc=f"{name} {task}@{label_fraction:g} fold {f + 1}/{len(plan.folds)}")
    prob[te] = trainer.predict(state, table.store_path, test_index, modalities=table.modalities)
    fold_of[te] = f
    del state
    run = FoldRun(f, train_index, test_index, early_stopping=scheme,
                  val_index=np.zeros((0,), np.int64) if val_index is None else val_index, **info)
    runs.append(run)
    log(f"[{name}] {task}@{label_fraction:g} fold {f}: {len(fit_index)} train / "
        f"{len(run.val_index)} val / {len(test_index)} test windows, {run.steps} of "
        f"{run.max_steps} steps (best {run.best_step}; early stopping {scheme}), loss "
        f"{run.final_loss:.4f}, {run.samples_per_s:.1f} windows/s ({run.seconds:.1f}s)")
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
