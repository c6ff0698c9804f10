"""Subject splits: deterministic, stable, disjoint and complete; time-blocked folds."""

import numpy as np
import pytest

from sleepfm_jax.data.splits import split_subjects, time_blocked_folds


def test_split_is_deterministic_disjoint_and_complete():
  subjects = [f"sub-{i:03d}" for i in range(200)]
  fr = {"pretrain": 0.75, "downstream": 0.25}
  a = split_subjects(subjects, fr, seed=0)
  assert a == split_subjects(list(reversed(subjects)) + subjects[:5], fr, seed=0)
  assert sorted(a["pretrain"] + a["downstream"]) == subjects
  assert not set(a["pretrain"]) & set(a["downstream"])
  assert 120 <= len(a["pretrain"]) <= 180
  assert a != split_subjects(subjects, fr, seed=1)


def test_adding_subjects_never_moves_existing_ones():
  fr = {"train": 0.6, "val": 0.2, "test": 0.2}
  old = split_subjects([f"s{i}" for i in range(100)], fr, seed=7)
  new = split_subjects([f"s{i}" for i in range(150)], fr, seed=7)
  for name in fr:
    assert set(old[name]) <= set(new[name])


def test_small_sets_fill_every_split_and_errors_are_clear():
  for seed in range(20):
    s = split_subjects(["a", "b", "c"], {"x": 0.8, "y": 0.1, "z": 0.1}, seed=seed)
    assert all(len(v) == 1 for v in s.values())
  with pytest.raises(ValueError, match="empty"):
    split_subjects(["a"], {"x": 0.5, "y": 0.5}, seed=0)
  with pytest.raises(ValueError, match="positive"):
    split_subjects(["a", "b"], {"x": 1.0, "y": 0.0}, seed=0)


def test_time_blocked_folds():
  folds = time_blocked_folds(10, 3, gap=1)
  tests = [t.tolist() for _, t in folds]
  assert tests == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
  assert folds[1][0].tolist() == [0, 1, 2, 8, 9]  # 3 and 7 are the gap
  assert folds[0][0].tolist() == [5, 6, 7, 8, 9]
  all_test = np.concatenate([t for _, t in folds])
  assert sorted(all_test.tolist()) == list(range(10))
  with pytest.raises(ValueError):
    time_blocked_folds(3, 4, 0)
  with pytest.raises(ValueError, match="no training"):
    time_blocked_folds(4, 2, gap=5)
