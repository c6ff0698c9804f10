"""Evaluation splits: no subject ever straddles train and test; time blocks keep their gap."""

import numpy as np
import pytest

from sleepfm_jax.evaluation import splits


@pytest.mark.parametrize("seed", range(12))
def test_group_kfold_never_leaks_a_subject(seed):
  rng = np.random.default_rng(seed)
  n_groups = int(rng.integers(2, 15))
  sizes = rng.integers(1, 60, n_groups)
  groups = rng.permutation(np.repeat([f"s{g}" for g in range(n_groups)], sizes))
  y = rng.integers(-1, 5, len(groups))
  k = int(rng.integers(2, 7))
  folds = splits.group_kfold(groups, k, y=y, seed=seed)
  assert len(folds) == min(k, n_groups)
  tests = np.concatenate([te for _, te in folds])
  np.testing.assert_array_equal(np.sort(tests), np.arange(len(groups)))  # a partition
  for train, test in folds:
    assert len(test) > 0
    assert not set(groups[train]) & set(groups[test])
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])),
                                  np.arange(len(groups)))
  assert splits.group_kfold(groups, k, y=y, seed=seed)[0][1].tolist() == folds[0][1].tolist()


def test_group_kfold_balances_label_prevalence():
  # 20 subjects, half of them with mostly positive windows: every fold should see both kinds.
  rng = np.random.default_rng(0)
  groups = np.repeat(np.arange(20), 50)
  y = np.where(np.repeat(np.arange(20) % 2 == 0, 50), rng.random(1000) < 0.8,
               rng.random(1000) < 0.1).astype(int)
  folds = splits.group_kfold(groups, 5, y=y, seed=3)
  prevalence = [y[te].mean() for _, te in folds]
  assert max(prevalence) - min(prevalence) < 0.15, prevalence
  sizes = [len(te) for _, te in folds]
  assert max(sizes) - min(sizes) <= 50


def test_group_kfold_needs_two_groups():
  with pytest.raises(ValueError, match="at least 2 groups"):
    splits.group_kfold(np.zeros(10), 3)


def test_train_test_split_is_subject_wise():
  groups = np.repeat(np.arange(10), 7)
  train, test = splits.group_train_test_split(groups, 0.2, seed=1)
  assert not set(groups[train]) & set(groups[test])
  assert len(np.unique(groups[test])) == 2


@pytest.mark.parametrize("n,k,gap", [(100, 5, 10), (37, 3, 2), (10, 2, 0), (50, 4, 8)])
def test_time_blocked_folds_have_the_gap(n, k, gap):
  folds = splits.time_blocked_folds(n, k, gap)
  assert len(folds) == k
  tests = [te for _, te in folds]
  np.testing.assert_array_equal(np.concatenate(tests), np.arange(n))  # contiguous, in order
  for train, test in folds:
    assert (np.diff(test) == 1).all()
    dist = np.min(np.abs(train[:, None] - test[None, :]), axis=1) if len(train) else np.zeros(0)
    assert (dist > gap).all()
    expected = np.setdiff1d(np.arange(n), np.arange(test[0] - gap, test[-1] + gap + 1))
    np.testing.assert_array_equal(train, expected)  # nothing else is dropped


def test_time_blocked_folds_refuse_a_gap_that_leaves_no_training_windows():
  with pytest.raises(ValueError, match="leaves no training windows"):
    splits.time_blocked_folds(50, 4, 30)


def test_plan_splits_switches_to_time_blocks_for_one_subject():
  plan = splits.plan_splits(np.full(300, "only"), k=3, gap=5, block=60)
  assert plan.scheme == "time-block"
  assert len(np.unique(plan.units)) == 5
  assert plan.folds[1][0].max() == 299 and 100 - 5 - 1 in plan.folds[1][0]
  assert 100 - 5 not in plan.folds[1][0]
  plan = splits.plan_splits(np.repeat(["a", "b", "c"], 10), k=5)
  assert plan.scheme == "subject" and len(plan.folds) == 3
  assert set(plan.units) == {"a", "b", "c"}
