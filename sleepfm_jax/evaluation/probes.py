"""Linear probes: cross-validated logistic regression on frozen embeddings (or any features).

Protocol (documented in docs/evaluation.md):
* Outer split: subject-wise K-fold (`splits.plan_splits`); with one subject, time-blocked folds with
  a gap. Every labelled window is predicted exactly once, by a model that never saw its subject.
* Optional label-efficiency subsampling of each outer training set (`label_subset`).
* Inner model selection: C from a grid, by the mean macro one-vs-rest AUROC over an inner
  K-fold grouped by subject (time-blocked with the same gap when the training set has one subject);
  ties go to the smaller C (stronger regularisation).
* Model: StandardScaler → LogisticRegression (L2, lbfgs, multinomial for >2 classes,
  `class_weight="balanced"` by default) with a large `max_iter`. A fit that stops at `max_iter` is
  recorded as not converged and reported, never silently accepted.
* The scaler is fit, by default (`scaler="fold"`), on the features of every window of the outer
  training set — labelled or not at the label fraction, its labels never read — and the same
  scaling serves the inner CV and the final fit. A label-efficiency run thus standardises with
  the statistics of the unlabelled windows a user has anyway (the windows pretraining saw),
  rather than with the mean and variance of ~20 labelled ones. `scaler="labelled"` fits it on the
  labelled training windows only (and per inner split), the protocol before 2026-12-02.
* Missing values (`missing`: a modality block of a `concat` feature for a window without that
  modality) are left out of the scaler's statistics and imputed with the training mean (0 after
  scaling). Zeros before scaling, as stored, would sit many standard deviations from the data and
  let the model key on "this subject has no ECG".
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from sleepfm_jax.evaluation import splits
from sleepfm_jax.data.annotations import STAGES
from sleepfm_jax.data.channels import MODALITIES
from sleepfm_jax.evaluation.embeddings import EmbeddingSet
from sleepfm_jax.evaluation.metrics import classification_metrics
from sleepfm_jax.evaluation.predictions import Predictions

TASKS: dict[str, tuple[str, ...]] = {"staging": STAGES, "sdb": ("no-SDB", "SDB")}
# Feature kinds probed by default (see `EmbeddingSet.features`).
FEATURE_KINDS = (*MODALITIES, "concat", "combined")
SCALERS = ("fold", "labelled")


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  """Settings of the probe protocol.

  Attributes:
    c_grid: inverse regularisation strengths tried by the inner CV.
    class_weight: "balanced" (weights ∝ 1 / class frequency) or None.
    max_iter: lbfgs iteration cap; fits reaching it are reported as not converged.
    tol: lbfgs tolerance.
    outer_folds: outer K (fewer if there are fewer subjects).
    inner_folds: inner K for choosing C.
    gap: windows left out between train and test blocks (time-blocked folds).
    block: windows per bootstrap unit when there is a single subject.
    seed: seeds fold assignment and label subsampling.
    scaler: "fold" (StandardScaler fit on all windows of the outer training set; labels unused) or
      "labelled" (fit on the labelled training windows only, per inner split for the inner CV).
    blas_threads: BLAS threads during fits (threadpoolctl). 1 avoids OpenBLAS thread-spin, which
      made lbfgs fits 5-20x slower on a shared 2-core machine; None keeps the library default.
    label_subjects: 0 trains on every subject of each outer training set; k > 0 keeps only the
      labelled windows of k of them (`label_subjects_subset`): label scarcity counted in people,
      as in the paper's claim. Combines with a label fraction; needs >= 2 subjects (subject folds).
  """

  c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
  class_weight: str | None = "balanced"
  max_iter: int = 5000
  tol: float = 1e-4
  outer_folds: int = 5
  inner_folds: int = 3
  gap: int = 10
  block: int = 60
  seed: int = 0
  scaler: str = "fold"
  blas_threads: int | None = 1
  label_subjects: int = 0

  def __post_init__(self):
    if self.scaler not in SCALERS:
      raise ValueError(f"ProbeConfig.scaler must be one of {SCALERS}, got '{self.scaler}'")
    if self.label_subjects < 0:
      raise ValueError(f"ProbeConfig.label_subjects must be >= 0, got {self.label_subjects}")


@dataclasses.dataclass
class ProbeResult:
  """Out-of-fold predictions of one probe plus what happened in each fold.

  Attributes:
    index: [m] indices (into the rows given to `run_probe`) of the predicted windows.
    y_true: [m] class index; y_prob: [m, K]; fold: [m] outer fold; unit: [m] bootstrap unit.
    folds: per outer fold: sizes, chosen C, inner scores, iterations, convergence.
    warnings: human-readable problems (non-convergence, untuned C, classes missing in training).
  """

  task: str
  feature: str
  classes: list[str]
  label_fraction: float
  scheme: str
  index: np.ndarray
  y_true: np.ndarray
  y_prob: np.ndarray
  fold: np.ndarray
  unit: np.ndarray
  folds: list[dict[str, Any]]
  warnings: list[str]
  seconds: float
  label_subjects: int = 0

  @property
  def converged(self) -> bool:
    return all(f["converged"] for f in self.folds)

  def summary(self) -> dict[str, Any]:
    """JSON-ready description (no per-window arrays)."""
    return {"task": self.task, "feature": self.feature, "classes": self.classes,
            "label_fraction": self.label_fraction, "label_subjects": self.label_subjects,
            "scheme": self.scheme,
            "n_predicted": int(len(self.index)), "converged": self.converged,
            "folds": self.folds, "warnings": self.warnings, "seconds": round(self.seconds, 2)}


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A probe that could not run, and why (reported instead of a number)."""

  task: str
  feature: str
  reason: str


