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


def test_label_subjects_keep_whole_subjects_nested_with_complete_test_folds():
  from sleepfm_jax.evaluation.probes import outer_folds  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  subjects = np.repeat([f"s{i:02d}" for i in range(20)], 30)
  y = rng.integers(0, 3, subjects.size)
  y[::17] = -1  # some windows unlabelled
  full = outer_folds(y, subjects, ProbeConfig(outer_folds=5))
  prev = None
  for k in (1, 2, 4, 8):
    plan = outer_folds(y, subjects, ProbeConfig(outer_folds=5, label_subjects=k))
    for f, ((train, test), (train_all, test_all)) in enumerate(
        zip(plan.folds, full.folds, strict=True)):
      assert test.tolist() == test_all.tolist()       # test folds never shrink
      chosen = np.unique(plan.subjects[train])
      assert len(chosen) == k                          # k whole subjects ...
      for s in chosen:                                 # ... with all their labelled windows
        assert (plan.subjects[train_all] == s).sum() == (plan.subjects[train] == s).sum()
      assert not set(chosen) & set(plan.subjects[test])
      if prev is not None:                             # 1 subject ⊂ 2 ⊂ 4 ⊂ 8
        assert set(np.unique(prev.subjects[prev.folds[f][0]])) <= set(chosen)
    prev = plan
  assert outer_folds(y, subjects, ProbeConfig(outer_folds=5, label_subjects=50)).folds[0][
      0].tolist() == full.folds[0][0].tolist()
  with pytest.raises(ValueError, match="subject-wise folds"):
    outer_folds(y[:100], np.zeros(100), ProbeConfig(outer_folds=2, label_subjects=1))


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


@pytest.mark.parametrize("scaler", ["fold", "labelled"])
def test_scaler_statistics_come_from_the_documented_windows(scaler):
  """A 10%-label probe equals a by-hand refit: scaler on the whole outer training fold ('fold')
  or on its labelled subset ('labelled'), logistic regression on the subset, one C."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.evaluation.probes import outer_folds  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(3)
  n, subjects = 400, np.repeat(np.arange(4), 100)
  y = rng.integers(0, 3, n)
  # Per-dimension scales spanning 1e-2..1e2 and a subject offset: the two scalers differ.
  x = (rng.normal(size=(n, 6)) + 0.7 * np.eye(3, 6)[y]) * np.logspace(-2, 2, 6) + subjects[:, None]
  cfg = ProbeConfig(c_grid=(0.3,), outer_folds=2, inner_folds=2, scaler=scaler)
  res = run_probe(x, y, subjects, ["a", "b", "c"], cfg, label_fraction=0.1)
  plan = outer_folds(y, subjects, cfg, 0.1)
  for f, (train, test) in enumerate(plan.folds):
    pool = plan.pools[f]
    assert set(train) <= set(pool) and not set(pool) & set(test)
    assert len(pool) + len(test) == n and len(train) < len(pool) / 5
    fit_on = pool if scaler == "fold" else train
    assert res.folds[f]["n_scaler"] == len(fit_on)
    sc = StandardScaler().fit(x[fit_on])
    model = LogisticRegression(C=0.3, class_weight="balanced", max_iter=5000, tol=1e-4)
    model.fit(sc.transform(x[train]), y[train])
    np.testing.assert_allclose(res.y_prob[test], model.predict_proba(sc.transform(x[test])),
                               atol=1e-4)
  other = run_probe(x, y, subjects, ["a", "b", "c"],
                    ProbeConfig(c_grid=(0.3,), outer_folds=2, inner_folds=2,
                                scaler="labelled" if scaler == "fold" else "fold"), 0.1)
  assert np.abs(other.y_prob - res.y_prob).max() > 1e-3  # the option changes the model


def test_unknown_scaler_is_refused():
  with pytest.raises(ValueError, match="scaler"):
    ProbeConfig(scaler="test")


def _absent_ecg_data(seed=0):
  """Six subjects; a weak BAS signal, a strong ECG one, and no ECG (stored as zeros) in 4 and 5."""
  rng = np.random.default_rng(seed)
  subjects = np.repeat(np.arange(6), 100)
  y = rng.integers(0, 2, len(subjects))
  bas = rng.normal(size=(len(y), 8)) + 0.8 * y[:, None]
  ecg = 3.0 + rng.normal(size=(len(y), 8)) + 1.5 * y[:, None]
  absent = subjects >= 4
  ecg[absent] = 0.0
  x = np.concatenate([bas, ecg], axis=1)
  missing = np.concatenate([np.zeros_like(bas, bool), np.repeat(absent[:, None], 8, axis=1)], 1)
  return x, y, subjects, missing


def test_missing_blocks_are_mean_imputed_not_read_as_zeros():
  x, y, subjects, missing = _absent_ecg_data()
  cfg = ProbeConfig(c_grid=(1.0,), outer_folds=3, inner_folds=2)
  masked = run_probe(x, y, subjects, ["a", "b"], cfg, missing=missing)
  zeros = run_probe(x, y, subjects, ["a", "b"], cfg)
  bas_only = run_probe(x[:, :8], y, subjects, ["a", "b"], cfg)
  auroc = lambda r, sel=slice(None): classification_metrics(
      r.y_true[sel], r.y_prob[sel], r.classes)["auroc_macro"]
  no_ecg = subjects[masked.index] >= 4
  # On the subjects without ECG the masked probe ranks as well as a BAS-only probe...
  assert abs(auroc(masked, no_ecg) - auroc(bas_only, no_ecg)) < 0.03
  # ...and pooled over all windows it beats reading the absent block as measured zeros.
  assert auroc(masked) > auroc(zeros) + 0.03, (auroc(masked), auroc(zeros), auroc(bas_only))
  # By hand, one fold: scaler statistics from the measured entries only; missing -> 0 (the mean).
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.evaluation.probes import outer_folds  # pylint: disable=import-outside-toplevel

  train, test = outer_folds(y, subjects, cfg).folds[0]
  xt = np.where(missing, np.nan, x)
  mu, sd = np.nanmean(xt[train], 0), np.nanstd(xt[train], 0)
  z = np.nan_to_num((xt - mu) / np.where(sd > 0, sd, 1.0), nan=0.0)
  model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000).fit(z[train], y[train])
  np.testing.assert_allclose(masked.y_prob[test], model.predict_proba(z[test]), atol=1e-4)


def test_unmarked_non_finite_features_are_refused():
  x, y, subjects, missing = _absent_ecg_data()
  x[7, 3] = np.nan
  with pytest.raises(ValueError, match="window 7, column 3"):
    run_probe(x, y, subjects, ["a", "b"], FAST)
  with pytest.raises(ValueError, match="shape"):
    run_probe(x, y, subjects, ["a", "b"], FAST, missing=missing[:, :3])
