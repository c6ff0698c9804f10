"""Baselines: the spectral-feature model and the end-to-end CNN evaluate the windows, outer folds
and label subsets of the embedding probes on an export of the same recordings, out of fold; the
CNN learns; the spectral model stages the synthetic nights well above chance."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from conftest import REPO
from sleepfm_jax import export
from sleepfm_jax.configs import supervised as supervised_configs
from sleepfm_jax.data.store import WindowStore
from sleepfm_jax.evaluation import baselines, features, metrics, probes, suite
from sleepfm_jax.evaluation.embeddings import load_embeddings
from sleepfm_jax.evaluation.predictions import load_predictions
from sleepfm_jax.training import runs, supervised

PROBE = probes.ProbeConfig(outer_folds=3, inner_folds=2, c_grid=(0.1, 1.0))


def _quiet(*_):
  pass


@pytest.fixture(scope="module")
def run_info(synthetic_run, synthetic_store, tmp_path_factory):
  """An export of 4 of the 6 recordings (given in reverse store order), its recordings and the
  checkpoint's input channels."""
  workdir, _, _ = synthetic_run
  recordings = WindowStore(synthetic_store).recording_ids[::-1][:4]
  out = tmp_path_factory.mktemp("baselines") / "emb"
  index = export.export_store(str(workdir), synthetic_store, str(out), recordings=recordings,
                              progress=False)
  channels = runs.run_splits(str(workdir))["channels"]
  return load_embeddings(index.parent), recordings, channels


@pytest.fixture(scope="module")
def cnn_config():
  c = supervised_configs.get_config("demo")
  # Two MBConv stages: a third of TINY_MODEL's compile time; all three modalities.
  c.model.widths, c.model.depths, c.model.head_width = (8, 8, 8), (1, 1), 16
  c.model.dropout = 0.0
  c.num_devices = 1
  c.batch_size = 16
  c.eval_batch_size = 32
  c.optim.lr = 3e-3
  c.optim.schedule = "constant"
  c.optim.warmup_steps = 0
  c.optim.weight_decay = 0.0
  c.log_every = 1
  c.total_steps = 2  # per fold, in the cross-validation test
  return c


@pytest.fixture(scope="module")
def staging_trainer(cnn_config, synthetic_store):
  """One compiled trainer shared by the CNN tests (the compilation dominates their time)."""
  table = baselines.select_windows(synthetic_store)
  return supervised.Trainer(cnn_config, table.channels, table.channel_index, "staging", 5)


def _assert_same_as_probe(pred, es, task, fraction):
  """Same windows in the same order, same folds, labels and bootstrap units as the probe."""
  probe = probes.probe_embeddings(es, task, "concat", PROBE, fraction)
  ref = probes.to_predictions(probe, es)
  np.testing.assert_array_equal(pred.recording_id, ref.recording_id)
  np.testing.assert_array_equal(pred.epoch, ref.epoch)
  np.testing.assert_array_equal(pred.subject_id, ref.subject_id)
  np.testing.assert_array_equal(pred.start, ref.start)
  np.testing.assert_array_equal(pred.y_true, ref.y_true)
  np.testing.assert_array_equal(pred.fold, ref.fold)
  np.testing.assert_array_equal(pred.unit, ref.unit)
  assert pred.meta["scheme"] == probe.scheme


def _assert_covers_labelled_windows(pred, store_path, recordings, task):
  store = WindowStore(store_path)
  idx = np.concatenate([store.indices_for_recording(r) for r in recordings])
  lab = store.get_batch(idx, modalities=())
  y = lab["stage" if task == "staging" else "sdb"]
  keep = y >= 0
  rec = np.array(store.recording_ids)[lab["recording"]]
  np.testing.assert_array_equal(pred.recording_id, rec[keep])
  np.testing.assert_array_equal(pred.epoch, lab["epoch"][keep])
  np.testing.assert_array_equal(pred.y_true, y[keep])
  assert np.isfinite(pred.y_prob).all() and (pred.y_prob >= 0).all()
  np.testing.assert_allclose(pred.y_prob.sum(axis=1), 1.0, rtol=1e-5)


