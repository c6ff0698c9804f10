"""Pretraining loop: learning, checkpoints, exact resume (also after SIGKILL), device counts.

All runs use a tiny EffNet-1D on the real Sleep-EDF SC4001 night resampled to 32 Hz (960 samples
per 30-s window), so each run compiles and trains in seconds on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import train_utils as tu
from conftest import REPO
from sleepfm_jax import export
from sleepfm_jax.data import discovery, pipeline
from sleepfm_jax.data.preprocess import preprocess
from sleepfm_jax.data.store import WindowStore
from sleepfm_jax.evaluation import embeddings as emb_format
from sleepfm_jax.training import factories, runs, sharding, steps, train


@pytest.fixture(scope="session")
def sc_store(sc4001, tmp_path_factory) -> str:
  """SC4001 (BAS: Fpz-Cz, Pz-Oz, EOG, Chin; resp: Airflow) at 32 Hz, float32."""
  psg, _ = sc4001
  specs, _ = discovery.discover([str(psg.parent)])
  out = tmp_path_factory.mktemp("train") / "sc4001_32hz"
  report = preprocess(specs, out, {"sample_rate": 32, "montage": "sleepedf", "dtype": "float32"},
                      progress=False)
  assert report["files"]["ok"] == 1, report
  return str(out)


@pytest.fixture(scope="session")
def reference_run(sc_store, tmp_path_factory):
  """An uninterrupted 8-step run that the resume tests compare against."""
  workdir = tmp_path_factory.mktemp("ref") / "run"
  summary = train.train(tu.tiny_config(sc_store), str(workdir))
  return workdir, summary


def test_loss_falls_and_outputs_appear(sc_store, tmp_path):
  cfg = tu.tiny_config(sc_store, total_steps=40, eval_every=20, checkpoint_every=20)
  summary = train.train(cfg, str(tmp_path))
  losses = tu.losses_by_step(tmp_path)
  first, last = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in (38, 39, 40)])
  assert last < first - 0.15, (first, last)
  for name in ("metrics.jsonl", "metrics.csv", "curves.png", "config.json", "summary.json"):
    assert (tmp_path / name).exists(), name
  assert sorted(os.listdir(tmp_path / "checkpoints"), key=int) == ["20", "40"]
  assert len(os.listdir(tmp_path / "best")) == 1
  val = tu.read_metrics(tmp_path, "val")
  assert sorted(val) == [20, 40] and np.isfinite(val[40]["loss"])
  assert summary["final_step"] == 40
  assert 0 <= summary["train"]["acc/bas->rest"] <= 1


def test_stop_and_resume_is_exact(sc_store, reference_run, tmp_path):
  ref_dir, _ = reference_run
  cfg = tu.tiny_config(sc_store, stop_at_step=4)
  train.train(cfg, str(tmp_path))
  assert tu.losses_by_step(tmp_path).keys() == {1, 2, 3, 4}
  with pytest.raises(ValueError, match="pass --resume"):
    train.train(tu.tiny_config(sc_store), str(tmp_path))
  summary = train.train(tu.tiny_config(sc_store), str(tmp_path), resume=True)
  assert summary["start_step"] == 4 and summary["final_step"] == 8
  # Every step equals the uninterrupted run bit for bit, and no step is logged twice.
  resumed = tu.losses_by_step(tmp_path)
  assert sorted(resumed) == list(range(1, 9))
  tu.assert_same_losses(tu.losses_by_step(ref_dir), resumed, range(1, 9))


def test_groupnorm_encoders_train_resume_exactly_and_export(sc_store, tmp_path):
  """`model.norm = "group:8"` (no BatchNorm running statistics to checkpoint) trains, resumes bit
  for bit, and its checkpoint loads back into GroupNorm encoders that export."""
  group = {"model.norm": "group:8"}
  ref = tmp_path / "ref"
  train.train(tu.tiny_config(sc_store, **group), str(ref))
  cut = tmp_path / "cut"
  train.train(tu.tiny_config(sc_store, stop_at_step=4, **group), str(cut))
  summary = train.train(tu.tiny_config(sc_store, **group), str(cut), resume=True)
  assert summary["start_step"] == 4 and summary["final_step"] == 8
  tu.assert_same_losses(tu.losses_by_step(ref), tu.losses_by_step(cut), range(1, 9))
  embedder = export.load_embedder(str(ref), batch_size=16)
  assert all(e.norm == "group:8" for e in embedder.model.encoders.values())
  out = export.export_store(embedder, sc_store, str(tmp_path / "emb"), batch_size=16,
                            progress=False)
  emb = emb_format.load_embeddings(out.parent)
  assert np.isfinite(emb.emb["bas"]).all() and len(emb) > 1000


def _wait_for_checkpoint(workdir: pathlib.Path, step: int, proc, timeout: float = 300):
  """Waits until Orbax has finalised checkpoint `step` (its directory renamed into place)."""
  target = workdir / "checkpoints" / str(step) / "_CHECKPOINT_METADATA"
  deadline = time.time() + timeout
  while time.time() < deadline:
    if target.exists():
      return
    if proc.poll() is not None:
      raise AssertionError(f"training exited early (rc={proc.returncode}):\n"
                           f"{proc.stdout.read().decode()[-3000:]}")
    time.sleep(0.05)
  raise AssertionError(f"no checkpoint {step} after {timeout} s")


def test_sigkill_mid_run_then_resume_is_exact(sc_store, reference_run, tmp_path):
  """A process killed with SIGKILL mid-run resumes from its last checkpoint to the same losses."""
  ref_dir, _ = reference_run
  cmd = [sys.executable, str(tu.PRETRAIN), *tu.cli_args(tu.tiny_config(sc_store), tmp_path)]
  # Same XLA flags (8 host devices) as this process: the CPU thread pool, and with it the float
  # summation order, depends on the device count, and this test compares losses bit for bit.
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  try:
    _wait_for_checkpoint(tmp_path, 4, proc)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  out = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, timeout=600)
  assert out.returncode == 0, out.stdout.decode()[-3000:] + out.stderr.decode()[-3000:]
  resumed = tu.losses_by_step(tmp_path)
  assert sorted(resumed) == list(range(1, 9))
  tu.assert_same_losses(tu.losses_by_step(ref_dir), resumed, range(1, 9))


# Device- and process-count equivalence. Two SGD steps, no validation (saves compiling). What is
# compared is well defined: the losses of steps 1 and 2 (the second checks the first update) and
# step 1's gradient norm. Later gradients are not comparable bit-wise on this data: the airflow
# channel is 1 Hz upsampled, nearly collinear across the stem's 3 taps, and the stem gradient behind
# BatchNorm is so ill-conditioned that a 1e-6 relative change of the weights changes it entirely (on
# one device too; see docs/training.md). Adam would amplify rounding the same way (its first step is
# nearly lr * sign(g)).
SGD = {"total_steps": 2, "eval_every": 0, "optim.name": "sgd", "optim.lr": 1e-4,
       "optim.weight_decay": 0.0}


def _assert_equivalent(ref_dir, other_dir, rtol=1e-4):
  ref, other = tu.read_metrics(ref_dir), tu.read_metrics(other_dir)
  assert sorted(ref) == sorted(other) == [1, 2]
  for key in ("loss", "acc/bas->rest", "loss/rest->resp"):
    np.testing.assert_allclose(other[1][key], ref[1][key], rtol=1e-5, err_msg=key)
  # Summation order over devices moves gradients by ~1e-5 relative; a wrong gradient (say 2x, or a
  # missing all-gather) would move the step-2 loss by ~1e-2 at this learning rate.
  np.testing.assert_allclose(other[1]["grad_norm"], ref[1]["grad_norm"], rtol=rtol)
  np.testing.assert_allclose(other[2]["loss"], ref[2]["loss"], rtol=rtol)


@pytest.fixture(scope="session")
def sgd_reference(sc_store, tmp_path_factory):
  """Three SGD steps on one device."""
  workdir = tmp_path_factory.mktemp("sgd") / "one_device"
  train.train(tu.tiny_config(sc_store, **SGD, num_devices=1), str(workdir))
  return workdir


def test_eight_devices_match_one_device(sc_store, sgd_reference, tmp_path):
  """Data parallelism over 8 simulated devices (synchronised BN, gathered negatives) changes
  nothing but float rounding: same losses, gradient norms and retrieval accuracies."""
  assert jax.device_count() == 8
  eight = train.train(tu.tiny_config(sc_store, **SGD, num_devices=0), str(tmp_path))
  assert eight["final_step"] == 2
  _assert_equivalent(sgd_reference, tmp_path)


# Two processes with one device each reproduce an in-process 2-device run bit for bit. With two
# devices each, step 1's gradient norm and step 2's loss differ from one device by 1.0e-3 and
# 0.9e-3 on the 2026-12-02 CPU (Intel, AVX-512), against <= 4e-5 for 4 devices in one process;
# step 1's losses agree to 3e-6. That is rounding, not a wrong gradient: on one device, scaling
# the same batch by (1 + 1e-7 noise) moves step 1's gradient norm by up to 7.8e-3 (the losses by
# <= 1e-4) — the ill-conditioning described above — and the cross-process all-reduce sums in
# another order. Hence the looser bound for that layout; a 2x gradient would still miss it (~1e-2).
@pytest.mark.multiprocess
@pytest.mark.parametrize("local_devices,rtol", [(1, 1e-4), (2, 3e-3)])
def test_two_processes_match_one_device(sc_store, sgd_reference, tmp_path, local_devices, rtol):
  """Two processes joined by jax.distributed on loopback (1 or 2 CPU devices each) train like
  one device, and write one checkpoint between them."""
  from multiprocess import run_processes  # pylint: disable=import-outside-toplevel

  workdir = tmp_path / "multi"
  run_processes(tu.PRETRAIN, tu.cli_args(tu.tiny_config(sc_store, **SGD, num_devices=0), workdir),
                log_dir=tmp_path / "logs", num_processes=2, local_devices=local_devices,
                timeout=600, coordinator_flag="--coordinator_address")
  _assert_equivalent(sgd_reference, workdir, rtol=rtol)
  assert (workdir / "checkpoints" / "2" / "_CHECKPOINT_METADATA").exists()


def test_three_modalities_with_a_missing_one(synthetic_store, synthetic_run):
  """Synthetic BAS + ECG + respiratory; one subject has no ECG: its windows drop out of the ECG
  terms only, and nothing turns NaN."""
  workdir, cfg, summary = synthetic_run
  rows = tu.read_metrics(workdir)
  assert set(runs.plan_data(WindowStore(synthetic_store), cfg).in_channels) == {"bas", "ecg", "resp"}
  ecg_rows = [r["rows/bas->ecg"] for r in rows.values()]
  resp_rows = [r["rows/bas->resp"] for r in rows.values()]
  assert all(r == cfg.batch_size for r in resp_rows)
  assert min(ecg_rows) < cfg.batch_size  # some batches hold windows of the subject without ECG
  assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in rows.values())
  assert len([k for k in summary["train"] if k.startswith("loss/")]) == 6  # 3 pairs x 2 directions


def test_gradient_accumulation_updates_once_per_k_micro_batches(sc_store, tmp_path):
  """grad_accum=2: each logged step consumes two micro-batches and applies one update."""
  from sleepfm_jax.training import checkpointing  # pylint: disable=import-outside-toplevel

  cfg = tu.tiny_config(sc_store, total_steps=2, eval_every=0, **{"optim.grad_accum": 2})
  train.train(cfg, str(tmp_path))
  assert sorted(tu.read_metrics(tmp_path)) == [1, 2]
  state = json.loads((tmp_path / "checkpoints" / "2" / "data_iter" / "process_0-of-1.json")
                     .read_text())
  assert state["next_index"] == 4  # 2 steps x 2 micro-batches of 8 windows
  assert checkpointing.load_meta(str(tmp_path / "checkpoints"))["step"] == 2


def test_clear_errors(sc_store, tmp_path):
  with pytest.raises(ValueError, match=r"does not have.*Fpz-Cz"):
    train.train(tu.tiny_config(sc_store, **{"data.channels": {"bas": ["C3-M2"]}}), str(tmp_path))
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    train.train(tu.tiny_config(sc_store, batch_size=12, num_devices=0), str(tmp_path))
  with pytest.raises(ValueError, match="at least two modalities"):
    train.train(tu.tiny_config(sc_store, **{"data.modalities": ("bas", "ecg")}), str(tmp_path))
  with pytest.raises(ValueError, match="fewer than one global batch"):
    train.train(tu.tiny_config(sc_store, batch_size=4096), str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


def test_trainer_shifts_modalities_by_the_configured_seconds(sc_store):
  """`data.cross_modal_shift_seconds` reaches the trainer's iterator as samples (32 Hz here)."""
  store = WindowStore(sc_store)
  cfg = tu.tiny_config(sc_store, **{"data.cross_modal_shift_seconds": 0.5})
  plan = runs.plan_data(store, cfg)
  plain = next(train._train_iterator(plan, tu.tiny_config(sc_store), store.sample_rate))
  rolled = next(train._train_iterator(plan, cfg, store.sample_rate))
  np.testing.assert_array_equal(plain["index"], rolled["index"])
  found = set()
  for m in plan.modalities:
    for i in range(len(plain["index"])):
      match = [s for s in range(-16, 17)
               if np.array_equal(np.roll(plain[m][i], s, axis=-1), rolled[m][i])]
      assert match, (m, i)
      found.update(match)
  assert max(abs(s) for s in found) <= 16 and len(found) > 5  # 0.5 s at 32 Hz, many offsets


