"""What an embedding encodes: linear recoverability of hand-made window features (no jax).

A diagnostic for what pretraining keeps and what it throws away. For each spectral feature of a
window (EEG band powers, EOG and chin power, heart rate and its variability, breathing rate and
amplitude, SpO2; `features.py`), a ridge regression from the embedding predicts the feature on
windows of subjects it was not fitted on (grouped K-fold). The score is the out-of-fold R²: 1 =
the embedding encodes the feature linearly, 0 = no better than the training subjects' mean.
Comparing a pretrained encoder with the untrained one says whether the contrastive objective
kept, strengthened or discarded that piece of information.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GroupKFold

ALPHAS = tuple(np.logspace(-2, 4, 7))


def recoverability(x: np.ndarray, targets: np.ndarray, groups: np.ndarray,
                   names: Sequence[str], *, folds: int = 3,
                   alphas: Sequence[float] = ALPHAS) -> dict[str, float]:
  """Out-of-fold R² of a ridge regression `x -> targets[:, j]`, per target, folds by `groups`.

  Args:
    x: [n, d] features (an embedding).
    targets: [n, k] values to recover; a column constant over the windows is skipped.
    groups: [n] fold groups (subjects): no group is both fitted and scored in one fold.
    names: the k target names (keys of the result).
    folds: grouped folds (at most the number of groups).
    alphas: ridge penalties, chosen per fold and target by RidgeCV's leave-one-out error on
      the fitting part.

  Returns:
    name -> R² over all windows (pooled out-of-fold predictions), for non-constant targets.
  """
  x = np.asarray(x, np.float64)
  targets = np.asarray(targets, np.float64)
  groups = np.asarray(groups)
  if len(x) != len(targets) or len(x) != len(groups):
    raise ValueError(f"x, targets and groups differ in length: {len(x)}, {len(targets)}, "
                     f"{len(groups)}")
  if targets.shape[1] != len(names):
    raise ValueError(f"{targets.shape[1]} target columns but {len(names)} names")
  keep = targets.std(0) > 0
  splitter = GroupKFold(n_splits=min(folds, len(np.unique(groups))))
  pred = np.zeros_like(targets)
  for fit, score in splitter.split(x, groups=groups):
    mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-12
    t_mu, t_sd = targets[fit].mean(0), targets[fit].std(0) + 1e-12
    model = RidgeCV(alphas=alphas, alpha_per_target=True)
    model.fit((x[fit] - mu) / sd, (targets[fit] - t_mu) / t_sd)
    pred[score] = model.predict((x[score] - mu) / sd) * t_sd + t_mu
  resid = ((targets - pred) ** 2).sum(0)
  total = ((targets - targets.mean(0)) ** 2).sum(0)
  return {str(n): float(1.0 - resid[j] / total[j])
          for j, n in enumerate(names) if keep[j]}


def group_means(r2: Mapping[str, float]) -> dict[str, float]:
  """Mean R² per feature group (the `eeg` of `eeg_rel_delta`: `features.GROUP_FEATURES`'s
  groups), in the order the groups first appear."""
  groups: dict[str, list[float]] = {}
  for name, value in r2.items():
    groups.setdefault(name.split("_", 1)[0], []).append(value)
  return {g: float(np.mean(v)) for g, v in groups.items()}
