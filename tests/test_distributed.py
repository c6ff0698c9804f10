"""Sharded losses and batches: 8 simulated CPU devices and a 2-process jax.distributed job.

The reference is always the plain loss on the full batch on one device; the gathered loss (and the
plain loss under jit with sharded inputs) must match it in value, metrics and gradients with
respect to the encoder parameters and the temperature, with devices holding different numbers of
valid rows.
"""

import pathlib

import jax
import numpy as np
import pytest

from distributed_worker import MODALITIES, fixed_problem, flatten_results, linear_loss
from multiprocess import run_processes
from sleepfm_jax.training import losses, sharding

TESTS = pathlib.Path(__file__).resolve().parent


def _reference(params, t, data, mode):
  """Loss, metrics and gradients on device 0 without any sharding."""
  dev = jax.devices()[0]
  put = lambda tree: jax.device_put(tree, dev)
  fn = jax.jit(jax.value_and_grad(
      lambda p, tt, b: linear_loss(p, tt, b, mode=mode), argnums=(0, 1), has_aux=True))
  (loss, metrics), grads = fn(put(params), put(t), put(data))
  return flatten_results(mode, loss, metrics, grads)


def _sharded(params, t, data, mode, mesh, gathered):
  """The same computation jitted over `mesh`, inputs placed as the trainer places them."""
  rep, dat = sharding.replicated(mesh), sharding.data_sharding(mesh)
  fn = jax.jit(
      jax.value_and_grad(
          lambda p, tt, b: linear_loss(p, tt, b, mode=mode, mesh=mesh if gathered else None),
          argnums=(0, 1), has_aux=True),
      in_shardings=(rep, rep, dat), out_shardings=rep)
  batch = sharding.host_local_batch_to_global(data, mesh)
  (loss, metrics), grads = fn(jax.device_put(params, rep), jax.device_put(t, rep), batch)
  return flatten_results(mode, loss, metrics, grads)


def _assert_close(got, want, atol=1e-5):
  assert got.keys() == want.keys()
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=atol, err_msg=k)


@pytest.fixture(scope="module")
def problem():
  params, t, data = fixed_problem(batch=32)
  # Valid rows per device (4 rows each) really differ, and ECG is absent on a whole device.
  both = (data["mask_bas"] & data["mask_ecg"]).reshape(8, 4).sum(1)
  assert len(set(both.tolist())) > 1 and 0 in both
  return params, t, data


@pytest.mark.parametrize("mode", losses.MODES)
def test_gathered_loss_matches_single_device_on_8_devices(problem, mode):
  params, t, data = problem
  mesh = sharding.make_mesh()
  assert mesh.shape == {"data": 8, "model": 1}
  want = _reference(params, t, data, mode)
  _assert_close(_sharded(params, t, data, mode, mesh, gathered=True), want)
  _assert_close(_sharded(params, t, data, mode, mesh, gathered=False), want)
  assert abs(float(want[f"{mode}/grad_t"])) > 1e-3  # the temperature gradient is really tested


def test_gathered_loss_with_a_modality_absent_everywhere(problem):
  params, t, data = problem
  data = dict(data, mask_resp=np.zeros_like(data["mask_resp"]))
  mesh = sharding.make_mesh()
  want = _reference(params, t, data, "leave_one_out")
  got = _sharded(params, t, data, "leave_one_out", mesh, gathered=True)
  _assert_close(got, want)
  assert float(got["leave_one_out/metric/active_terms"]) == 4
  assert all(np.isfinite(v).all() for v in got.values())
  assert not got["leave_one_out/grad_resp"].any()


def test_gathered_loss_on_a_mesh_with_a_model_axis(problem):
  params, t, data = problem
  mesh = sharding.make_mesh(data=4, model=2)
  _assert_close(_sharded(params, t, data, "pairwise", mesh, gathered=True),
                _reference(params, t, data, "pairwise"))


def test_gathered_loss_rejects_a_batch_that_does_not_split():
  mesh = sharding.make_mesh()
  embs = {m: np.ones((12, 4), np.float32) for m in MODALITIES}
  with pytest.raises(ValueError, match="not a multiple of the 'data' axis size 8"):
    losses.gathered_loss(embs, None, 0.0, mesh=mesh)


def test_mesh_and_batch_validation():
  with pytest.raises(ValueError, match="must use every device"):
    sharding.make_mesh(data=3)
  with pytest.raises(ValueError, match="divide the 8 devices"):
    sharding.make_mesh(model=3)
  mesh = sharding.make_mesh()
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 2
  with pytest.raises(ValueError, match="multiple of the data-axis size 8"):
    sharding.check_global_batch(20, mesh)
  with pytest.raises(ValueError, match="local batch 12 does not split"):
    sharding.host_local_batch_to_global({"x": np.zeros((12, 3))}, mesh)
  with pytest.raises(ValueError, match="disagree on the local batch size"):
    sharding.host_local_batch_to_global({"x": np.zeros((8, 3)), "y": np.zeros(16)}, mesh)
  batch = sharding.host_local_batch_to_global(
      {"x": np.arange(48.0).reshape(16, 3), "stage": np.arange(16, dtype=np.int8)}, mesh)
  assert batch["x"].sharding == sharding.data_sharding(mesh)
  assert batch["x"].addressable_shards[1].data.shape == (2, 3)
  np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(48.0).reshape(16, 3))
  assert batch["stage"].dtype == np.int8


def test_initialize_distributed_only_when_asked():
  assert sharding.initialize_distributed() is False  # single process: nothing to join
  assert jax.process_count() == 1
  with pytest.raises(ValueError, match="need a coordinator address"):
    sharding.initialize_distributed(num_processes=2, process_id=0)


@pytest.mark.multiprocess
def test_two_processes_match_single_process(tmp_path):
  batch = 16
  run_processes(TESTS / "distributed_worker.py", [f"--out={tmp_path}", f"--batch={batch}"],
                log_dir=tmp_path, num_processes=2, local_devices=2, timeout=150)
  params, t, data = fixed_problem(batch)
  want = {}
  for mode in losses.MODES:
    want.update(_reference(params, t, data, mode))
  for pid in range(2):
    with np.load(tmp_path / f"process_{pid}.npz", allow_pickle=False) as f:
      got = dict(f)
    for name in ("gathered", "plain"):
      part = {k.split("/", 1)[1]: v for k, v in got.items() if k.startswith(name + "/")}
      _assert_close(part, want)
