"""Classification metrics and subject-level bootstrap confidence intervals.

Every metric is computed from per-window weights. With unit weights the numbers equal scikit-learn's
(`roc_auc_score`, `average_precision_score`, `accuracy_score`, `f1_score(average="macro")`,
`cohen_kappa_score`, `confusion_matrix`; tested). The bootstrap resamples *units* (subjects, or time
blocks for a single subject) with replacement; drawing a unit m times is the same as giving its
windows weight m, so each replicate is one weighted evaluation and whole batches of replicates are
computed with a few matrix operations — fast enough for 1000 replicates over 90,000 windows.

One-vs-rest conventions: the AUROC / AUPRC of a class is undefined (NaN) when the class has no
positive or no negative windows (e.g. a subject resample without N1); macro averages are over the
classes where it is defined. Macro F1 averages over classes that occur in y_true or in the
prediction (scikit-learn's default label set). Predictions are the arg-max of the probabilities.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np


def _curves(score: np.ndarray, positive: np.ndarray):
  """Sort order and distinct-threshold ends for one class, computed once and reused."""
  order = np.argsort(-score, kind="mergesort")
  s = score[order]
  ends = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
  return order, positive[order].astype(np.float64), ends


def _auroc_auprc(curve, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Weighted AUROC and average precision for a batch of weight vectors [B, n] -> ([B], [B])."""
  order, pos, ends = curve
  w = weights[:, order]
  tps = np.cumsum(w * pos.astype(w.dtype), axis=1)[:, ends].astype(np.float64)
  fps = np.cumsum(w, axis=1)[:, ends].astype(np.float64) - tps
  p, n = tps[:, -1], fps[:, -1]
  zero = np.zeros((w.shape[0], 1))
  tps0 = np.concatenate([zero, tps], axis=1)
  fps0 = np.concatenate([zero, fps], axis=1)
  area = np.sum(np.diff(fps0, axis=1) * (tps0[:, 1:] + tps0[:, :-1]) / 2.0, axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    auroc = np.where((p > 0) & (n > 0), area / (p * n), np.nan)
    denom = tps + fps
    precision = np.divide(tps, denom, out=np.zeros_like(tps), where=denom > 0)
    ap = np.sum(np.diff(tps0, axis=1) * precision, axis=1) / p
    auprc = np.where((p > 0) & (n > 0), ap, np.nan)
  return auroc, auprc


def _confusion_metrics(conf: np.ndarray) -> dict[str, np.ndarray]:
  """Accuracy, macro F1, Cohen's kappa and per-class F1 from weighted confusions [B, K, K]."""
  total = conf.sum(axis=(1, 2))
  tp = np.diagonal(conf, axis1=1, axis2=2)
  rows, cols = conf.sum(axis=2), conf.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    acc = tp.sum(1) / total
    occurs = (rows + cols) > 0
    f1 = np.where(occurs, 2 * tp / np.where(occurs, rows + cols, 1.0), np.nan)
    f1_macro = np.nanmean(np.where(occurs, f1, np.nan), axis=1)
    pe = np.sum(rows * cols, axis=1) / total**2
    kappa = np.where(pe < 1, (acc - pe) / (1 - pe), np.nan)
  return {"accuracy": acc, "f1_macro": f1_macro, "kappa": kappa, "f1": f1}


class _Evaluator:
  """Precomputes sort orders once; evaluates any batch of per-window weight vectors."""

  def __init__(self, y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str]):
    y_true = np.asarray(y_true, np.int64)
    y_prob = np.asarray(y_prob, np.float64)
    k = len(class_names)
    if y_prob.ndim != 2 or y_prob.shape != (len(y_true), k):
      raise ValueError(f"y_prob has shape {y_prob.shape}, expected {(len(y_true), k)}")
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= k):
      raise ValueError(f"y_true must be in 0..{k - 1} (filter unlabelled windows first)")
    self.k = k
    self.names = list(class_names)
    self.curves = [_curves(y_prob[:, c], y_true == c) for c in range(k)]
    y_pred = np.argmax(y_prob, axis=1)
    cell = y_true * k + y_pred
    self.onehot = np.zeros((len(y_true), k * k))
    self.onehot[np.arange(len(y_true)), cell] = 1.0

  def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    aurocs, auprcs = [], []
    for c in range(self.k):
      roc, pr = _auroc_auprc(self.curves[c], weights)
      aurocs.append(roc)
      auprcs.append(pr)
    aurocs, auprcs = np.stack(aurocs, 1), np.stack(auprcs, 1)
    with warnings.catch_warnings():  # all-NaN rows are expected in resamples
      warnings.simplefilter("ignore", RuntimeWarning)
      out["auroc_macro"] = np.nanmean(aurocs, axis=1)
      out["auprc_macro"] = np.nanmean(auprcs, axis=1)
    conf = (weights @ self.onehot).reshape(-1, self.k, self.k)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      cm = _confusion_metrics(conf)
    for key in ("accuracy", "f1_macro", "kappa"):
      out[key] = cm[key]
    for c, name in enumerate(self.names):
      out[f"auroc[{name}]"] = aurocs[:, c]
      out[f"auprc[{name}]"] = auprcs[:, c]
      out[f"f1[{name}]"] = cm["f1"][:, c]
    out["_confusion"] = conf
    return out


