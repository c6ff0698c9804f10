"""Embedding export format v1: round trip, derived arrays, validation."""

import json

import numpy as np
import pytest

from eval_synth import recordings
from sleepfm_jax.evaluation.embeddings import (FORMAT, EmbeddingFormatError, EmbeddingWriter,
                                               combine, load_embeddings, save_embeddings)


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
    for m in ("bas", "resp"):
      np.testing.assert_allclose(es.emb[m][rows], rec["emb"][m], rtol=1e-6)
  # Absent ECG (subject 1): zeros and present=False; SDB unscored -> -1.
  assert not es.present["ecg"][20:40].any() and (es.emb["ecg"][20:40] == 0).all()
  assert es.present["ecg"][:20].all()
  assert (es.sdb[20:] == -1).all() and set(np.unique(es.sdb[:20])) <= {0, 1}
  # Feature kinds.
  assert es.features("concat").shape == (60, 24)
  np.testing.assert_array_equal(es.features("concat")[:, 8:16], es.emb["ecg"])
  assert es.features("bas+resp").shape == (60, 16)
  np.testing.assert_array_equal(es.features("bas"), es.emb["bas"])
  with pytest.raises(ValueError, match="unknown feature kind"):
    es.features("eeg")
  # Subset and per-recording loading.
  sub = load_embeddings(tmp_path, recordings=["site A/sub 2"])
  np.testing.assert_array_equal(sub.combined, es.combined[40:])
  np.testing.assert_array_equal(es.subset(es.subject_id == "sub-001").stage, es.stage[20:40])


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
  index["version"] = 2
  (tmp_path / "index.json").write_text(json.dumps(index))
  with pytest.raises(EmbeddingFormatError, match="unsupported version 2"):
    load_embeddings(tmp_path)
  index["version"], index["format"] = 1, "something-else"
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
