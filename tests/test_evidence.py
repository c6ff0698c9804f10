"""The evidence experiments (sleepfm_jax/evidence.py): inductive splits and a small end-to-end run."""

import dataclasses
import json

import numpy as np
import pytest

from sleepfm_jax import evidence
from sleepfm_jax.configs import pretrain
from sleepfm_jax.data.store import WindowStore
from sleepfm_jax.evaluation import embeddings as emb_format
from sleepfm_jax.evaluation import probes, results_doc
from sleepfm_jax.training import runs


@pytest.fixture(scope="module")
def one_night(tmp_path_factory):
  """A single-subject SYNTHETIC store (one 2-h night at 16 Hz): the shape of SC4001."""
  from sleepfm_jax.data import discovery, synthetic  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data.preprocess import preprocess  # pylint: disable=import-outside-toplevel

  root = tmp_path_factory.mktemp("one_night")
  synthetic.write_dataset(root / "edf", n_subjects=1, hours=2.0, seed=5, progress=False,
                          rates="eeg=64,eog=64,emg=64,ecg=64,resp=8,spo2=1", missing_prob=0.0)
  specs, _ = discovery.discover([str(root / "edf")])
  preprocess(specs, root / "store", {"sample_rate": 16, "sdb_scored": "yes"}, progress=False)
  return str(root / "store")


def test_single_night_probes_never_test_a_pretraining_window(one_night):
  store = WindowStore(one_night)
  config = pretrain.get_config("sleepedf")
  config.data.store = one_night
  config.data.modalities = ("bas", "ecg", "resp")
  config.data.pretrain_fraction = 0.5
  config.batch_size = 8
  plan = runs.plan_data(store, config)
  split = runs.split_record(store, plan, config)
  held = evidence.held_out_windows(split)
  np.testing.assert_array_equal(held, np.sort(plan.downstream))
  # A time split's parts are listed windows of the run's own store (the calibrated control's pool).
  np.testing.assert_array_equal(runs.part_windows(split, store, "pretrain"), np.sort(plan.pretrain))
  elsewhere = json.loads(json.dumps(split))
  elsewhere["store"] = "/another/store"
  with pytest.raises(ValueError, match="its own store"):
    runs.part_windows(elsewhere, store, "pretrain")
  seen = np.concatenate([plan.pretrain, plan.val])
  assert not np.isin(held, seen).any() and len(held) + len(seen) == len(store)
  assert 0.4 < len(held) / len(store) < 0.6
  # The evaluation windows are the held-out ones, and every probe test fold is drawn from them.
  lab = store.get_batch(np.arange(len(store)), modalities=())
  order = np.random.default_rng(0).permutation(len(store))  # an export's rows, in any order
  rows = evidence.store_rows(store, np.full(len(store), store.recording_ids[0])[order],
                             lab["epoch"][order])
  np.testing.assert_array_equal(rows, order)
  rows = evidence.store_rows(store, np.full(len(store), store.recording_ids[0]), lab["epoch"])
  np.testing.assert_array_equal(rows, np.arange(len(store)))
  inductive = np.isin(rows, held)
  y = np.where(inductive, lab["stage"], -1)
  plan_p = probes.outer_folds(y, np.zeros(len(store)), probes.ProbeConfig(outer_folds=3))
  for train, test in plan_p.folds:
    assert np.isin(rows[plan_p.index[test]], held).all()
    assert np.isin(rows[plan_p.index[train]], held).all()
  # A split whose held-out part touches the pretraining windows is refused.
  bad = json.loads(json.dumps(split))
  bad["parts"]["downstream"]["windows"].append(int(plan.pretrain[0]))
  with pytest.raises(ValueError, match="overlap"):
    evidence.held_out_windows(bad)