def classification_metrics(y_true: Sequence[int], y_prob: np.ndarray,
                           class_names: Sequence[str]) -> dict:
  """Point estimates for one set of predictions.

  Args:
    y_true: [n] class index per window (0..K-1; filter unlabelled windows beforehand).
    y_prob: [n, K] predicted probabilities (columns in `class_names` order).
    class_names: the K class names.

  Returns:
    A dict with scalars `auroc_macro`, `auprc_macro`, `accuracy`, `f1_macro`, `kappa`, per-class
    scalars `auroc[NAME]`, `auprc[NAME]`, `f1[NAME]` (NaN where undefined), `confusion` (K×K list,
    rows = true class, columns = predicted), `support` (windows per true class) and `n`.
  """
  ev = _Evaluator(y_true, y_prob, class_names)
  vals = ev(np.ones((1, len(np.asarray(y_true)))))
  out = {key: float(v[0]) for key, v in vals.items() if not key.startswith("_")}
  conf = vals["_confusion"][0]
  out["confusion"] = conf.astype(np.int64).tolist()
  out["support"] = conf.sum(axis=1).astype(np.int64).tolist()
  out["n"] = int(len(np.asarray(y_true)))
  return out


def unit_weights(units: Sequence, n_boot: int, seed: int = 0):
  """Bootstrap draws of units: (inverse [n] unit index per window, counts [n_boot, U]).

  Row b of `counts` says how many times each unit was drawn in replicate b (U draws with
  replacement); `counts[:, inverse]` are the per-window weights.
  """
  uniq, inverse = np.unique(np.asarray(units), return_inverse=True)
  u = len(uniq)
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, u, size=(n_boot, u))
  flat = (np.arange(n_boot)[:, None] * u + draws).ravel()
  counts = np.bincount(flat, minlength=n_boot * u).reshape(n_boot, u).astype(np.float64)
  return inverse, counts


def bootstrap_metrics(y_true: Sequence[int], y_prob: np.ndarray, class_names: Sequence[str],
                      units: Sequence, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                      chunk: int = 32) -> dict:
  """Point estimates with percentile bootstrap CIs, resampling units (subjects) with replacement.

  Each replicate draws U units with replacement from the U distinct values of `units` and gives each
  window the number of times its unit was drawn as weight. Metrics undefined in a replicate (a class
  absent from it) are left out of that metric's percentile; `n_valid` says how many replicates
  defined it.

  Args:
    y_true, y_prob, class_names: as in `classification_metrics`.
    units: [n] resampling unit per window (subject ids; time-block ids for one subject).
    n_boot: number of replicates (0: point estimates only).
    seed: seed of the resampling.
    alpha: 1 - confidence level (0.05 → 95% intervals).
    chunk: replicates evaluated per batch (memory ≈ chunk × n × 8 bytes × a few).

  Returns:
    `classification_metrics(...)` plus `ci`: {metric: {"lo", "hi", "n_valid"}} for every scalar
    metric, and `bootstrap`: {"n_boot", "seed", "alpha", "units", "n_units", "method"}.
  """
  result = classification_metrics(y_true, y_prob, class_names)
  units = np.asarray(units)
  n_units = int(len(np.unique(units)))
  result["bootstrap"] = {"n_boot": int(n_boot), "seed": int(seed), "alpha": alpha,
                         "n_units": n_units,
                         "method": "percentile, units resampled with replacement"}
  if n_boot <= 0:
    return result
  ev = _Evaluator(y_true, y_prob, class_names)
  inverse, counts = unit_weights(units, n_boot, seed)
  # Integer weights: float32 sums are exact while every total stays below 2**24 (faster).
  if counts.max(initial=0) * len(inverse) < 2**24:
    counts = counts.astype(np.float32)
  reps: dict[str, list[np.ndarray]] = {}
  for lo in range(0, n_boot, chunk):
    vals = ev(counts[lo:lo + chunk][:, inverse])
    for key, v in vals.items():
      if not key.startswith("_"):
        reps.setdefault(key, []).append(v)
  ci = {}
  for key, parts in reps.items():
    v = np.concatenate(parts)
    v = v[np.isfinite(v)]
    if len(v):
      lo_, hi_ = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
      ci[key] = {"lo": float(lo_), "hi": float(hi_), "n_valid": int(len(v))}
    else:
      ci[key] = {"lo": float("nan"), "hi": float("nan"), "n_valid": 0}
  result["ci"] = ci
  return result
