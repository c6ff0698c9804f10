"""Splits of windows into named parts (`split_subjects`, `split_time_blocks`) and time-blocked
folds (`time_blocked_folds`).

Windows of one subject are strongly correlated, so a split is by subject wherever there are several:
a subject's recordings all land in the same part. With a single subject (one Sleep-EDF night), parts
and folds are contiguous blocks of time instead. numpy only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np


def _unit_hash(seed: int, subject_id: str) -> float:
  """A uniform number in [0, 1) that depends only on (seed, subject_id)."""
  digest = hashlib.sha256(f"{seed}\x00{subject_id}".encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def split_subjects(
    subject_ids: Iterable[str], fractions: Mapping[str, float], seed: int = 0
) -> dict[str, list[str]]:
  """Assigns every subject to exactly one split, deterministically and stably.

  Each subject gets a pseudo-random number u in [0, 1) from a hash of (seed, subject id), and lands
  in the split whose interval of the cumulative (normalised) fractions contains u, in the order the
  splits are given. A subject's split therefore depends only on its id, the seed and the fractions:
  adding subjects never moves existing ones (no leakage between an old test set and a new training
  set). Split sizes follow the fractions up to binomial noise. If a split would be empty, the
  subject whose u lies closest to that split's interval is moved into it from a split with more
  than one subject (deterministic; only happens for very few subjects).

  Args:
    subject_ids: subject ids (duplicates are ignored).
    fractions: split name -> positive weight, e.g. {"pretrain": 0.75, "downstream": 0.25}.
    seed: changes the assignment.

  Returns:
    split name -> sorted subject ids, in the order of `fractions`.

  Raises:
    ValueError: for non-positive fractions, or fewer subjects than splits (a split would be empty).
  """
  names = list(fractions)
  if not names:
    raise ValueError("fractions must name at least one split")
  w = np.array([float(fractions[n]) for n in names])
  if not np.all(np.isfinite(w)) or np.any(w <= 0):
    raise ValueError(f"split fractions must be positive, got {dict(fractions)}")
  edges = np.cumsum(w / w.sum())
  edges[-1] = 1.0
  lows = np.concatenate([[0.0], edges[:-1]])
  subjects = sorted({str(s) for s in subject_ids})
  if len(subjects) < len(names):
    raise ValueError(f"cannot split {len(subjects)} subject(s) into {len(names)} non-empty splits "
                     f"{names}: some split would be empty")
  u = {s: _unit_hash(seed, s) for s in subjects}
  assign = {s: int(np.searchsorted(edges, u[s], side="right")) for s in subjects}
  for i in range(len(names)):
    if any(a == i for a in assign.values()):
      continue
    sizes = np.bincount(list(assign.values()), minlength=len(names))
    donors = [s for s in subjects if sizes[assign[s]] > 1]
    dist = lambda s: max(lows[i] - u[s], u[s] - edges[i], 0.0)  # distance to [lows[i], edges[i])
    best = min(donors, key=lambda s: (dist(s), s))
    assign[best] = i
  return {n: sorted(s for s in subjects if assign[s] == i) for i, n in enumerate(names)}


def time_blocked_folds(n: int, k: int, gap: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
  """K-fold cross-validation over time for a single subject (or recording).

  The n windows are cut into k contiguous test blocks (sizes differ by at most one). For each fold
  the training set is everything outside the test block minus `gap` windows on each side of it, so
  that temporally adjacent (correlated) windows never sit on both sides of the split.

  Returns:
    [(train_idx, test_idx)] * k, int64 index arrays, both sorted.

  Raises:
    ValueError: if k < 2, k > n, gap < 0, or a fold would have no training windows.
  """
  if k < 2:
    raise ValueError(f"time_blocked_folds needs k >= 2, got {k}")
  if k > n:
    raise ValueError(f"cannot cut {n} windows into {k} non-empty blocks")
  if gap < 0:
    raise ValueError(f"gap must be >= 0, got {gap}")
  folds = []
  for test in np.array_split(np.arange(n, dtype=np.int64), k):
    lo, hi = int(test[0]) - gap, int(test[-1]) + gap
    all_idx = np.arange(n, dtype=np.int64)
    train = all_idx[(all_idx < lo) | (all_idx > hi)]
    if train.size == 0:
      raise ValueError(f"fold with test block [{test[0]}, {test[-1]}] and gap {gap} leaves no "
                       "training windows")
    folds.append((train, test))
  return folds


def split_time_blocks(
    recordings: Iterable[np.ndarray], fractions: Mapping[str, float], *, n_blocks: int = 10,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """Splits each recording's time line into contiguous blocks and deals blocks to splits.

  For one subject (e.g. a single Sleep-EDF night) a subject-wise split is impossible; this keeps
  windows of a split in long contiguous stretches instead of scattering single windows, and gives
  every split blocks from across the night (so no split is only the evening's wakefulness).
  Each recording's windows (given in time order) are cut into `n_blocks` contiguous blocks; each
  split gets a number of blocks proportional to its fraction (largest remainder, at least one block
  for every split), and which blocks go where is a seeded permutation per recording.

  Args:
    recordings: per recording, its window indices in time order.
    fractions: split name -> positive weight.
    n_blocks: blocks per recording (>= number of splits).
    seed: changes which blocks go to which split.

  Returns:
    split name -> sorted window indices (int64), in the order of `fractions`.
  """
  names = list(fractions)
  w = np.array([float(fractions[n]) for n in names])
  if not names or np.any(~np.isfinite(w)) or np.any(w <= 0):
    raise ValueError(f"split fractions must be positive, got {dict(fractions)}")
  if n_blocks < len(names):
    raise ValueError(f"n_blocks {n_blocks} < {len(names)} splits: some split would be empty")
  share = w / w.sum() * n_blocks
  counts = np.maximum(np.floor(share).astype(int), 1)
  while counts.sum() < n_blocks:  # largest remainder
    counts[int(np.argmax(share - counts))] += 1
  while counts.sum() > n_blocks:  # the floor of 1 overshot: take from the largest
    counts[int(np.argmax(counts))] -= 1
  owner = np.repeat(np.arange(len(names)), counts)
  out = {n: [] for n in names}
  for r, idx in enumerate(recordings):
    idx = np.asarray(idx, np.int64)
    perm = np.random.default_rng([seed, r]).permutation(owner)
    for block, split in zip(np.array_split(idx, n_blocks), perm):
      out[names[split]].append(block)
  return {n: np.sort(np.concatenate(v)) if v else np.zeros((0,), np.int64)
          for n, v in out.items()}
