"""Window store: round trip, float16, batched reads, pickling, validation errors."""

import json
import pickle
import shutil

import numpy as np
import pytest

from sleepfm_jax.data.channels import Montage
from sleepfm_jax.data.store import StoreError, StoreWriter, WindowStore

MONTAGE = Montage(bas=("C3-M2", "C4-M1"), ecg=(), resp=("Airflow",))
T = 60  # 2 s at 30 Hz keeps the arrays tiny


def _arrays(n, seed):
  rng = np.random.default_rng(seed)
  return {
      "bas": rng.standard_normal((n, 2, T)) * 10,
      "ecg": np.zeros((n, 0, T)),
      "resp": rng.standard_normal((n, 1, T)),
      "mask_bas": rng.random((n, 2)) > 0.2,
      "mask_resp": np.ones((n, 1), bool),
      "stage": rng.integers(-1, 5, n).astype(np.int8),
      "sdb": rng.integers(-1, 2, n).astype(np.int8),
      "epoch": np.arange(n, dtype=np.int32) + 3,
      "start": 90.0 + 2.0 * np.arange(n),
  }


RECS = (("rec-b", "s2", 7), ("rec-a", "s1", 5), ("rec-c", "s1", 4))


def _write(path, dtype="float32", recs=RECS):
  w = StoreWriter(path, montage=MONTAGE, sample_rate=30, window_seconds=2.0, dtype=dtype,
                  preprocessing={"normalise": "robust"})
  data = {}
  for i, (rid, sid, n) in enumerate(recs):
    data[rid] = _arrays(n, i)
    w.write_recording(rid, sid, data[rid], {"source": f"/x/{rid}.edf", "respiratory_scored": False,
                                            "events": [{"onset": 1.0, "duration": 10.0,
                                                        "kind": "hypopnea", "raw": "H"}]})
  index = w.finalize({"files": {"ok": len(recs)}})
  return index, data


def test_round_trip_arrays_and_metadata(tmp_path):
  index, data = _write(tmp_path / "s")
  assert [r["recording_id"] for r in index["recordings"]] == ["rec-a", "rec-b", "rec-c"]
  assert [r["first_window"] for r in index["recordings"]] == [0, 5, 12]
  st = WindowStore(tmp_path / "s")
  assert len(st) == 16 and st.samples == T and st.montage == MONTAGE
  assert st.subject_ids == ["s1", "s2"]
  np.testing.assert_array_equal(st.subjects, [0] * 5 + [1] * 7 + [0] * 4)
  np.testing.assert_array_equal(st.indices_for_subjects(["s1"]), list(range(5)) + [12, 13, 14, 15])
  np.testing.assert_array_equal(st.indices_for_recording("rec-b"), np.arange(5, 12))
  w = st[6]
  src = data["rec-b"]
  np.testing.assert_allclose(w["bas"], src["bas"][1], rtol=1e-6)
  assert w["bas"].dtype == np.float32 and w["ecg"].shape == (0, T)
  assert w["stage"] == src["stage"][1] and w["epoch"] == 4 and w["start"] == 92.0
  assert w["recording"] == 1 and w["subject"] == 1 and w["index"] == 6
  assert st.events("rec-a")[0]["kind"] == "hypopnea"
  assert json.loads((tmp_path / "s" / "report.json").read_text())["files"]["ok"] == 3
  assert st.recordings[0]["source"] == "/x/rec-a.edf"


def test_get_batch_matches_single_reads_in_any_order(tmp_path):
  _write(tmp_path / "s")
  st = WindowStore(tmp_path / "s", max_open_shards=1)  # forces LRU eviction
  idx = np.array([15, 0, 6, 6, 12, 3, 11])
  b = st.get_batch(idx)
  for j, i in enumerate(idx):
    one = st[i]
    for k, v in one.items():
      np.testing.assert_array_equal(b[k][j], v, err_msg=k)
  assert b["bas"].shape == (7, 2, T) and b["mask_resp"].shape == (7, 1)
  only = st.get_batch(idx, modalities=("resp",))
  assert "bas" not in only and only["resp"].shape == (7, 1, T)
  with pytest.raises(IndexError):
    st.get_batch([16])


