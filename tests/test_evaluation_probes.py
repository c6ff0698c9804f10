"""Linear probes: learn what is there, find nothing where there is nothing, never leak."""

import numpy as np
import pytest

from eval_synth import embedding_set
from sleepfm_jax.evaluation.metrics import classification_metrics
from sleepfm_jax.evaluation.predictions import load_predictions
from sleepfm_jax.evaluation.probes import (ProbeConfig, Skipped, label_subset, probe_embeddings,
                                           run_probe, to_predictions)

FAST = ProbeConfig(c_grid=(0.01, 1.0), outer_folds=3, inner_folds=2)


@pytest.fixture(scope="module")
def informative(tmp_path_factory):
  return embedding_set(tmp_path_factory.mktemp("emb_good"), n_subjects=6, n_windows=100, dim=12,
                       separation=0.8, sdb_scored={1, 2, 4, 5}, absent={"ecg": {0, 3}})


@pytest.fixture(scope="module")
def uninformative(tmp_path_factory):
  return embedding_set(tmp_path_factory.mktemp("emb_rand"), n_subjects=6, n_windows=100, dim=12,
                       separation=0.0, seed=1)


def test_probe_learns_separable_embeddings(informative):
  res = probe_embeddings(informative, "staging", "concat", FAST)
  m = classification_metrics(res.y_true, res.y_prob, res.classes)
  assert m["auroc_macro"] > 0.9 and m["kappa"] > 0.6, m
  assert res.scheme == "subject" and res.converged and not res.warnings
  # Every labelled window predicted exactly once, by a fold that did not train on its subject.
  assert len(res.index) == (informative.stage >= 0).sum()
  assert len(np.unique(res.index)) == len(res.index)
  subj = informative.subject_id[res.index]
  for f in np.unique(res.fold):
    assert len(set(subj[res.fold == f])) == res.folds[f]["n_test_subjects"]
  assert sum(fd["n_train_subjects"] + fd["n_test_subjects"] for fd in res.folds) == 6 * 3
  np.testing.assert_allclose(res.y_prob.sum(1), 1.0, rtol=1e-5)
  sdb = probe_embeddings(informative, "sdb", "concat", FAST)
  assert classification_metrics(sdb.y_true, sdb.y_prob, sdb.classes)["auroc_macro"] > 0.85
  assert set(informative.subject_id[sdb.index]) == {"sub-001", "sub-002", "sub-004", "sub-005"}


def test_probe_on_random_embeddings_is_near_chance(uninformative):
  res = probe_embeddings(uninformative, "staging", "concat", FAST)
  auroc = classification_metrics(res.y_true, res.y_prob, res.classes)["auroc_macro"]
  assert 0.4 < auroc < 0.6, auroc


def test_absent_modality_windows_are_left_out_and_sdb_skip_is_explained(informative,
                                                                        uninformative):
  res = probe_embeddings(informative, "staging", "ecg", FAST)
  assert not {"sub-000", "sub-003"} & set(informative.subject_id[res.index])
  unscored = uninformative.subset(np.isin(uninformative.subject_id, ["sub-000"]))
  unscored.sdb[:] = -1
  skipped = probe_embeddings(unscored, "sdb", "concat", FAST)
  assert isinstance(skipped, Skipped) and "no recording has respiratory-event" in skipped.reason


def test_single_subject_uses_time_blocks(informative):
  one = informative.subset(informative.subject_id == "sub-001")
  res = probe_embeddings(one, "staging", "bas", ProbeConfig(c_grid=(1.0,), outer_folds=3,
                                                           inner_folds=2, gap=5, block=20))
  assert res.scheme == "time-block" and len(np.unique(res.unit)) == 5
  for fd in res.folds:  # the gap removes 5 windows on each inner side of the test block
    assert fd["n_train"] <= (one.stage >= 0).sum() - fd["n_test"] - 5


def test_label_subset_is_stratified_seeded_and_nested():
  rng = np.random.default_rng(0)
  y = rng.choice(5, 2000, p=[0.4, 0.05, 0.3, 0.15, 0.1])
  idx = np.arange(0, 2000, 2)
  small, mid = label_subset(idx, y, 0.01, seed=3), label_subset(idx, y, 0.1, seed=3)
  assert set(small) <= set(mid) <= set(idx)
  for c in range(5):
    n_c = (y[idx] == c).sum()
    assert (y[small] == c).sum() == max(1, int(np.ceil(0.01 * n_c)))
  assert label_subset(idx, y, 0.1, seed=3).tolist() == mid.tolist()
  assert label_subset(idx, y, 0.1, seed=4).tolist() != mid.tolist()
  assert label_subset(idx, y, 1.0, seed=3).tolist() == idx.tolist()


def test_non_convergence_is_reported_not_hidden():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 10))
  y = (x[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
  res = run_probe(x, y, np.repeat(np.arange(4), 50), ["a", "b"],
                  ProbeConfig(c_grid=(100.0,), max_iter=2, outer_folds=2, inner_folds=2))
  assert not res.converged
  assert any("did not converge" in w for w in res.warnings)
  assert all(fd["n_iter"] == 2 for fd in res.folds)


def test_predictions_round_trip(informative, tmp_path):
  res = probe_embeddings(informative, "staging", "bas", FAST, label_fraction=0.1)
  pred = to_predictions(res, informative, name="loo")
  back = load_predictions(pred.save(tmp_path / "p.npz"))
  assert back.task == "staging" and back.classes == ["W", "N1", "N2", "N3", "REM"]
  assert back.meta["label_fraction"] == 0.1 and back.name == "loo"
  np.testing.assert_array_equal(back.y_prob, pred.y_prob)
  np.testing.assert_array_equal(back.recording_id, informative.recording_id[res.index])
  np.testing.assert_array_equal(back.epoch, informative.epoch[res.index])
  np.testing.assert_array_equal(back.unit, res.unit)
  assert max(fd["n_train"] for fd in res.folds) < 0.15 * len(res.index)