def test_trainer_draws_batches_from_the_configured_recordings_per_batch(sc_store):
  """`data.recordings_per_batch` reaches the trainer's iterator (`sampling.RecordingGroupedBatches`)."""
  store = WindowStore(sc_store)
  cfg = tu.tiny_config(sc_store, **{"data.recordings_per_batch": 2})
  plan = runs.plan_data(store, cfg)
  grouped = next(train._train_iterator(plan, cfg, store.sample_rate))
  plain = next(train._train_iterator(plan, tu.tiny_config(sc_store), store.sample_rate))
  source = pipeline.WindowSource(sc_store, plan.pretrain, plan.modalities)
  want = pipeline.train_dataset(source, global_batch=16, seed=cfg.seed, recordings_per_batch=2)[0]
  np.testing.assert_array_equal(grouped["index"], want["index"])
  assert not np.array_equal(grouped["index"], plain["index"])


def test_time_split_is_disjoint_and_covers(sc_store):
  store = WindowStore(sc_store)
  plan = runs.plan_data(store, tu.tiny_config(sc_store))
  parts = [plan.pretrain, plan.val, plan.downstream]
  assert sum(len(p) for p in parts) == store.num_windows
  assert len(np.unique(np.concatenate(parts))) == store.num_windows
  assert plan.modalities == ("bas", "resp") and plan.in_channels == {"bas": 4, "resp": 1}
  # Contiguous blocks, not scattered windows: few runs per split.
  for p in parts:
    assert np.sum(np.diff(p) != 1) < 10
  json.dumps(plan.in_channels)
  record = runs.split_record(store, plan, tu.tiny_config(sc_store))
  assert not record["parts"]["downstream"]["whole_recordings"]
  with pytest.raises(ValueError, match="only part of its recordings"):
    runs.held_out_recordings(record)


