"""Embedding export format v2 (and v1 files): round trip, derived arrays, validation."""

import json

import numpy as np
import pytest

from eval_synth import recordings
from sleepfm_jax.evaluation.embeddings import (FORMAT, EmbeddingFormatError, EmbeddingWriter,
                                               combine, load_embeddings, save_embeddings)


def _unit(e):
  return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_round_trip(tmp_path):
  recs = recordings(n_subjects=3, n_windows=20, dim=8, absent={"ecg": {1}}, sdb_scored={0})
  recs[2]["recording_id"] = "site A/sub 2"  # unsafe characters in the id
  save_embeddings(tmp_path, recs, checkpoint="ckpt/42", step=42, mode="loo")
  es = load_embeddings(tmp_path)
  assert len(es) == 60 and es.embedding_dim == 8
  assert es.metadata["format"] == FORMAT and es.metadata["step"] == 42
  assert es.metadata["mode"] == "loo"
  assert es.recordings == ["sub-000_night-1", "sub-001_night-1", "site A/sub 2"]
  for i, rec in enumerate(recs):
    rows = slice(20 * i, 20 * (i + 1))
    np.testing.assert_array_equal(es.stage[rows], rec["stage"])
    np.testing.assert_array_equal(es.epoch[rows], np.arange(20))
    assert (es.subject_id[rows] == rec["subject_id"]).all()
    assert (es.recording_id[rows] == rec["recording_id"]).all()
    for m in ("bas", "resp"):  # stored L2-normalised, with the norms
      np.testing.assert_allclose(es.emb[m][rows], _unit(rec["emb"][m]), rtol=1e-6, atol=1e-7)
      np.testing.assert_allclose(es.norm[m][rows], np.linalg.norm(rec["emb"][m], axis=1),
                                 rtol=1e-6)
  # Absent ECG (subject 1): zeros and present=False; SDB unscored -> -1.
  assert not es.present["ecg"][20:40].any() and (es.emb["ecg"][20:40] == 0).all()
  assert (es.norm["ecg"][20:40] == 0).all()
  assert es.present["ecg"][:20].all()
  assert (es.sdb[20:] == -1).all() and set(np.unique(es.sdb[:20])) <= {0, 1}
  # Feature kinds; concat is the original's: the three normalised embeddings side by side.
  assert es.features("concat").shape == (60, 24)
  np.testing.assert_array_equal(es.features("concat")[:, 8:16], es.emb["ecg"])
  np.testing.assert_allclose(np.linalg.norm(es.features("concat")[:20].reshape(20, 3, 8), axis=2),
                             1.0, rtol=1e-6)
  assert es.features("bas+resp").shape == (60, 16)
  np.testing.assert_array_equal(es.features("bas"), es.emb["bas"])
  with pytest.raises(ValueError, match="unknown feature kind"):
    es.features("eeg")
  # Subset and per-recording loading.
  sub = load_embeddings(tmp_path, recordings=["site A/sub 2"])
  np.testing.assert_array_equal(sub.combined, es.combined[40:])
  np.testing.assert_array_equal(es.subset(es.subject_id == "sub-001").stage, es.stage[20:40])
  np.testing.assert_array_equal(es.subset(np.arange(3)).norm["bas"], es.norm["bas"][:3])


def _write_v1(path, recs):
  """An export as format v1 wrote it: unnormalised emb_<modality>, no norms, version 1."""
  path.mkdir()
  entries = []
  for i, rec in enumerate(recs):
    n = len(rec["stage"])
    arrays = {f"emb_{m}": np.where(rec["present"][m][:, None], e, 0).astype(np.float32)
              for m, e in rec["emb"].items()}
    arrays.update({f"present_{m}": p for m, p in rec["present"].items()})
    arrays["emb_combined"] = combine(rec["emb"], rec["present"])
    arrays.update(stage=rec["stage"].astype(np.int8), epoch=rec["epoch"].astype(np.int32),
                  sdb=np.full(n, -1, np.int8), start=rec["start"])
    np.savez(path / f"r{i}.npz", **arrays)
    entries.append({"recording_id": rec["recording_id"], "subject_id": rec["subject_id"],
                    "file": f"r{i}.npz", "num_windows": n})
  (path / "index.json").write_text(json.dumps({
      "format": FORMAT, "version": 1, "embedding_dim": 8, "modalities": ["bas", "ecg", "resp"],
      "stages": ["W", "N1", "N2", "N3", "REM"], "recordings": entries, "checkpoint": "old"}))