def test_float16_and_pickle(tmp_path):
  _, data = _write(tmp_path / "s", dtype="float16")
  st = WindowStore(tmp_path / "s")
  assert np.load(tmp_path / "s" / "shards" / "rec-a" / "bas.npy", mmap_mode="r").dtype == np.float16
  np.testing.assert_allclose(st[0]["bas"], data["rec-a"]["bas"][0], rtol=1e-3, atol=1e-2)
  st2 = pickle.loads(pickle.dumps(st))
  assert len(pickle.dumps(st)) < 1000  # carries the path only
  np.testing.assert_array_equal(st2.get_batch([1, 2])["bas"], st.get_batch([1, 2])["bas"])


def test_float16_overflow_is_clipped_and_counted(tmp_path):
  w = StoreWriter(tmp_path / "s", montage=MONTAGE, sample_rate=30, window_seconds=2.0)
  a = _arrays(2, 0)
  a["bas"][0, 0, :3] = 1e6
  e = w.write_recording("r", "s", a)
  assert e["float16_saturated_samples"] == 3
  w.finalize()
  assert np.isfinite(WindowStore(tmp_path / "s")[0]["bas"]).all()


def test_writer_validates_and_is_atomic(tmp_path):
  w = StoreWriter(tmp_path / "s", montage=MONTAGE, sample_rate=30, window_seconds=2.0)
  bad = _arrays(3, 0)
  bad["bas"] = bad["bas"][:, :1]
  with pytest.raises(ValueError, match="'bas' has shape"):
    w.write_recording("r1", "s", bad)
  with pytest.raises(ValueError, match="recording_id"):
    w.write_recording("../evil", "s", _arrays(3, 0))
  assert list((tmp_path / "s" / "shards").iterdir()) == []  # no half-written shard
  w.write_recording("r1", "s", _arrays(3, 0))
  w.finalize()
  with pytest.raises(StoreError, match="not empty"):
    StoreWriter(tmp_path / "s", montage=MONTAGE, sample_rate=30, window_seconds=2.0)
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "precious.txt").write_text("x")
  with pytest.raises(StoreError, match="refusing"):
    StoreWriter(tmp_path / "other", montage=MONTAGE, overwrite=True)
  w2 = StoreWriter(tmp_path / "s", montage=MONTAGE, sample_rate=30, window_seconds=2.0,
                   overwrite=True)
  w2.write_recording("r2", "s", _arrays(2, 0))
  w2.finalize()
  st = WindowStore(tmp_path / "s")
  assert [r["recording_id"] for r in st.recordings] == ["r2"]
  assert not (tmp_path / "s" / "shards" / "r1").exists()


def test_open_validates_format_version_and_shapes(tmp_path):
  _write(tmp_path / "s")
  idx_path = tmp_path / "s" / "index.json"
  good = json.loads(idx_path.read_text())

  def check(mutate, match):
    d = tmp_path / f"v{abs(hash(match))}"
    shutil.copytree(tmp_path / "s", d)
    idx = json.loads(json.dumps(good))
    mutate(idx, d)
    (d / "index.json").write_text(json.dumps(idx))
    with pytest.raises(StoreError, match=match):
      WindowStore(d)

  check(lambda i, d: i.update(format="other"), "format")
  check(lambda i, d: i.update(version=2), "unsupported store version 2")
  check(lambda i, d: i.pop("montage"), "missing keys")
  check(lambda i, d: i["recordings"][1].update(num_windows=8), "first_window")
  check(lambda i, d: i.update(samples=61), r"bas.npy: shape \(5, 2, 60\), expected \(5, 2, 61\)")
  check(lambda i, d: (d / "shards" / "rec-c" / "stage.npy").unlink(), "rec-c/stage.npy: missing")
  check(lambda i, d: np.save(d / "shards" / "rec-a" / "sdb.npy", np.zeros(5, np.int16)),
        "dtype int16, expected int8")
  with pytest.raises(StoreError, match="no index.json"):
    WindowStore(tmp_path)
