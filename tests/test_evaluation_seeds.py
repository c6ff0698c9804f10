"""Multi-seed aggregation: mean +- sd per condition and paired per-seed differences."""

import numpy as np
import pytest

from sleepfm_jax.evaluation import seeds


def _rows():
  rows = []
  for seed, (loo, unt, cnn) in enumerate([(0.80, 0.70, 0.75), (0.84, 0.71, 0.70),
                                          (0.78, 0.74, 0.79)]):
    for source, v in (("loo", loo), ("untrained", unt), ("cnn", cnn)):
      rows.append({"source": source, "task": "staging", "labels": "1 subject", "seed": seed,
                   "auroc": v, "auprc": v - 0.3})
  rows.append({"source": "loo", "task": "sdb", "labels": "1 subject", "seed": 0, "auroc": 0.9})
  return rows


def test_aggregate_is_mean_and_sample_sd_per_condition():
  out = seeds.aggregate(_rows(), ("source", "task", "labels"), "auroc")
  assert [(e["source"], e["task"]) for e in out] == [
      ("loo", "staging"), ("untrained", "staging"), ("cnn", "staging"), ("loo", "sdb")]
  loo = out[0]
  assert loo["seeds"] == [0, 1, 2] and loo["n"] == 3
  np.testing.assert_allclose(loo["mean"], np.mean([0.80, 0.84, 0.78]))
  np.testing.assert_allclose(loo["sd"], np.std([0.80, 0.84, 0.78], ddof=1))
  assert out[3]["n"] == 1 and out[3]["sd"] == 0.0
  assert seeds.fmt(loo) == f"{np.mean([0.80, 0.84, 0.78]):.3f} ± {loo['sd']:.3f}"


def test_paired_differences_are_per_seed():
  out = seeds.paired(_rows(), ("task", "labels"), "auroc", "loo", "cnn")
  assert len(out) == 1  # sdb has no cnn row
  d = out[0]
  np.testing.assert_allclose(d["values"], [0.05, 0.14, -0.01])
  np.testing.assert_allclose(d["sd"], np.std([0.05, 0.14, -0.01], ddof=1))
  assert d["n_positive"] == 2 and d["seeds"] == [0, 1, 2]
  # Only seeds that both sides have are paired.
  rows = [r for r in _rows() if not (r["source"] == "cnn" and r["seed"] == 2)]
  d = seeds.paired(rows, ("task", "labels"), "auroc", "loo", "cnn")[0]
  assert d["seeds"] == [0, 1] and d["n"] == 2


def test_repeated_seed_is_an_error():
  rows = _rows() + [{"source": "loo", "task": "staging", "labels": "1 subject", "seed": 1,
                     "auroc": 0.5}]
  with pytest.raises(ValueError, match="repeated seeds"):
    seeds.aggregate(rows, ("source", "task", "labels"), "auroc")
  with pytest.raises(ValueError, match="appears twice"):
    seeds.paired(rows, ("task", "labels"), "auroc", "loo", "cnn")


def test_missing_values_are_left_out_not_zero():
  rows = [{"source": "a", "seed": 0, "m": 0.5}, {"source": "a", "seed": 1, "m": float("nan")},
          {"source": "a", "seed": 2, "m": 0.7}]
  e = seeds.aggregate(rows, ("source",), "m")[0]
  assert e["n"] == 2 and e["mean"] == pytest.approx(0.6)
  assert seeds.fmt({}) == "–"
