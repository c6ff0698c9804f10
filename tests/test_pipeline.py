"""Grain pipeline: resumable training iterators, per-process sharding, padded evaluation."""

import json
import pickle

import grain
import numpy as np
import pytest

from sleepfm_jax.data.channels import Montage
from sleepfm_jax.data.pipeline import WindowSource, eval_batches, train_dataset, train_iterator
from sleepfm_jax.data.splits import split_subjects
from sleepfm_jax.data.store import StoreWriter, WindowStore

T = 32
RECS = [("a1", "subj-a", 9), ("a2", "subj-a", 5), ("b1", "subj-b", 11), ("c1", "subj-c", 7),
        ("d1", "subj-d", 8), ("e1", "subj-e", 8)]  # 48 windows


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("pipe") / "store"
  w = StoreWriter(path, montage=Montage(bas=("C3-M2",), ecg=("ECG",), resp=()), sample_rate=16,
                  window_seconds=2.0, dtype="float32")
  base = 0
  for rid, sid, n in RECS:
    g = base + np.arange(n)  # global window id, written into the signals to check identity
    w.write_recording(rid, sid, {
        "bas": np.broadcast_to(g[:, None, None], (n, 1, T)).astype(np.float32),
        "ecg": -np.broadcast_to(g[:, None, None], (n, 1, T)).astype(np.float32),
        "stage": (g % 5).astype(np.int8), "sdb": np.full(n, -1, np.int8),
        "epoch": np.arange(n, dtype=np.int32), "start": 30.0 * np.arange(n)})
    base += n
  w.finalize()
  return path


def _same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_gives_identical_next_batches(store_path, workers):
  src = WindowSource(store_path)
  ds = train_dataset(src, global_batch=4, seed=11)
  it = train_iterator(ds, worker_count=workers)
  for _ in range(5):
    next(it)
  state = it.get_state()
  json.dumps(state)  # plain data: checkpointable
  expected = [next(it) for _ in range(3)]
  it2 = train_iterator(ds, worker_count=workers)
  it2.set_state(state)
  for want in expected:
    _same(next(it2), want)
  for i in (it, it2):
    if hasattr(i, "close"):
      i.close()
  b = expected[0]
  assert b["bas"].shape == (4, 1, T) and b["bas"].dtype == np.float32
  np.testing.assert_array_equal(b["bas"][:, 0, 0], b["index"])  # the right windows were read
  np.testing.assert_array_equal(b["stage"], b["index"] % 5)


def test_processes_get_disjoint_shards_covering_each_epoch(store_path):
  src = WindowSource(store_path)
  n = len(src)
  seen = []
  for p in range(2):
    ds = train_dataset(src, global_batch=8, seed=5, process_index=p, process_count=2)
    # One epoch = n / global_batch steps; each process contributes local_batch = 4 per step.
    seen.append(np.concatenate([ds[i]["index"] for i in range(n // 8)]))
  assert not set(seen[0]) & set(seen[1])
  assert sorted(np.concatenate(seen).tolist()) == list(range(n))
  # The next epoch is reshuffled.
  ds0 = train_dataset(src, global_batch=8, seed=5, process_index=0, process_count=2)
  epoch2 = np.concatenate([ds0[i]["index"] for i in range(n // 8, 2 * n // 8)])
  assert not np.array_equal(epoch2, seen[0])
  with pytest.raises(ValueError, match="multiple"):
    train_dataset(src, global_batch=7, seed=0, process_index=0, process_count=2)


def test_same_windows_as_the_per_element_grain_pipeline(store_path):
  src = WindowSource(store_path)
  ours = train_dataset(src, global_batch=6, seed=3, process_index=1, process_count=2)
  plain = grain.MapDataset.source(src).seed(3).shuffle().repeat().batch(6, drop_remainder=True)
  for i in range(20):
    _same(ours[i], {k: v[3:] for k, v in plain[i].items()})


@pytest.mark.parametrize("count", [2, 4])
def test_global_batch_is_the_same_for_any_process_count(store_path, count):
  src = WindowSource(store_path)
  single = train_dataset(src, global_batch=8, seed=1)
  parts = [train_dataset(src, global_batch=8, seed=1, process_index=p, process_count=count)
           for p in range(count)]
  for i in range(10):
    joined = np.concatenate([ds[i]["index"] for ds in parts])
    np.testing.assert_array_equal(joined, single[i]["index"])


@pytest.mark.parametrize("count", [1, 3])
def test_eval_covers_every_window_exactly_once(store_path, count):
  src = WindowSource(store_path)
  n = len(src)
  got, nbatches = [], []
  for p in range(count):
    batches = list(eval_batches(src, batch_size=5, process_index=p, process_count=count))
    nbatches.append(len(batches))
    for b in batches:
      assert b["bas"].shape == (5, 1, T) and b["valid"].dtype == bool
      v = b["valid"]
      got.extend(b["index"][v].tolist())
      assert np.all(b["index"][~v] == -1) and np.all(b["bas"][~v] == 0)
      assert not b["mask_bas"][~v].any() and np.all(b["stage"][~v] == -1)
      np.testing.assert_array_equal(b["bas"][v, 0, 0], b["index"][v])
  assert len(set(nbatches)) == 1  # processes stay in lockstep
  assert got == list(range(n))  # ordered, each exactly once


def test_subject_split_never_leaks(store_path):
  store = WindowStore(store_path)
  split = split_subjects(store.subject_ids, {"train": 0.6, "test": 0.4}, seed=0)
  for name, subjects in split.items():
    src = WindowSource(store_path, indices=store.indices_for_subjects(subjects))
    allowed = {store.subject_ids.index(s) for s in subjects}
    ds = train_dataset(src, global_batch=4, seed=1)
    for i in range(3 * len(src) // 4):
      assert set(ds[i]["subject"].tolist()) <= allowed, name
    for b in eval_batches(src, batch_size=4):
      assert set(b["subject"][b["valid"]].tolist()) <= allowed


def test_source_pickles_small_and_reopens_lazily(store_path):
  idx = np.array([3, 1, 40])
  src = WindowSource(store_path, indices=idx, modalities=("ecg",))
  blob = pickle.dumps(src)
  assert len(blob) < 2000
  src2 = pickle.loads(blob)
  assert src2._store is None  # pylint: disable=protected-access
  w = src2[2]
  assert "bas" not in w and w["ecg"][0, 0] == -40 and w["index"] == 40
  assert len(src2) == 3
  with pytest.raises(IndexError):
    WindowSource(store_path, indices=[48])