def test_synthetic_experiment_end_to_end_is_cached_and_renders(tmp_path):
  s = evidence.Settings(dataset="synthetic", workdir=str(tmp_path / "ev"), seeds=(0,),
                        subjects=8, hours=0.5, steps=4, modes=("leave_one_out",),
                        uncoupled_control=False, label_subjects=(1, 0), outer_folds=2,
                        retrieval_candidates=20, cnn=False, quick=True, progress=False,
                        spectral_modalities=("bas", "ecg+resp"), calibrated_control=2)
  out = evidence.run(s, log=lambda m: None)
  sources = {(r["source"], r["task"], r["feature"], r["labels"]) for r in out["metrics"]}
  for source, feature in (("loo", "concat"), ("untrained", "concat"), ("untrained_cal", "concat"),
                          ("spectral", "spectral"),
                          ("spectral_bas", "spectral"), ("spectral_ecg+resp", "spectral")):
    for task in ("staging", "sdb"):
      assert (source, task, feature, "1 subject") in sources
  assert any(lab.startswith("all (") for *_, lab in sources)
  for r in out["metrics"]:
    assert 0.0 <= r["auroc"] <= 1.0 and 0.0 <= r["auprc"] <= 1.0 and r["seed"] == 0
  directions = {r["direction"] for r in out["retrieval"] if r["source"] == "loo"}
  assert {"bas->ecg", "ecg->resp", "bas->others"} <= directions
  assert all(r["n_candidates"] == 20 for r in out["retrieval"])
  # Features of some modalities only: the same windows, other scores (SDB lives in resp).
  sdb = {r["source"]: r for r in out["metrics"] if r["task"] == "sdb" and r["labels"] != "1 subject"}
  assert sdb["spectral_bas"]["n"] == sdb["spectral"]["n"] == sdb["spectral_ecg+resp"]["n"]
  assert sdb["spectral_ecg+resp"]["auroc"] > sdb["spectral_bas"]["auroc"] + 0.1, sdb
  with pytest.raises(ValueError, match="spectral_modalities entry 'eeg'"):
    evidence.run(dataclasses.replace(s, spectral_modalities=("eeg",)))
  assert [b["source"] for b in out["budget"]] == ["loo"] and out["budget"][0]["steps"] == 4
  # Held-out subjects only: no probed window comes from a pretraining subject.
  split = runs.run_splits(str(tmp_path / "ev" / "seed_0" / "pretrain_loo"))
  es = emb_format.load_embeddings(tmp_path / "ev" / "seed_0" / "emb_loo")
  assert set(es.subject_id) == set(split["parts"]["downstream"]["subjects"])
  assert not set(es.subject_id) & set(split["parts"]["pretrain"]["subjects"])
  # The calibrated control: the same random weights, BN statistics from 2 pretraining batches.
  cal = emb_format.load_embeddings(tmp_path / "ev" / "seed_0" / "emb_untrained_cal")
  plain = emb_format.load_embeddings(tmp_path / "ev" / "seed_0" / "emb_untrained")
  assert cal.metadata["bn_calibration"]["batches"] == 2 and "bn_calibration" not in plain.metadata
  assert not np.allclose(cal.emb["bas"], plain.emb["bas"])
  assert {r["source"] for r in out["retrieval"]} == {"loo", "untrained", "untrained_cal"}
  with pytest.raises(ValueError, match="calibrated_control"):
    evidence.run(dataclasses.replace(s, dataset="sleepedf"))
  # Re-running reuses every cached unit and gives the same rows.
  again = evidence.run(s, log=lambda m: None)
  assert again["metrics"] == out["metrics"] and again["retrieval"] == out["retrieval"]
  (tmp_path / "r").mkdir()
  (tmp_path / "r" / "x.json").write_text(json.dumps(out))
  md = results_doc.render("<!-- results: x metric task=staging -->\n<!-- /results -->\n"
                          "<!-- results: x paired task=sdb pairs=loo-untrained -->\n"
                          "<!-- /results -->\n<!-- results: x retrieval -->\n<!-- /results -->",
                          tmp_path / "r")
  assert "| loo | concat |" in md and "| loo − untrained |" in md and "bas->ecg" in md


def test_the_cnn_trains_on_the_chosen_subset_of_the_probes_budgets():
  s = evidence.Settings(label_subjects=(1, 2, 4, 0), cnn_label_subjects=(1, 2, 0))
  blist = evidence.budgets(s, train_subjects=16)
  assert [b.name for b in evidence.cnn_budgets(s, blist)] == ["1 subject", "2 subjects",
                                                                "all (16)"]
  assert evidence.cnn_budgets(evidence.Settings(label_subjects=(1, 0)), blist) == blist
  e = evidence.Settings(dataset="sleepedf", label_fractions=(0.1, 1.0), cnn_label_fractions=(1.0,))
  assert [b.name for b in evidence.cnn_budgets(e, evidence.budgets(e))] == ["100 %"]


def test_pretrain_overrides_set_the_config_and_reject_unknown_keys():
  s = evidence.Settings(steps=10,
                        pretrain_overrides=("optim.lr=0.0005", "loss.temperature_init=2.0"))
  config = evidence.pretrain_config(s, "store", "leave_one_out", seed=1)
  default = evidence.pretrain_config(evidence.Settings(steps=10), "store", "leave_one_out", seed=1)
  assert config.optim.lr == 0.0005 and config.loss.temperature_init == 2.0
  assert default.optim.lr != 0.0005 and default.loss.temperature_init != 2.0
  assert config.loss.mode == "leave_one_out" and config.seed == 1  # the run's own keys still set
  for bad in ("optim.lr_typo=1", "optim.lr", "nothing.lr=1", "optim.lr='fast'"):
    with pytest.raises(ValueError, match="pretrain override"):
      evidence.pretrain_config(evidence.Settings(pretrain_overrides=(bad,)), "store",
                               "leave_one_out", seed=0)


