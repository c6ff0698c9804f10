"""Metrics equal scikit-learn's; the subject bootstrap behaves like a bootstrap should."""

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from sleepfm_jax.evaluation.metrics import (_Evaluator, bootstrap_metrics,
                                            classification_metrics, unit_weights)

STAGES = ["W", "N1", "N2", "N3", "REM"]


def _example(n=400, k=5, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, k, n)
  logits = rng.normal(size=(n, k))
  logits[np.arange(n), y] += 1.0
  logits[:, 1] = np.round(logits[:, 1], 1)  # ties in one column
  p = np.exp(logits)
  return y, p / p.sum(1, keepdims=True)


def test_equals_sklearn_multiclass():
  y, p = _example()
  m = classification_metrics(y, p, STAGES)
  onehot = label_binarize(y, classes=range(5))
  pred = p.argmax(1)
  assert m["auroc_macro"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"), abs=1e-12)
  assert m["auprc_macro"] == pytest.approx(skm.average_precision_score(onehot, p), abs=1e-12)
  assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
  assert m["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
  assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred), abs=1e-12)
  assert m["confusion"] == skm.confusion_matrix(y, pred, labels=range(5)).tolist()
  for c, name in enumerate(STAGES):
    assert m[f"auroc[{name}]"] == pytest.approx(skm.roc_auc_score(y == c, p[:, c]), abs=1e-12)
    assert m[f"auprc[{name}]"] == pytest.approx(
        skm.average_precision_score(y == c, p[:, c]), abs=1e-12)
  assert m["f1[N2]"] == pytest.approx(skm.f1_score(y, pred, labels=[2], average="macro"))
  assert m["support"] == np.bincount(y, minlength=5).tolist() and m["n"] == 400


def test_equals_sklearn_binary_and_handwritten():
  y = np.array([0, 0, 1, 1, 1, 0])
  p1 = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.2])
  m = classification_metrics(y, np.stack([1 - p1, p1], 1), ["no", "yes"])
  assert m["auroc[yes]"] == pytest.approx(skm.roc_auc_score(y, p1))
  # By hand: positives 0.35, 0.8, 0.4 vs negatives 0.1, 0.4, 0.2 -> (2 + 3 + 2.5) / 9.
  assert m["auroc[yes]"] == pytest.approx(7.5 / 9)
  assert m["auprc[yes]"] == pytest.approx(skm.average_precision_score(y, p1))
  assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y, p1 > 0.5))


def test_weights_equal_repetition_and_sklearn_sample_weight():
  y, p = _example(n=120, seed=3)
  w = np.random.default_rng(4).integers(0, 4, 120).astype(float)
  ev = _Evaluator(y, p, STAGES)
  got = {k: v[0] for k, v in ev(w[None]).items() if not k.startswith("_")}
  rep = np.repeat(np.arange(120), w.astype(int))
  ref = classification_metrics(y[rep], p[rep], STAGES)
  for key in ("auroc_macro", "auprc_macro", "accuracy", "f1_macro", "kappa", "auroc[N1]"):
    assert got[key] == pytest.approx(ref[key], abs=1e-12), key
  assert got["auroc[N3]"] == pytest.approx(
      skm.roc_auc_score(y == 3, p[:, 3], sample_weight=w), abs=1e-12)
  assert got["kappa"] == pytest.approx(
      skm.cohen_kappa_score(y, p.argmax(1), sample_weight=w), abs=1e-12)


def test_missing_class_is_nan_and_left_out_of_macro():
  y, p = _example(n=200, seed=5)
  keep = y != 1  # no N1 at all
  m = classification_metrics(y[keep], p[keep], STAGES)
  assert np.isnan(m["auroc[N1]"]) and np.isnan(m["auprc[N1]"])
  others = [m[f"auroc[{s}]"] for s in STAGES if s != "N1"]
  assert m["auroc_macro"] == pytest.approx(np.mean(others))


