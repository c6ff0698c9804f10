"""Batches drawn from a few recordings (`data.recordings_per_batch`, data/sampling.py)."""

import json

import numpy as np
import pytest

from sleepfm_jax.data.channels import Montage
from sleepfm_jax.data.pipeline import WindowSource, train_dataset, train_iterator
from sleepfm_jax.data.sampling import RecordingGroupedBatches
from sleepfm_jax.data.store import StoreWriter

# recording sizes; chunks of 4 windows: 9 -> 2 chunks (1 left over), 3 -> none (too small)
SIZES = [9, 12, 3, 8, 10, 7, 16]


def _recordings():
  return np.repeat(np.arange(len(SIZES)), SIZES)


def test_every_chunk_is_one_recording_and_an_epoch_never_repeats_a_window():
  rec = _recordings()
  plan = RecordingGroupedBatches(rec, global_batch=8, groups=2, seed=3)
  assert plan.chunk == 4 and plan.left_out == {"recordings": 1, "windows": 3}
  chunks = sum(n // 4 for n in SIZES if n >= 4)  # 2 + 3 + 2 + 2 + 1 + 4 = 14
  assert plan.batches_per_epoch == chunks // 2 == 7
  for epoch in range(3):
    batches = [plan(epoch * plan.batches_per_epoch + b) for b in range(plan.batches_per_epoch)]
    flat = np.concatenate(batches)
    assert len(np.unique(flat)) == len(flat) == 7 * 8  # no window twice in an epoch
    assert not np.isin(np.flatnonzero(rec == 2), flat).any()  # the 3-window recording
    for b in batches:
      assert len(b) == 8
      for j in range(2):
        assert len(np.unique(rec[b[4 * j:4 * (j + 1)]])) == 1, b  # one recording per chunk
    # every recording gives all but its remainder: 9 -> 8, 12 -> 12, 7 -> 4, 16 -> 16, ...
    for r, n in enumerate(SIZES):
      assert np.isin(np.flatnonzero(rec == r), flat).sum() == (n // 4 * 4 if n >= 4 else 0)


def test_epochs_differ_and_the_plan_depends_on_seed_and_index_only():
  rec = _recordings()
  a = RecordingGroupedBatches(rec, global_batch=8, groups=2, seed=3)
  b = RecordingGroupedBatches(rec, global_batch=8, groups=2, seed=3)
  n = a.batches_per_epoch
  # read out of order (as a resumed iterator or a worker does): same batches
  for i in [3 * n + 1, 0, n + 2, 3 * n + 1]:
    np.testing.assert_array_equal(a(i), b(i))
  assert not np.array_equal(a.epoch_plan(0), a.epoch_plan(1))
  c = RecordingGroupedBatches(rec, global_batch=8, groups=2, seed=4)
  assert not np.array_equal(a.epoch_plan(0), c.epoch_plan(0))


def test_bad_settings_are_errors():
  with pytest.raises(ValueError, match="divide"):
    RecordingGroupedBatches(_recordings(), global_batch=8, groups=3, seed=0)
  with pytest.raises(ValueError, match="do not fill one batch"):
    RecordingGroupedBatches(np.zeros(5, int), global_batch=8, groups=1, seed=0)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("sampling") / "store"
  w = StoreWriter(path, montage=Montage(bas=("C3-M2",), ecg=(), resp=()), sample_rate=4,
                  window_seconds=2.0, dtype="float32")
  base = 0
  for r, n in enumerate(SIZES):
    g = base + np.arange(n)
    w.write_recording(f"r{r}", f"s{r}", {
        "bas": np.broadcast_to(g[:, None, None], (n, 1, 8)).astype(np.float32),
        "stage": np.zeros(n, np.int8), "sdb": np.full(n, -1, np.int8),
        "epoch": np.arange(n, dtype=np.int32), "start": 30.0 * np.arange(n)})
    base += n
  w.finalize()
  return path


def test_train_dataset_groups_by_recording_for_any_process_count_and_resumes(store_path):
  src = WindowSource(store_path, indices=np.arange(1, sum(SIZES)))  # a subset: positions != ids
  rec = src.store.recording_of(np.arange(1, sum(SIZES)))
  single = train_dataset(src, global_batch=8, seed=2, recordings_per_batch=2)
  parts = [train_dataset(src, global_batch=8, seed=2, recordings_per_batch=2, process_index=p,
                         process_count=2) for p in range(2)]
  for i in range(12):
    idx = single[i]["index"]
    np.testing.assert_array_equal(single[i]["bas"][:, 0, 0], idx)  # the windows read
    np.testing.assert_array_equal(np.concatenate([ds[i]["index"] for ds in parts]), idx)
    for j in range(2):
      assert len(np.unique(src.store.recording_of(idx[4 * j:4 * (j + 1)]))) == 1
  assert len(np.unique(rec)) == len(SIZES)
  it = train_iterator(single)
  for _ in range(9):  # past the first epoch (7 batches)
    next(it)
  state = it.get_state()
  json.dumps(state)
  want = [next(it)["index"] for _ in range(3)]
  it2 = train_iterator(single)
  it2.set_state(state)
  for w in want:
    np.testing.assert_array_equal(next(it2)["index"], w)