def _assert_subject_out_of_fold(pred):
  """Each subject is predicted in one fold only, so no fold's model saw a test subject."""
  for s in np.unique(pred.subject_id):
    assert len(np.unique(pred.fold[pred.subject_id == s])) == 1, s
  assert len(np.unique(pred.fold)) == PROBE.outer_folds


def test_window_table_matches_the_export(run_info, synthetic_store):
  es, recordings, channels = run_info
  table = baselines.select_windows(synthetic_store, recordings, channels)
  assert table.recordings == recordings == es.recordings
  np.testing.assert_array_equal(table.recording_id, es.recording_id)
  np.testing.assert_array_equal(table.epoch, es.epoch)
  np.testing.assert_array_equal(table.stage, es.stage)
  for m in table.modalities:
    np.testing.assert_array_equal(table.present[m], es.present[m])
  assert not table.present["ecg"].all()  # the subject without ECG is among them
  with pytest.raises(ValueError, match="not in the store"):
    baselines.select_windows(synthetic_store, ["nope"])
  with pytest.raises(ValueError, match="not in the store's montage"):
    baselines.select_windows(synthetic_store, channels={"bas": ["Fpz-Cz"]})


def test_spectral_baseline_uses_the_probe_windows_and_folds(run_info, synthetic_store):
  es, recordings, channels = run_info
  results = baselines.spectral_baseline(synthetic_store, ("staging", "sdb"), recordings=recordings,
                                        channels=channels, config=PROBE,
                                        label_fractions=(0.01, 1.0), progress=False, log=_quiet)
  assert sorted(results) == [("sdb", 0.01), ("sdb", 1.0), ("staging", 0.01), ("staging", 1.0)]
  for (task, fraction), pred in results.items():
    _assert_same_as_probe(pred, es, task, fraction)
    _assert_covers_labelled_windows(pred, synthetic_store, recordings, task)
    _assert_subject_out_of_fold(pred)
    assert pred.meta["label_fraction"] == fraction and pred.meta["feature"] == "spectral"
  # One subject: time-blocked folds with a gap, again the probe's.
  one = recordings[:1]
  single = baselines.spectral_baseline(synthetic_store, ("staging",), recordings=one,
                                       channels=channels, config=PROBE, progress=False,
                                       log=_quiet)[("staging", 1.0)]
  assert single.meta["scheme"] == "time-block"
  _assert_same_as_probe(single, load_embeddings(es.path, recordings=one), "staging", 1.0)


def test_spectral_baseline_stages_synthetic_nights(synthetic_store):
  """All 6 synthetic subjects at 32 Hz (45 min each), 5 subject-wise folds. Measured: staging
  macro AUROC 0.72 (N3 has 15 windows, 14 from one subject), kappa 0.44; SDB AUROC 0.97."""
  results = baselines.spectral_baseline(synthetic_store, ("staging", "sdb"), progress=False,
                                        log=_quiet)
  staging = results[("staging", 1.0)]
  m = metrics.classification_metrics(staging.y_true, staging.y_prob, staging.classes)
  assert m["auroc_macro"] > 0.65 and m["kappa"] > 0.3, m
  assert m["auroc[W]"] > 0.7 and m["auroc[N2]"] > 0.7, m
  sdb = results[("sdb", 1.0)]
  assert metrics.classification_metrics(sdb.y_true, sdb.y_prob, sdb.classes)["auroc_macro"] > 0.9


def test_spectral_baseline_on_some_modalities_reads_only_their_channels(synthetic_store):
  """`modalities`: the other groups' features are zeros (indicator 0), and each task reads its own
  modality: SDB from the respiratory channels alone, far weaker from the BAS channels alone."""
  table = baselines.select_windows(synthetic_store, modalities=("ecg",))
  assert table.modalities == ("ecg",)
  x = baselines.store_features(synthetic_store, table, progress=False)
  names = features.feature_names()
  ecg = [i for i, n in enumerate(names) if n.startswith("ecg_")]
  assert np.all(x[:, [i for i in range(len(names)) if i not in ecg]] == 0)
  assert np.any(x[:, ecg] != 0)
  auroc = {}
  for m in ("bas", "resp"):
    res = baselines.spectral_baseline(synthetic_store, ("sdb",), modalities=(m,), progress=False,
                                      log=_quiet)[("sdb", 1.0)]
    assert res.meta["modalities"] == [m]
    auroc[m] = metrics.classification_metrics(res.y_true, res.y_prob, res.classes)["auroc_macro"]
  assert auroc["resp"] > 0.85 and auroc["bas"] < auroc["resp"] - 0.15, auroc