def _subject_data(n_subjects, per_subject=40, seed=0):
  rng = np.random.default_rng(seed)
  units = np.repeat(np.arange(n_subjects), per_subject)
  y = rng.integers(0, 5, len(units))
  skill = rng.uniform(0.3, 1.5, n_subjects)[units]  # subjects differ in difficulty
  logits = rng.normal(size=(len(y), 5))
  logits[np.arange(len(y)), y] += skill
  p = np.exp(logits)
  return y, p / p.sum(1, keepdims=True), units


def test_bootstrap_ci_contains_point_and_narrows_with_more_subjects():
  widths = []
  for n_subjects in (6, 60):
    y, p, units = _subject_data(n_subjects)
    r = bootstrap_metrics(y, p, STAGES, units, n_boot=300, seed=1)
    for key in ("auroc_macro", "accuracy", "kappa", "f1_macro", "auprc_macro"):
      ci = r["ci"][key]
      assert ci["lo"] <= r[key] <= ci["hi"], (key, ci, r[key])
      assert ci["n_valid"] == 300
    widths.append(r["ci"]["auroc_macro"]["hi"] - r["ci"]["auroc_macro"]["lo"])
    assert r["bootstrap"]["n_units"] == n_subjects
  assert widths[1] < 0.6 * widths[0], widths
  # Deterministic given the seed; another seed gives other intervals.
  y, p, units = _subject_data(6)
  a = bootstrap_metrics(y, p, STAGES, units, n_boot=50, seed=7)["ci"]
  b = bootstrap_metrics(y, p, STAGES, units, n_boot=50, seed=7)["ci"]
  c = bootstrap_metrics(y, p, STAGES, units, n_boot=50, seed=8)["ci"]
  assert a == b and a != c


def test_bootstrap_replicate_equals_explicit_resample():
  y, p, units = _subject_data(5, per_subject=10, seed=2)
  inverse, counts = unit_weights(units, 3, seed=11)
  ev = _Evaluator(y, p, STAGES)
  for b in range(3):
    rep = np.concatenate([np.nonzero(units == u)[0] for u in range(5)
                          for _ in range(int(counts[b, u]))])
    ref = classification_metrics(y[rep], p[rep], STAGES)
    got = ev(counts[b:b + 1][:, inverse])
    assert got["auroc_macro"][0] == pytest.approx(ref["auroc_macro"], abs=1e-12)
    assert got["kappa"][0] == pytest.approx(ref["kappa"], abs=1e-12)


def test_bootstrap_handles_classes_missing_from_resamples():
  # N1 occurs in one subject only: many resamples lack it; its AUROC has fewer valid replicates.
  y, p, units = _subject_data(8, per_subject=30, seed=4)
  y = np.where((y == 1) & (units != 0), 2, y)
  r = bootstrap_metrics(y, p, STAGES, units, n_boot=200, seed=0)
  assert 0 < r["ci"]["auroc[N1]"]["n_valid"] < 200
  assert r["ci"]["auroc_macro"]["n_valid"] == 200
  assert np.isfinite(r["ci"]["auroc_macro"]["lo"])


def test_wake_oracle_scores_what_the_wake_share_gives_away():
  from sleepfm_jax.evaluation.references import wake_oracle  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  y = rng.choice(5, size=4000, p=[0.75, 0.05, 0.1, 0.06, 0.04])
  prob = wake_oracle(y, seed=1)
  np.testing.assert_allclose(prob.sum(1), 1.0)
  m = classification_metrics(y, prob, ["W", "N1", "N2", "N3", "REM"])
  # W is separated perfectly; a sleep stage beats every wake window and half the other sleep
  # windows: AUROC = (n_wake + 0.5 n_other_sleep) / n_negative.
  n = np.bincount(y, minlength=5)
  expect = [1.0] + [(n[0] + 0.5 * (n[1:].sum() - n[c])) / (len(y) - n[c]) for c in range(1, 5)]
  np.testing.assert_allclose(m["auroc_macro"], np.mean(expect), atol=0.01)
  assert m["auroc_macro"] > 0.9
  # Cropped to the sleep period (little wake), the same oracle is far weaker.
  y2 = rng.choice(5, size=4000, p=[0.2, 0.1, 0.35, 0.2, 0.15])
  assert classification_metrics(y2, wake_oracle(y2), ["W", "N1", "N2", "N3", "REM"])[
      "auroc_macro"] < 0.8