def task_labels(es: EmbeddingSet, task: str) -> tuple[np.ndarray, list[str]]:
  """Labels of `task` per window (class index, -1 = excluded) and the class names."""
  if task not in TASKS:
    raise ValueError(f"unknown task '{task}' (known: {sorted(TASKS)})")
  y = (es.stage if task == "staging" else es.sdb).astype(np.int64)
  return np.where((y >= 0) & (y < len(TASKS[task])), y, -1), list(TASKS[task])


def skip_reason(y: np.ndarray, task: str, min_windows: int = 10) -> str | None:
  """Why a probe cannot be run on labels `y` (None if it can)."""
  labelled = y >= 0
  if not labelled.any():
    if task == "sdb":
      return "no recording has respiratory-event scoring (every SDB label is -1)"
    return f"no window has a '{task}' label"
  present = np.unique(y[labelled])
  if len(present) < 2:
    return f"only one class among the labelled windows (class index {present[0]})"
  if labelled.sum() < min_windows:
    return f"only {labelled.sum()} labelled windows (need {min_windows})"
  return None


def label_subjects_subset(indices: np.ndarray, subjects: np.ndarray, k: int,
                          seed: int) -> np.ndarray:
  """The windows of `k` of the subjects of training windows `indices` (all of them if k = 0).

  The subjects (sorted ids) are put in a random order drawn from `np.random.default_rng(seed)` and
  the first `k` are kept, so with the same seed the 1-subject set is inside the 2-subject set, and
  so on. Returns sorted indices (a subset of `indices`).
  """
  uniq = np.unique(subjects[indices])
  if k <= 0 or k >= len(uniq):
    return np.sort(indices)
  chosen = uniq[np.random.default_rng(seed).permutation(len(uniq))[:k]]
  return np.sort(indices[np.isin(subjects[indices], chosen)])