def test_spectral_cli_takes_the_held_out_recordings_of_a_run(synthetic_run, synthetic_store,
                                                             tmp_path):
  workdir, _, _ = synthetic_run
  split = json.loads((workdir / runs.SPLITS_FILE).read_text())
  out = tmp_path / "spectral"
  subprocess.run([sys.executable, str(REPO / "experiments" / "spectral_baseline.py"),
                  f"--store={synthetic_store}", f"--split_from_checkpoint={workdir / 'best'}",
                  "--task=staging,sdb", "--folds=2", "--inner_folds=2", "--c_grid=1",
                  f"--out={out}"], check=True, cwd=REPO, capture_output=True, timeout=300,
                 env={**os.environ, "PYTHONPATH": str(REPO)})
  summary = json.loads((out / "summary.json").read_text())
  assert sorted(summary["files"]) == ["sdb@1", "staging@1"]
  pred = load_predictions(out / "staging_1.npz")
  assert sorted(set(pred.recording_id)) == split["parts"]["downstream"]["recordings"]
  assert pred.meta["split_from_checkpoint"].endswith("best")
  _assert_covers_labelled_windows(pred, synthetic_store, split["parts"]["downstream"]["recordings"],
                                  "staging")


def test_cnn_overfits_a_fixed_batch(staging_trainer, synthetic_store):
  store = WindowStore(synthetic_store)
  idx = np.sort(np.random.default_rng(0).choice(store.num_windows, 16, replace=False))
  batch = staging_trainer.inputs(store.get_batch(idx))
  assert len(np.unique(batch["label"])) >= 3
  weights = supervised.class_weights(batch["label"], 5, balanced=True)
  state, losses = staging_trainer.init(), []
  for _ in range(40):
    state, m = staging_trainer.step(state, batch, weights, 1e-2)
    losses.append(float(m["loss"]))
  assert losses[0] > 1.0 and losses[-1] < 0.05, losses[::5]


def test_cnn_step_closes_over_no_device_arrays(staging_trainer, synthetic_store):
  """As the pretraining steps (test_train.device_constants): nothing for the transfer guard to
  refuse on an accelerator."""
  from test_train import device_constants  # pylint: disable=import-outside-toplevel

  store = WindowStore(synthetic_store)
  batch = staging_trainer.inputs(store.get_batch(np.arange(16)))
  weights = supervised.class_weights(batch["label"], 5, balanced=True)
  traced = staging_trainer._train_step.trace(  # pylint: disable=protected-access
      staging_trainer.init(), batch, weights, 1e-3)
  assert device_constants(traced) == []


