"""Embedding export: every window exactly once, padding-invariant, device- and process-count
invariant, from a store or straight from EDF files, and into the evaluation harness."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

import train_utils as tu
from sleepfm_jax import export
from sleepfm_jax.data.store import WindowStore
from sleepfm_jax.evaluation import embeddings as emb_format
from sleepfm_jax.evaluation import metrics, probes


@pytest.fixture(scope="module")
def exported(synthetic_run, synthetic_store, tmp_path_factory):
  workdir, _, _ = synthetic_run
  out = tmp_path_factory.mktemp("export") / "emb"
  index = export.export_store(str(workdir), synthetic_store, str(out), batch_size=64,
                              progress=False)
  return emb_format.load_embeddings(index.parent), index


def test_every_window_exactly_once_with_its_labels(exported, synthetic_store):
  es, index = exported
  store = WindowStore(synthetic_store)
  assert len(es) == store.num_windows
  meta = json.loads(index.read_text())
  assert [r["recording_id"] for r in meta["recordings"]] == store.recording_ids
  batch = store.get_batch(np.arange(store.num_windows))
  np.testing.assert_array_equal(es.stage, batch["stage"])
  np.testing.assert_array_equal(es.sdb, batch["sdb"])
  np.testing.assert_array_equal(es.epoch, batch["epoch"])
  np.testing.assert_array_equal(es.present["ecg"], batch["mask_ecg"].any(-1))
  assert not es.present["ecg"].all()  # the subject without ECG
  assert np.all(es.emb["ecg"][~es.present["ecg"]] == 0)
  assert es.embedding_dim == tu.TINY_MODEL["embed_dim"]
  assert meta["mode"] == "pairwise" and meta["step"] == 6


def test_batch_size_padding_and_device_count_do_not_change_embeddings(exported, synthetic_run,
                                                                      synthetic_store, tmp_path):
  es, _ = exported
  workdir, _, _ = synthetic_run
  rec = WindowStore(synthetic_store).recording_ids[0]
  n = int(np.sum(es.recording_id == rec))
  one = export.load_embedder(str(workdir), batch_size=7, devices=jax.devices()[:1])
  index = export.export_store(one, synthetic_store, str(tmp_path / "b7"), recordings=[rec],
                              progress=False)
  small = emb_format.load_embeddings(index.parent)
  assert len(small) == n and n % 7  # the last batch was padded
  # `lower` is the forward embed_batch runs (what benchmarks/roofline.py costs): lowered for
  # this embedder's batch of 7, its XLA cost is the cost of 7 windows, half that of 14.
  samples = WindowStore(synthetic_store).samples

  def flops(b):
    x = {m: np.zeros((b, len(one.channels[m]), samples), np.float32) for m in one.modalities}
    return one.lower(x).compile().cost_analysis()["flops"]

  f7, f14 = flops(7), flops(14)
  assert f7 > 0 and abs(f14 / f7 - 2.0) < 0.05, (f7, f14)
  for m in ("bas", "ecg", "resp"):
    np.testing.assert_allclose(small.emb[m], es.emb[m][es.recording_id == rec], rtol=2e-5,
                               atol=2e-6)


def test_embed_from_edf_files_matches_the_store(exported, synthetic_run, synthetic_store):
  es, _ = exported
  workdir, _, _ = synthetic_run
  edf_dir = str(WindowStore(synthetic_store).path.parent / "edf")
  direct = export.embed(edf_dir, checkpoint=str(workdir), progress=False)
  assert direct.recordings == es.recordings and len(direct) == len(es)
  for m in ("bas", "ecg", "resp"):
    np.testing.assert_allclose(direct.emb[m], es.emb[m], rtol=2e-5, atol=2e-6)


@pytest.mark.multiprocess
def test_two_processes_write_each_window_once(exported, synthetic_run, synthetic_store, tmp_path):
  """Two processes that find each other through `--distributed` (cluster auto-detection, here
  Slurm's variables; the trainer's 2-process test passes the coordinator explicitly)."""
  from multiprocess import run_processes  # pylint: disable=import-outside-toplevel

  es, _ = exported
  workdir, _, _ = synthetic_run
  out = tmp_path / "emb"
  logs = run_processes(tu.REPO / "experiments" / "export_embeddings.py",
                [f"--checkpoint={workdir}", f"--store={synthetic_store}", f"--out={out}",
                 "--batch_size=16"],
                log_dir=tmp_path / "logs", num_processes=2, local_devices=2, timeout=600,
                launcher="slurm")
  # One job of two processes, not two single-process jobs: only process 0 reports the index.
  assert [("embeddings:" in log) for log in logs] == [True, False]
  both = emb_format.load_embeddings(out)
  assert both.recordings == es.recordings and len(both) == len(es)
  assert sorted(p.name for p in out.iterdir() if p.suffix == ".npz") == sorted(
      f"{r}.npz" for r in es.recordings)
  assert not list(out.glob(".part-*"))
  for m in ("bas", "ecg", "resp"):
    np.testing.assert_allclose(both.emb[m], es.emb[m], rtol=2e-5, atol=2e-6)


def test_probe_on_exported_embeddings(exported):
  """Export -> probe: out-of-fold predictions for every labelled window, metrics in range."""
  es, _ = exported
  result = probes.probe_embeddings(es, "staging", "concat", probes.ProbeConfig(
      outer_folds=3, inner_folds=2, c_grid=(0.1, 1.0)))
  assert result.scheme == "subject"
  assert len(result.y_true) == int(np.sum(es.stage >= 0))
  np.testing.assert_allclose(result.y_prob.sum(axis=1), 1.0, rtol=1e-6)
  m = metrics.classification_metrics(result.y_true, result.y_prob, result.classes)
  k = len(result.classes)
  assert np.array(m["confusion"]).shape == (k, k) and m["n"] == len(result.y_true)
  for key in ("auroc_macro", "auprc_macro", "accuracy", "f1_macro"):
    assert 0.0 <= m[key] <= 1.0, key
  assert -1.0 <= m["kappa"] <= 1.0


def test_wrong_montage_is_a_clear_error(synthetic_run, sc4001, tmp_path):
  workdir, _, _ = synthetic_run
  psg, _ = sc4001
  with pytest.raises(ValueError, match="lacks"):
    from sleepfm_jax.data import discovery  # pylint: disable=import-outside-toplevel
    from sleepfm_jax.data.preprocess import preprocess  # pylint: disable=import-outside-toplevel

    specs, _ = discovery.discover([str(psg.parent)])
    preprocess(specs, tmp_path / "store", {"sample_rate": 32, "montage": "sleepedf"},
               progress=False)
    export.export_store(str(workdir), str(tmp_path / "store"), str(tmp_path / "emb"),
                        progress=False)


def _export_cli(workdir, store, out, recording, *flags):
  """experiments/export_embeddings.py on one recording of `store`, in a fresh process."""
  subprocess.run([sys.executable, str(tu.REPO / "experiments" / "export_embeddings.py"),
                  f"--checkpoint={workdir}", f"--store={store}", f"--out={out}",
                  f"--recordings={recording}", *flags], check=True, capture_output=True,
                 timeout=300)


def test_untrained_control_has_the_architecture_but_not_the_weights(exported, synthetic_run,
                                                                    synthetic_store, tmp_path):
  es, _ = exported
  workdir, _, _ = synthetic_run
  rec = WindowStore(synthetic_store).recording_ids[0]
  rows = es.recording_id == rec
  runs = []
  for name, seed in (("a", 3), ("b", 3), ("c", 4)):
    if name == "b":  # the command line's --untrained_seed, in a fresh process
      _export_cli(workdir, synthetic_store, tmp_path / name, rec, f"--untrained_seed={seed}")
      index = tmp_path / name / "index.json"
    else:
      control = export.untrained_embedder(str(workdir), seed=seed, batch_size=64)
      index = export.export_store(control, synthetic_store, str(tmp_path / name),
                                  recordings=[rec], progress=False)
    runs.append(emb_format.load_embeddings(index.parent))
    meta = json.loads(index.read_text())
    assert meta["mode"] == "untrained" and meta["step"] == 0 and meta["untrained_seed"] == seed
  a, b, c = runs
  for m in ("bas", "ecg", "resp"):
    assert a.emb[m].shape == es.emb[m][rows].shape
    np.testing.assert_allclose(a.emb[m], b.emb[m], rtol=1e-5, atol=1e-6)  # the seed fixes them
    live = a.present[m]
    assert live.any() and np.all(np.isfinite(a.emb[m]))
    assert not np.allclose(a.emb[m][live], c.emb[m][live])  # another seed, other weights
    assert not np.allclose(a.emb[m][live], es.emb[m][rows][live])  # not the trained weights
  np.testing.assert_array_equal(a.stage, es.stage[rows])


def test_pooled_features_export_the_inputs_of_the_embedding_layer(exported, synthetic_run,
                                                                   synthetic_store, tmp_path):
  es, _ = exported
  workdir, _, _ = synthetic_run
  rec = WindowStore(synthetic_store).recording_ids[0]
  rows = es.recording_id == rec
  _export_cli(workdir, synthetic_store, tmp_path / "pooled", rec, "--features=pooled")
  pooled = emb_format.load_embeddings(tmp_path / "pooled")
  assert json.loads((tmp_path / "pooled" / "index.json").read_text())["features"] == "pooled"
  embedder = export.load_embedder(str(workdir))
  for m in ("bas", "ecg", "resp"):
    enc = embedder.model.encoders[m]
    assert pooled.emb[m].shape == (int(rows.sum()), enc.head_width)
    live = pooled.present[m]
    assert live.any()
    raw = pooled.emb[m][live] * pooled.norm[m][live][:, None]  # stored L2-normalised + norms
    want = np.array(enc.fc(raw))
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(want, es.emb[m][rows][live], rtol=1e-4, atol=1e-5)


def test_export_computes_in_float32_unless_told(synthetic_run, monkeypatch):
  """The export's default compute dtype is float32 whatever the run trained in (the `paper`
  preset trains in bfloat16 on accelerators; an untrained control exported in bfloat16 scores
  chance): a run whose config says bfloat16 or "auto" still exports in float32."""
  workdir, _, _ = synthetic_run
  load_meta = export.checkpointing.load_meta
  for trained in ("bfloat16", "auto"):
    def meta_as_trained(path, trained=trained):
      meta = load_meta(path)
      meta["config"]["model"]["dtype"] = trained
      return meta
    monkeypatch.setattr(export.checkpointing, "load_meta", meta_as_trained)
    assert export.load_embedder(str(workdir)).model.encoders["bas"].dtype == np.dtype("float32")
    control = export.untrained_embedder(str(workdir), seed=1)
    assert control.model.encoders["ecg"].dtype == np.dtype("float32")
    assert export.load_embedder(str(workdir), dtype="bfloat16").model.encoders[
        "bas"].dtype == np.dtype("bfloat16")


def test_export_dtype_overrides_the_training_dtype(exported, synthetic_run, synthetic_store,
                                                   tmp_path):
  """`dtype=` sets the export's compute dtype (the bf16 comparison exports bf16-trained runs in
  float32 too): float32 reproduces the default export, bfloat16 stays close but not equal."""
  es, _ = exported
  workdir, _, _ = synthetic_run
  rec = WindowStore(synthetic_store).recording_ids[0]
  rows = es.recording_id == rec
  out = {}
  for dtype in ("float32", "bfloat16"):
    embedder = export.load_embedder(str(workdir), batch_size=64, dtype=dtype)
    assert embedder.model.encoders["bas"].dtype == np.dtype(dtype)
    index = export.export_store(embedder, synthetic_store, str(tmp_path / dtype),
                                recordings=[rec], progress=False)
    out[dtype] = emb_format.load_embeddings(index.parent)
  for m in ("bas", "ecg", "resp"):
    live = out["float32"].present[m]
    np.testing.assert_allclose(out["float32"].emb[m], es.emb[m][rows], rtol=2e-5, atol=2e-6)
    f32, b16 = out["float32"].emb[m][live], out["bfloat16"].emb[m][live]
    rel = np.linalg.norm(b16 - f32, axis=-1) / np.linalg.norm(f32, axis=-1)
    assert 0 < rel.max() < 0.1, (m, rel.max())
  control = export.untrained_embedder(str(workdir), seed=3, dtype="bfloat16")
  assert control.model.encoders["ecg"].dtype == np.dtype("bfloat16")


def test_calibrated_untrained_control_estimates_bn_statistics_on_the_given_windows(
    synthetic_run, synthetic_store, tmp_path):
  """`calibrate_untrained` keeps the random weights, replaces the initial BN statistics by ones
  estimated on the given windows (a run's pretraining part; seeded), says so in the export's
  index, and refuses a trained embedder or a draw larger than the windows available. The
  command line's --calibrate_batches gives the same embeddings."""
  from sleepfm_jax.training import runs as runs_lib  # pylint: disable=import-outside-toplevel

  workdir, _, _ = synthetic_run
  store = WindowStore(synthetic_store)
  split = runs_lib.run_splits(str(workdir))
  pretrain = runs_lib.part_windows(split, store, "pretrain")
  np.testing.assert_array_equal(pretrain, np.sort(np.concatenate(
      [store.indices_for_recording(r) for r in split["parts"]["pretrain"]["recordings"]])))
  rec = split["parts"]["downstream"]["recordings"][0]

  def stats(embedder):
    return [np.asarray(v) for v in jax.tree.leaves(nnx.state(embedder.model, nnx.BatchStat))]

  plain = export.untrained_embedder(str(workdir), seed=3)
  out = {}
  for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    control = export.untrained_embedder(str(workdir), seed=3)
    export.calibrate_untrained(control, store, pretrain, batches=2, batch_size=8, seed=seed)
    out[name] = control
  weights = lambda e: jax.tree.leaves(nnx.state(e.model, nnx.Param))  # noqa: E731
  for a, b in zip(weights(plain), weights(out["a"]), strict=True):
    np.testing.assert_array_equal(a, b)
  initial, a, b, c = stats(plain), stats(out["a"]), stats(out["b"]), stats(out["c"])
  for v0, va, vb, vc in zip(initial, a, b, c, strict=True):
    np.testing.assert_array_equal(va, vb)  # the seed fixes the windows drawn
  assert not any(np.allclose(v0, va) for v0, va in zip(initial, a))
  assert not all(np.allclose(va, vc) for va, vc in zip(a, c))  # other windows, other estimates
  index = export.export_store(out["a"], store, str(tmp_path / "cal"), recordings=[rec],
                              progress=False)
  meta = json.loads(index.read_text())
  assert meta["mode"] == "untrained" and meta["untrained_seed"] == 3
  assert meta["bn_calibration"]["batches"] == 2 and meta["bn_calibration"]["batch_size"] == 8
  assert meta["checkpoint"].startswith("untrained+bn_calibrated:")
  cal = emb_format.load_embeddings(index.parent)
  base = emb_format.load_embeddings(export.export_store(
      plain, store, str(tmp_path / "plain"), recordings=[rec], progress=False).parent)
  for m in ("bas", "resp"):
    assert np.all(np.isfinite(cal.emb[m])) and not np.allclose(cal.emb[m], base.emb[m])
  _export_cli(workdir, synthetic_store, tmp_path / "cli", rec, "--untrained_seed=3",
              "--calibrate_batches=2")
  cli = emb_format.load_embeddings(tmp_path / "cli")
  assert cli.metadata["bn_calibration"]["batch_size"] == 16  # the run's batch size
  want = export.untrained_embedder(str(workdir), seed=3)
  export.calibrate_untrained(want, store, pretrain, batches=2, batch_size=16, seed=3)
  want = emb_format.load_embeddings(export.export_store(
      want, store, str(tmp_path / "want"), recordings=[rec], progress=False).parent)
  for m in ("bas", "ecg", "resp"):
    np.testing.assert_allclose(cli.emb[m], want.emb[m], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="only an untrained embedder"):
    export.calibrate_untrained(export.load_embedder(str(workdir)), store, pretrain, batches=1)
  with pytest.raises(ValueError, match="fewer than"):
    export.calibrate_untrained(export.untrained_embedder(str(workdir), seed=3), store, pretrain,
                               batches=10_000, batch_size=8)
