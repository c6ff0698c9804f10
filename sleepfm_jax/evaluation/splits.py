"""Evaluation splits that never leak a subject: grouped K-fold and time-blocked folds.

Windows of one subject are strongly correlated (same night, same body, same amplifier), so every
split here keeps each subject entirely on one side. With a single subject there is nothing to group
by; then folds are contiguous blocks of time with a gap of `gap` windows dropped on both sides of
the test block, so neighbouring epochs (which share context) do not straddle the boundary.

All functions are deterministic given `seed` and return sorted integer index arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from sleepfm_jax.data.splits import time_blocked_folds  # one definition, shared with training

__all__ = ["Fold", "SplitPlan", "group_kfold", "group_train_test_split", "plan_splits",
           "time_blocked_folds", "time_blocks"]

Fold = tuple[np.ndarray, np.ndarray]  # (train indices, test indices)


def _label_counts(inverse: np.ndarray, n_groups: int, y: np.ndarray | None) -> np.ndarray:
  """[n_groups, 1 + n_classes]: windows per group, then labelled windows per class (y >= 0)."""
  cols = [np.bincount(inverse, minlength=n_groups)]
  if y is not None:
    y = np.asarray(y)
    for c in np.unique(y[y >= 0]):
      cols.append(np.bincount(inverse[y == c], minlength=n_groups))
  return np.stack(cols, axis=1).astype(np.float64)


def group_kfold(groups: Sequence, k: int, y: Sequence[int] | None = None, seed: int = 0
                ) -> list[Fold]:
  """Subject-wise K-fold, balanced in size and (if `y` is given) in label prevalence.

  Groups are visited largest first (ties in a seeded random order) and each is put in the fold
  whose share of every class (and of all windows) it raises least: fold f gets the group that
  minimises sum_c counts[f, c] * g_c / total_c², a greedy balancing of the per-class shares.
  With fewer groups than `k`, returns one fold per group (leave-one-subject-out).

  Args:
    groups: [n] subject id per window.
    k: number of folds.
    y: optional [n] labels (negative = unlabelled; ignored for stratification).
    seed: tie-breaking seed.

  Returns:
    `min(k, n_groups)` (train, test) index pairs; test sets partition `range(n)`.
  """
  uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
  n_groups = len(uniq)
  if n_groups < 2:
    raise ValueError("group_kfold needs at least 2 groups; use time_blocked_folds for one subject")
  k = min(k, n_groups)
  counts = _label_counts(inverse, n_groups, y)
  totals = np.maximum(counts.sum(0), 1.0)
  rng = np.random.default_rng(seed)
  order = rng.permutation(n_groups)
  order = order[np.argsort(-counts[order].sum(1), kind="stable")]
  fold_counts = np.zeros((k, counts.shape[1]))
  fold_of = np.empty(n_groups, np.int64)
  for g in order:
    cost = fold_counts @ (counts[g] / totals**2)
    empty = fold_counts[:, 0] == 0
    if empty.any():  # every fold gets a group before any gets a second
      cost = np.where(empty, -1.0, cost)
    f = int(np.argmin(cost))
    fold_of[g] = f
    fold_counts[f] += counts[g]
  window_fold = fold_of[inverse]
  all_idx = np.arange(len(inverse))
  return [(all_idx[window_fold != f], all_idx[window_fold == f]) for f in range(k)]


def group_train_test_split(groups: Sequence, test_fraction: float = 0.2,
                           y: Sequence[int] | None = None, seed: int = 0) -> Fold:
  """One subject-wise train/test split: the first fold of `round(1 / test_fraction)` folds."""
  if not 0 < test_fraction < 1:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  k = max(2, round(1 / test_fraction))
  return group_kfold(groups, k, y=y, seed=seed)[0]


def time_blocks(n: int, block: int) -> np.ndarray:
  """[n] block id of each window: consecutive runs of `block` windows (last one may be shorter)."""
  return np.arange(n) // max(1, block)


@dataclasses.dataclass(frozen=True)
class SplitPlan:
  """How a set of windows is split for evaluation.

  Attributes:
    scheme: "subject" (grouped K-fold) or "time-block" (a single subject).
    folds: (train, test) index pairs.
    units: [n] resampling / grouping unit per window: the subject id, or a time-block id.
  """

  scheme: str
  folds: list[Fold]
  units: np.ndarray


def plan_splits(subjects: Sequence, k: int, y: Sequence[int] | None = None, seed: int = 0,
                gap: int = 10, block: int = 60) -> SplitPlan:
  """Grouped K-fold when there are ≥ 2 subjects, time-blocked folds for a single subject.

  Args:
    subjects: [n] subject id per window, windows in time order within each recording.
    k: outer folds.
    y: optional labels for stratification (subject scheme only).
    seed: seed for the subject assignment.
    gap: windows dropped between train and test blocks (time-block scheme).
    block: windows per resampling unit in the time-block scheme (60 = 30 min).
  """
  subjects = np.asarray(subjects)
  if len(np.unique(subjects)) >= 2:
    return SplitPlan("subject", group_kfold(subjects, k, y=y, seed=seed), subjects.astype(str))
  n = len(subjects)
  return SplitPlan("time-block", time_blocked_folds(n, k, gap), time_blocks(n, block).astype(str))