def test_cnn_predictions_are_out_of_fold_with_the_probe_folds(run_info, synthetic_store,
                                                              cnn_config, staging_trainer,
                                                              tmp_path):
  es, recordings, channels = run_info
  table = baselines.select_windows(synthetic_store, recordings, channels)
  store = WindowStore(synthetic_store)
  for fraction in (0.01, 1.0):
    pred, runs = supervised.cross_validate(
        synthetic_store, table, "staging", cnn_config, probe_config=PROBE, label_fraction=fraction,
        trainer=staging_trainer, log_dir=tmp_path / f"logs_{fraction:g}", progress=False,
        log=_quiet)
    _assert_same_as_probe(pred, es, "staging", fraction)
    _assert_covers_labelled_windows(pred, synthetic_store, recordings, "staging")
    _assert_subject_out_of_fold(pred)
    # The probe's training windows of each fold, from the export: exactly what the CNN trained on.
    y, _ = probes.task_labels(es, "staging")
    y = np.where(es.feature_present("concat"), y, -1)
    plan = probes.outer_folds(y, es.subject_id, PROBE, fraction)
    assert len(runs) == len(plan.folds)
    for run, (tr, te) in zip(runs, plan.folds):
      got = store.get_batch(run.train_index, modalities=())
      rows = plan.index[tr]
      np.testing.assert_array_equal(np.array(store.recording_ids)[got["recording"]],
                                    es.recording_id[rows])
      np.testing.assert_array_equal(got["epoch"], es.epoch[rows])
      assert len(run.test_index) == len(te)
      train_subjects = set(np.array(store.subject_ids)[store.subjects[run.train_index]])
      test_subjects = set(np.array(store.subject_ids)[store.subjects[run.test_index]])
      assert not train_subjects & test_subjects
      assert run.steps == 2 and np.isfinite(run.final_loss)
      lines = (tmp_path / f"logs_{fraction:g}" / f"fold_{run.fold}" / "metrics.jsonl"
               ).read_text().splitlines()
      assert [json.loads(r)["step"] for r in lines if json.loads(r)["split"] == "train"] == [1, 2]
      # Early stopping's inner validation windows come out of the fold's training windows.
      assert set(run.val_index) <= set(run.train_index)
    if fraction == 0.01:  # ceil(1%) of each class: a handful of windows
      assert all(len(r.train_index) < 20 for r in runs)
  # The saved file is scored by the evaluation suite like any external predictions.
  path = pred.save(tmp_path / "staging_1.npz")
  result = suite.run_suite({}, {"cnn": load_predictions(path)},
                           suite.SuiteConfig(tasks=("staging",), n_boot=10), progress=False,
                           log=_quiet)
  assert result.entries[0].metrics["n"] == len(pred)


def test_cnn_early_stopping_stops_and_restores_the_best_step(cnn_config, synthetic_store,
                                                            tmp_path):
  """Validation every 4 steps with patience 3 on an inner subject split: training stops three
  validations after the best one, well before the cap, and returns the best step's state (its
  validation loss, recomputed, is the best logged one, not the last)."""
  c = ml_collections.ConfigDict(cnn_config.to_dict())
  c.total_steps = 300
  c.early_stopping.update(eval_every=4, patience=3)
  table = baselines.select_windows(synthetic_store)
  trainer = supervised.Trainer(c, table.channels, table.channel_index, "staging", 5)
  y, _ = table.labels("staging")
  rows = np.flatnonzero(y >= 0)
  fit, val, scheme = supervised.inner_split(table.subject_id[rows], y[rows], c.early_stopping,
                                            PROBE)
  assert scheme == "subject"
  assert not set(table.subject_id[rows][fit]) & set(table.subject_id[rows][val])
  fit_index, val_index = table.index[rows][fit], table.index[rows][val]
  state, info = trainer.fit(synthetic_store, fit_index, val_index=val_index,
                            modalities=table.modalities, seed=0, log_dir=tmp_path, progress=False)
  logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  val_loss = {r["step"]: r["loss"] for r in logged if r["split"] == "val"}
  assert sorted(val_loss) == list(range(4, info["steps"] + 1, 4))
  best = min(val_loss, key=val_loss.get)
  assert info["best_step"] == best and info["best_val_loss"] == val_loss[best]
  assert info["steps"] == best + 3 * 4 < info["max_steps"] == 300
  assert max(r["step"] for r in logged if r["split"] == "train") == info["steps"]

  weights = supervised.class_weights(WindowStore(synthetic_store).get_batch(
      fit_index, modalities=())["stage"], 5, balanced=True)
  labels = WindowStore(synthetic_store).get_batch(val_index, modalities=())["stage"]
  prob = trainer.predict(state, synthetic_store, val_index, modalities=table.modalities)
  assert supervised.validation_loss(prob, labels, weights) == pytest.approx(val_loss[best],
                                                                            rel=1e-6)
  assert val_loss[info["steps"]] != pytest.approx(val_loss[best], rel=1e-6)