def label_subset(indices: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """Seeded, class-stratified subsample of labelled training windows.

  For each class c (in increasing order) the training windows of class c are put in a random order
  drawn from `np.random.default_rng(seed)`, and the first `max(1, ceil(fraction * n_c))` are kept.
  The orders do not depend on `fraction`, so a 1% subset is contained in the 10% subset of the same
  fold and seed. Returns sorted indices (a subset of `indices`).
  """
  if not 0 < fraction <= 1:
    raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
  if fraction == 1:
    return np.sort(indices)
  rng = np.random.default_rng(seed)
  keep = []
  for c in np.unique(y[indices]):
    members = indices[y[indices] == c]
    members = members[rng.permutation(len(members))]
    keep.append(members[:max(1, math.ceil(fraction * len(members)))])
  return np.sort(np.concatenate(keep))


@dataclasses.dataclass(frozen=True)
class OuterFolds:
  """The outer folds of the probe protocol over the labelled windows of one task.

  The single definition of "which windows train and test each outer fold" shared by the probes
  and the baselines (`evaluation.baselines`, `training.supervised`), so that every model is
  compared on the same folds and, at a label fraction, trained on the same labelled windows.

  Attributes:
    index: [m] rows (of the arrays given to `outer_folds`) of the labelled windows, in order.
    y: [m] their class index; subjects: [m] their subject id (str).
    scheme: "subject" (grouped K-fold) or "time-block" (a single subject).
    units: [m] bootstrap resampling unit per labelled window.
    folds: (train, test) position arrays into 0..m-1; train is already reduced to
      `config.label_subjects` subjects (`label_subjects_subset`) and to the label fraction
      (`label_subset`), both with seed `config.seed * 1000 + fold`; test sets are complete and
      partition 0..m-1.
    label_fraction: the fraction the training sets were reduced to.
    pools: per fold, the complete outer training set (positions into 0..m-1) before the label
      fraction: the windows whose inputs, never labels, unsupervised preprocessing may use.
  """

  index: np.ndarray
  y: np.ndarray
  subjects: np.ndarray
  scheme: str
  units: np.ndarray
  folds: list[splits.Fold]
  label_fraction: float
  pools: list[np.ndarray]


def outer_folds(y: np.ndarray, subjects: Sequence, config: ProbeConfig = ProbeConfig(),
                label_fraction: float = 1.0) -> OuterFolds:
  """Outer folds of the probe protocol for labels `y` (-1 = not used) and per-window subjects.

  Rows must be in the order of an `EmbeddingSet` (recordings in index order, windows in time
  order): the time-blocked scheme and the label subsets depend on it.
  """
  y = np.asarray(y, np.int64)
  subjects = np.asarray(subjects).astype(str)
  lab = np.nonzero(y >= 0)[0]
  yl, sl = y[lab], subjects[lab]
  plan = splits.plan_splits(sl, config.outer_folds, y=yl, seed=config.seed, gap=config.gap,
                            block=config.block)
  if config.label_subjects and plan.scheme != "subject":
    raise ValueError(f"label_subjects={config.label_subjects} needs subject-wise folds (>= 2 "
                     f"subjects); these windows are split by '{plan.scheme}'")
  folds = []
  for f, (train, test) in enumerate(plan.folds):
    train = label_subjects_subset(train, sl, config.label_subjects, seed=config.seed * 1000 + f)
    folds.append((label_subset(train, yl, label_fraction, seed=config.seed * 1000 + f), test))
  return OuterFolds(index=lab, y=yl, subjects=sl, scheme=plan.scheme, units=plan.units,
                    folds=folds, label_fraction=float(label_fraction),
                    pools=[np.sort(train) for train, _ in plan.folds])


def _full_proba(model: LogisticRegression, x: np.ndarray, k: int) -> np.ndarray:
  """Probabilities over all k classes (zero for classes absent from the training data)."""
  out = np.zeros((len(x), k))
  out[:, model.classes_.astype(int)] = model.predict_proba(x)
  return out


class _Fitter:
  """Scaler + logistic regression; warm-starts along an increasing C grid."""

  def __init__(self, config: ProbeConfig):
    self.config = config

  def fit_path(self, x: np.ndarray, y: np.ndarray, c_values: Sequence[float]):
    """Yields (C, model, n_iter, converged) for each C in increasing order, on scaled x."""
    cfg = self.config
    model = LogisticRegression(C=c_values[0], l1_ratio=0.0, solver="lbfgs",
                               class_weight=cfg.class_weight, max_iter=cfg.max_iter, tol=cfg.tol,
                               warm_start=True)
    for c in sorted(c_values):
      model.set_params(C=c)
      with warnings.catch_warnings(), threadpool_limits(cfg.blas_threads, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # detected below from n_iter_
        model.fit(x, y)
      n_iter = int(np.max(model.n_iter_))
      yield c, model, n_iter, n_iter < cfg.max_iter


def inner_folds(train: np.ndarray, subjects: np.ndarray, y: np.ndarray, config: ProbeConfig
                ) -> list[splits.Fold]:
  """Inner CV folds over positions 0..len(train)-1 of the outer training set (also the CNN
  baseline's inner validation split): by subject with two or more, else time blocks."""
  subj = subjects[train]
  if len(np.unique(subj)) >= 2:
    return splits.group_kfold(subj, config.inner_folds, y=y[train], seed=config.seed + 1)
  if len(train) < config.inner_folds * (2 * config.gap + 2):
    gap = 0
  else:
    gap = config.gap
  return splits.time_blocked_folds(len(train), config.inner_folds, gap)


def _standardise(fit: np.ndarray, *xs: np.ndarray) -> list[np.ndarray]:
  """StandardScaler fit on `fit`, applied to `xs`; NaN (missing) entries are ignored by the fit and
  imputed with the mean, i.e. 0 after scaling. A column missing everywhere in `fit` becomes 0."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: mean of empty slice
    scaler = StandardScaler().fit(fit)
    return [np.nan_to_num(scaler.transform(x), nan=0.0) for x in xs]


def _select_c(x: np.ndarray, y: np.ndarray, inner: list[splits.Fold], k: int,
              fitter: _Fitter, scaled: bool = False
              ) -> tuple[float | None, dict[float, float], int]:
  """Chooses C by mean inner macro AUROC -> (C, or None if untunable; scores; non-converged).

  `scaled`: x is already standardised (scaler="fold"); otherwise a scaler is fit per inner split
  (`_standardise`, NaN = missing).
  """
  cfg = fitter.config
  scores: dict[float, list[float]] = {c: [] for c in cfg.c_grid}
  not_converged = 0
  names = [str(i) for i in range(k)]
  for tr, va in inner:
    if len(np.unique(y[tr])) < 2 or len(np.unique(y[va])) < 2:
      continue
    if scaled:
      xtr, xva = x[tr], x[va]
    else:
      xtr, xva = _standardise(x[tr], x[tr], x[va])
    for c, model, _, ok in fitter.fit_path(xtr, y[tr], cfg.c_grid):
      not_converged += not ok
      auroc = classification_metrics(y[va], _full_proba(model, xva, k), names)["auroc_macro"]
      if np.isfinite(auroc):
        scores[c].append(auroc)
  mean = {c: float(np.mean(v)) for c, v in scores.items() if v}
  if not mean:
    return None, {}, not_converged
  best = max(mean.values())
  chosen = min(c for c, v in mean.items() if v >= best - 1e-12)
  return chosen, mean, not_converged


def run_probe(x: np.ndarray, y: np.ndarray, subjects: Sequence, classes: Sequence[str],
              config: ProbeConfig = ProbeConfig(), label_fraction: float = 1.0, task: str = "",
              feature: str = "", progress: bool = False,
              missing: np.ndarray | None = None) -> ProbeResult:
  """Cross-validated logistic-regression probe; predicts every labelled window once.

  Args:
    x: [n, d] features (rows in time order within each subject/recording).
    y: [n] class index, -1 = excluded (not used for training or testing).
    subjects: [n] subject id per window.
    classes: class names (K = len(classes); y in 0..K-1).
    config: protocol settings.
    label_fraction: fraction of each outer training set's labelled windows to train on
      (see `label_subset`); test sets are always complete.
    task, feature: names carried into the result.
    progress: show a tqdm bar over outer folds.
    missing: optional [n, d] bool, True where a value is missing (not measured): such entries are
      left out of the scaler's statistics and imputed with the training mean (0 after scaling).
      Any other non-finite value in x is an error.

  Returns:
    A `ProbeResult` with out-of-fold probabilities for all labelled windows.
  """
  t0 = time.time()
  x = np.asarray(x)
  if missing is not None:
    missing = np.asarray(missing, bool)
    if missing.shape != x.shape:
      raise ValueError(f"missing mask shape {missing.shape} != features shape {x.shape}")
    x = np.where(missing, np.nan, x)
  bad = ~np.isfinite(x)
  if missing is not None:
    bad &= ~missing
  if bad.any():
    rows, cols = np.nonzero(bad)
    raise ValueError(f"features '{feature}': {bad.sum()} non-finite values not marked missing "
                     f"(first at window {rows[0]}, column {cols[0]})")
  k = len(classes)
  plan = outer_folds(y, subjects, config, label_fraction)
  lab, yl, sl = plan.index, plan.y, plan.subjects
  xl = x[lab]
  fitter = _Fitter(config)
  prob = np.full((len(lab), k), np.nan)
  fold_of = np.full(len(lab), -1, np.int32)
  fold_info, notes = [], []
  folds = plan.folds
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    folds = tqdm(folds, desc=f"{task}/{feature}@{label_fraction:g}", leave=False)
  fold_scaler = config.scaler == "fold"
  for f, (train, test) in enumerate(folds):
    scaler_fit = plan.pools[f] if fold_scaler else train  # windows whose statistics scale the fold
    info: dict[str, Any] = {"fold": f, "n_train": int(len(train)), "n_test": int(len(test)),
                            "n_scaler": int(len(scaler_fit)),
                            "n_train_subjects": int(len(np.unique(sl[train]))),
                            "n_test_subjects": int(len(np.unique(sl[test])))}
    present = np.unique(yl[train])
    if len(present) < k:
      missing = [classes[c] for c in range(k) if c not in present]
      notes.append(f"fold {f}: classes {missing} absent from the training set (probability 0)")
    if len(present) < 2:
      notes.append(f"fold {f}: one class in training; predicting it for every test window")
      prob[test] = 0.0
      prob[test, present[0]] = 1.0
      fold_of[test] = f
      info.update(C=None, inner_scores={}, n_iter=0, converged=True, inner_not_converged=0)
      fold_info.append(info)
      continue
    inner = inner_folds(train, sl, yl, config)
    xtrain, xtest = _standardise(xl[scaler_fit], xl[train], xl[test])
    c, scores, inner_nc = _select_c(xtrain if fold_scaler else xl[train], yl[train], inner, k,
                                    fitter, scaled=fold_scaler)
    if c is None:
      c = 1.0
      notes.append(f"fold {f}: too few labelled windows for inner CV; C fixed at 1.0 (not tuned)")
    *_, (_, model, n_iter, ok) = fitter.fit_path(xtrain, yl[train], [c])
    prob[test] = _full_proba(model, xtest, k)
    fold_of[test] = f
    if not ok:
      notes.append(f"fold {f}: final fit did not converge in max_iter={config.max_iter} "
                   f"iterations (C={c:g}); raise max_iter")
    if inner_nc:
      notes.append(f"fold {f}: {inner_nc} inner-CV fit(s) hit max_iter={config.max_iter}")
    info.update(C=c, inner_scores={f"{key:g}": round(v, 5) for key, v in scores.items()},
                n_iter=n_iter, converged=bool(ok), inner_not_converged=int(inner_nc))
    fold_info.append(info)
  assert (fold_of >= 0).all(), "every labelled window is predicted exactly once"
  return ProbeResult(task=task, feature=feature, classes=list(classes),
                     label_fraction=float(label_fraction), scheme=plan.scheme, index=lab,
                     y_true=yl, y_prob=prob.astype(np.float32), fold=fold_of, unit=plan.units,
                     folds=fold_info, warnings=notes, seconds=time.time() - t0,
                     label_subjects=config.label_subjects)


def probe_embeddings(es: EmbeddingSet, task: str, feature: str,
                     config: ProbeConfig = ProbeConfig(), label_fraction: float = 1.0,
                     progress: bool = False) -> ProbeResult | Skipped:
  """Runs `run_probe` on one feature kind of an `EmbeddingSet` (see `EmbeddingSet.features`).

  Windows where none of the feature's modalities is present are left out (a per-modality probe is
  scored on the windows that have that modality); the probe is skipped, with the reason, when the
  task has no usable labels or the modality is absent everywhere.
  """
  y, classes = task_labels(es, task)
  has = es.feature_present(feature)
  if not has.any():
    reason = f"modality '{feature}' is absent from every window"
  else:
    y = np.where(has, y, -1)
    reason = skip_reason(y, task)
  if reason is not None:
    return Skipped(task, feature, reason)
  return run_probe(es.features(feature), y, es.subject_id, classes, config, label_fraction,
                   task=task, feature=feature, progress=progress,
                   missing=es.feature_missing(feature))


def to_predictions(result: ProbeResult, es: EmbeddingSet, name: str = "",
                   **meta: Any) -> Predictions:
  """Packs a probe's out-of-fold predictions with the window ids of `es`."""
  idx = result.index
  return Predictions(
      task=result.task, classes=result.classes, recording_id=es.recording_id[idx],
      epoch=es.epoch[idx], subject_id=es.subject_id[idx], start=es.start[idx],
      y_true=result.y_true, y_prob=result.y_prob, fold=result.fold, unit=result.unit,
      meta={"name": name, "feature": result.feature, "label_fraction": result.label_fraction,
            "label_subjects": result.label_subjects,
            "scheme": result.scheme, **meta})