def test_run_writes_its_splits(synthetic_store, synthetic_run, tmp_path):
  workdir, cfg, _ = synthetic_run
  written = json.loads((workdir / runs.SPLITS_FILE).read_text())
  store = WindowStore(synthetic_store)
  plan = runs.plan_data(store, cfg)
  assert written == json.loads(json.dumps(runs.split_record(store, plan, cfg)))
  parts = written["parts"]
  assert sum(p["num_windows"] for p in parts.values()) == store.num_windows
  assert sorted(r for p in parts.values() for r in p["recordings"]) == store.recording_ids
  assert all(p["whole_recordings"] for p in parts.values())
  np.testing.assert_array_equal(
      store.indices_for_subjects(parts["downstream"]["subjects"]), plan.downstream)
  assert runs.held_out_recordings(written) == parts["downstream"]["recordings"]
  # Found from a checkpoint path inside the run; recomputed for a run without splits.json.
  assert runs.run_splits(str(workdir / "best")) == written
  (tmp_path / "config.json").write_text((workdir / "config.json").read_text())
  assert runs.run_splits(str(tmp_path)) == written


def test_validation_reads_a_fixed_sample_of_the_whole_split(synthetic_store):
  """A capped validation pass reads a seeded random sample of windows from across the val split
  (not its first, consecutive windows), the same at every evaluation; its top-1 retrieval (and the
  chance level) equal a numpy computation on the same windows' embeddings."""
  store = WindowStore(synthetic_store)
  cfg = tu.tiny_config(synthetic_store, preset="demo", eval_max_batches=2,
                       **{"loss.mode": "pairwise"})
  plan = runs.plan_data(store, cfg)
  source = train.validation_source(plan, cfg)
  windows = source.indices
  assert len(windows) == 2 * cfg.batch_size < len(plan.val)
  assert set(windows) <= set(plan.val)
  position = np.searchsorted(plan.val, np.sort(windows))  # where in the (time-ordered) split
  assert position.max() - position.min() > 0.8 * len(plan.val)  # from across the night
  assert np.max(np.diff(position)) > 1 and not np.array_equal(np.sort(windows), plan.val[:32])
  np.testing.assert_array_equal(train.validation_source(plan, cfg).indices, windows)

  # The trainer's own eval step and evaluation, on an encoder whose embeddings differ clearly
  # between windows (a freshly initialised EffNet-1D maps all windows to nearly the same point,
  # which leaves top-1 to rounding): one random linear map per modality.
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  model = _LinearEncoders(plan.in_channels, store.samples)
  tx = factories.make_optimizer(cfg, factories.make_schedule(cfg, 10, 10))
  graphdef, state = nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
  state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), state)
  _, eval_step = steps.make_steps(graphdef, cfg, mesh, state_sharding,
                                  sharding.data_sharding(mesh))
  first = train.evaluate(eval_step, state, source, plan, cfg, mesh)
  assert train.evaluate(eval_step, state, source, plan, cfg, mesh) == first

  proj = {m: (np.asarray(model.proj[m].kernel[...], np.float64),
              np.asarray(model.proj[m].bias[...], np.float64)) for m in plan.modalities}
  hits, rows, batches = {}, {}, {}
  for start in range(0, len(windows), cfg.batch_size):
    x = plan.selection.select(store.get_batch(windows[start:start + cfg.batch_size]))
    e = {}
    for m, (kernel, bias) in proj.items():
      v = x[m].reshape(len(x[m]), -1).astype(np.float64) @ kernel + bias
      e[m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    for a, b in itertools.permutations(plan.modalities, 2):
      both = x[f"present_{a}"] & x[f"present_{b}"]
      best = np.argmax(e[a][both] @ e[b][both].T, axis=1)
      term = f"{a}->{b}"
      hits[term] = hits.get(term, 0) + int(np.sum(best == np.arange(both.sum())))
      rows[term] = rows.get(term, 0) + int(both.sum())
      batches[term] = batches.get(term, 0) + int(both.any())
  assert sorted(hits) == sorted(k[4:] for k in first if k.startswith("acc/"))
  assert sum(hits.values()) > 0  # not an all-zero comparison
  for t in hits:
    assert first[f"acc/{t}"] == pytest.approx(hits[t] / rows[t], abs=1e-12), t
  assert first["top1"] == pytest.approx(np.mean([hits[t] / rows[t] for t in hits]), abs=1e-12)
  assert first["top1_chance"] == pytest.approx(np.mean([batches[t] / rows[t] for t in hits]),
                                               abs=1e-12)
  assert first["top1_chance"] == pytest.approx(1 / cfg.batch_size, rel=0.5)


class _LinearEncoders(nnx.Module):
  """A stand-in encoder set for `SleepFM` in the trainer's steps: one linear map per modality."""

  def __init__(self, in_channels, samples):
    rngs = nnx.Rngs(0)
    self.modalities = tuple(in_channels)
    self.proj = nnx.Dict({m: nnx.Linear(c * samples, 16, rngs=rngs)
                          for m, c in in_channels.items()})
    self.t = nnx.Param(jnp.zeros((), jnp.float32))

  def __call__(self, batch, *, train):
    del train
    return {m: self.proj[m](batch[m].reshape(batch[m].shape[0], -1)) for m in self.modalities}



def device_constants(traced) -> list:
  """The concrete arrays a traced step closes over: lowering embeds each as a constant, copying
  it from its device to the host, which the loop's transfer guard refuses on an accelerator
  (seen on a GPU: "Disallowed device-to-host transfer", the dropout key). On CPU the copy is free
  and the guard does not fire, so the trace is checked instead."""
  return [c for c in traced.jaxpr.consts if isinstance(c, jax.Array)]


def test_the_jitted_steps_close_over_no_device_arrays(synthetic_store):
  store = WindowStore(synthetic_store)
  cfg = tu.tiny_config(synthetic_store, preset="demo")
  plan = runs.plan_data(store, cfg)
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  tx = factories.make_optimizer(cfg, factories.make_schedule(cfg, 10, 10))
  graphdef, state, state_sharding = steps.init_state(cfg, plan.in_channels, mesh, tx)
  train_step, eval_step = steps.make_steps(graphdef, cfg, mesh, state_sharding,
                                           sharding.data_sharding(mesh))
  batch = plan.selection.select(store.get_batch(np.arange(cfg.batch_size)))
  assert device_constants(train_step.trace(state, batch)) == []
  batch["valid"] = np.ones(cfg.batch_size, bool)
  assert device_constants(eval_step.trace(state, batch)) == []