def test_version_1_files_read_as_normalised_embeddings(tmp_path):
  recs = recordings(n_subjects=2, n_windows=10, dim=8, absent={"resp": {1}})
  _write_v1(tmp_path / "v1", recs)
  save_embeddings(tmp_path / "v2", recs)
  old, new = load_embeddings(tmp_path / "v1"), load_embeddings(tmp_path / "v2")
  assert old.metadata["version"] == 1 and new.metadata["version"] == 2
  for m in ("bas", "ecg", "resp"):
    np.testing.assert_allclose(old.emb[m], new.emb[m], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(old.norm[m], new.norm[m], rtol=1e-6)
  np.testing.assert_allclose(old.features("concat"), new.features("concat"), rtol=1e-6,
                             atol=1e-7)
  np.testing.assert_allclose(old.features("concat")[:10, :8], _unit(recs[0]["emb"]["bas"]),
                             rtol=1e-6, atol=1e-7)
  assert (old.emb["resp"][10:] == 0).all() and (old.norm["resp"][10:] == 0).all()
  np.testing.assert_allclose(old.combined, new.combined, rtol=1e-6, atol=1e-7)


def test_combined_is_mean_of_normalised_present_modalities(tmp_path):
  rng = np.random.default_rng(1)
  emb = {m: rng.normal(size=(5, 4)) for m in ("bas", "ecg", "resp")}
  present = {"bas": np.ones(5, bool), "ecg": np.array([1, 0, 1, 0, 0], bool),
             "resp": np.array([1, 1, 0, 0, 0], bool)}
  present["bas"][4] = False
  comb = combine(emb, present)
  unit = {m: e / np.linalg.norm(e, axis=1, keepdims=True) for m, e in emb.items()}
  np.testing.assert_allclose(comb[0], (unit["bas"][0] + unit["ecg"][0] + unit["resp"][0]) / 3,
                             rtol=1e-6)
  np.testing.assert_allclose(comb[1], (unit["bas"][1] + unit["resp"][1]) / 2, rtol=1e-6)
  np.testing.assert_allclose(comb[3], unit["bas"][3], rtol=1e-6)
  assert (comb[4] == 0).all()  # nothing present
  w = EmbeddingWriter(tmp_path)
  w.write("r", "s", emb=emb, present=present, stage=np.zeros(5))
  w.finalize()
  np.testing.assert_allclose(load_embeddings(tmp_path).combined, comb, rtol=1e-6)


def test_validation_errors(tmp_path):
  with pytest.raises(EmbeddingFormatError, match="no index.json"):
    load_embeddings(tmp_path)
  save_embeddings(tmp_path, recordings(n_subjects=1, n_windows=5, dim=4))
  index = json.loads((tmp_path / "index.json").read_text())
  index["version"] = 3
  (tmp_path / "index.json").write_text(json.dumps(index))
  with pytest.raises(EmbeddingFormatError, match="unsupported version 3"):
    load_embeddings(tmp_path)
  index["version"], index["format"] = 2, "something-else"
  (tmp_path / "index.json").write_text(json.dumps(index))
  with pytest.raises(EmbeddingFormatError, match="format is 'something-else'"):
    load_embeddings(tmp_path)
  index["format"] = FORMAT
  index["recordings"][0]["num_windows"] = 6  # disagrees with the file
  (tmp_path / "index.json").write_text(json.dumps(index))
  with pytest.raises(EmbeddingFormatError, match=r"sub-000_night-1\.npz: 'emb_bas' has shape"):
    load_embeddings(tmp_path)
  w = EmbeddingWriter(tmp_path / "x")
  w.write("a", "s", emb={"bas": np.zeros((3, 4))}, stage=np.zeros(3))
  with pytest.raises(ValueError, match="written twice"):
    w.write("a", "s", emb={"bas": np.zeros((3, 4))}, stage=np.zeros(3))
  with pytest.raises(ValueError, match="emb_ecg has shape"):
    w.write("b", "s", emb={"bas": np.zeros((3, 4)), "ecg": np.zeros((3, 5))}, stage=np.zeros(3))


def test_format_error_is_the_project_input_error(tmp_path):
  import pickle  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.data.errors import PSGError  # pylint: disable=import-outside-toplevel

  with pytest.raises(PSGError) as info:
    load_embeddings(tmp_path)
  assert str(info.value).startswith(str(tmp_path / "index.json") + ": ")
  again = pickle.loads(pickle.dumps(info.value))  # crosses process boundaries intact
  assert isinstance(again, EmbeddingFormatError) and str(again) == str(info.value)