def test_cached_probe_rows_follow_the_requested_budgets(tmp_path):
  """A rerun with more label budgets computes only the new ones; fewer budgets return only those
  (the cache once returned a stale file's budgets whatever --label_subjects said)."""
  calls = []

  def compute(budget_list):
    calls.append([b.name for b in budget_list])
    return [{"labels": b.name, "auroc": 0.5 + 0.1 * i} for i, b in enumerate(budget_list)]

  path = tmp_path / "probes_loo.json"
  b = evidence.budgets(evidence.Settings(label_subjects=(1, 2, 0)), train_subjects=17)
  first = evidence._json_by_budget(path, [b[2]], compute)
  assert [r["labels"] for r in first] == ["all (17)"] and calls == [["all (17)"]]
  both = evidence._json_by_budget(path, b, compute)
  assert calls[-1] == ["1 subject", "2 subjects"]
  assert sorted(r["labels"] for r in both) == ["1 subject", "2 subjects", "all (17)"]
  assert [r["auroc"] for r in both if r["labels"] == "all (17)"] == [0.5]  # cached value kept
  again = evidence._json_by_budget(path, [b[0]], compute)
  assert len(calls) == 2 and [r["labels"] for r in again] == ["1 subject"]

  def compute_cnn(budget_list):
    return {"rows": [{"labels": x.name} for x in budget_list],
            "budget": [{"labels": x.name, "steps": [1]} for x in budget_list]}

  cnn = tmp_path / "cnn_staging.json"
  evidence._json_by_budget(cnn, [b[0]], compute_cnn)
  out = evidence._json_by_budget(cnn, b[:2], compute_cnn)
  assert [r["labels"] for r in out["rows"]] == ["1 subject", "2 subjects"]
  assert [r["labels"] for r in out["budget"]] == ["1 subject", "2 subjects"]


def test_pooled_features_have_no_retrieval_rows(tmp_path):
  """Pooled features are not aligned across modalities: no retrieval is computed or cached."""
  def compute():
    raise AssertionError("retrieval computed for pooled features")

  assert evidence._retrieval(tmp_path / "r.json", evidence.Settings(features="pooled"),
                             compute) == []
  assert not (tmp_path / "r.json").exists()
  rows = [{"direction": "bas->ecg", "recall@10": 0.5}]
  assert evidence._retrieval(tmp_path / "r.json", evidence.Settings(), lambda: rows) == rows


@pytest.mark.parametrize("written", [{}, {"features": "embedding"}, {"features": "pooled"}])
def test_a_cached_export_of_other_features_is_an_error(tmp_path, written):
  """A workdir's cached export feeds all its probes: one of the other features must not be
  reused silently (an index without "features" predates the option and holds embeddings)."""
  out = tmp_path / "emb_loo"
  w = emb_format.EmbeddingWriter(out, **written)
  rng = np.random.default_rng(0)
  w.write("r1", "s1", emb={m: rng.normal(size=(4, 8)) for m in ("bas", "ecg", "resp")},
          stage=[0, 1, 2, 3])
  w.finalize()
  have = written.get("features", "embedding")
  other = "pooled" if have == "embedding" else "embedding"
  assert len(evidence.embeddings("unused", "unused", out, ["r1"], features=have)) == 4
  with pytest.raises(ValueError, match=f"holds '{have}' features, this run asks for '{other}'"):
    evidence.embeddings("unused", "unused", out, ["r1"], features=other)


def test_unnormalised_synthetic_store_shares_the_nights_and_keeps_physical_units(tmp_path):
  """`normalise="none"` preprocesses the same generated nights into a store of its own, in
  physical units and float32; the default store is robust-normalised float16."""
  s = evidence.Settings(workdir=str(tmp_path), subjects=1, hours=0.25, sample_rate=16,
                        progress=False)
  robust = WindowStore(evidence.synthetic_store(tmp_path, s, "physiological"))
  raw = WindowStore(evidence.synthetic_store(
      tmp_path, dataclasses.replace(s, normalise="none"), "physiological"))
  assert robust.path != raw.path and len(list(tmp_path.glob("data_*"))) == 1
  index = {k: json.loads((st.path / "index.json").read_text())["preprocessing"]
           for k, st in (("robust", robust), ("none", raw))}
  assert (index["robust"]["normalise"], index["robust"]["dtype"]) == ("robust", "float16")
  assert (index["none"]["normalise"], index["none"]["dtype"]) == ("none", "float32")
  a, b = robust.get_batch(np.arange(len(robust))), raw.get_batch(np.arange(len(raw)))
  assert np.abs(np.median(a["bas"])) < 1.0 and np.all(np.isfinite(b["resp"]))
  assert np.nanmax(np.abs(b["resp"])) > 50.0  # SpO2 in %, airflow in a.u.: not normalised
  with pytest.raises(ValueError, match="normalise"):
    evidence.run(dataclasses.replace(s, normalise="zscore"))
