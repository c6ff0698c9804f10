"""Cross-modal retrieval: chunked recall equals a brute-force N×N computation."""

import numpy as np
import pytest

from eval_synth import embedding_set
from sleepfm_jax.evaluation import retrieval
from sleepfm_jax.evaluation.retrieval import cross_modal_retrieval, recall_at_k, sample_candidates


def _brute_force(q, c, cand_sets, ks):
  sims = q @ c.T  # the full matrix, one row per query
  ranks = []
  for i in range(len(q)):
    others = cand_sets[i]
    ranks.append(sum(sims[i, j] >= sims[i, i] for j in others))
  ranks = np.array(ranks)
  return {k: float(np.mean(ranks < k)) for k in ks}, ranks


def _pair(n=150, d=8, noise=1.5, seed=0):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(n, d))
  return q, q + noise * rng.normal(size=(n, d))


@pytest.mark.parametrize("chunk_elems", [7, 1000, 2**24])
def test_all_candidates_equals_brute_force(chunk_elems):
  q, c = _pair()
  res = recall_at_k(q, c, None, ks=(1, 5, 10), chunk_elems=chunk_elems)
  ref, ranks = _brute_force(q, c, [np.delete(np.arange(150), i) for i in range(150)], (1, 5, 10))
  for k in (1, 5, 10):
    assert res[f"recall@{k}"] == ref[k]
  assert res["n_candidates"] == 150 and res["median_rank"] == np.median(ranks) + 1
  assert 0.05 < res["recall@1"] < 0.9  # neither trivial nor hopeless


@pytest.mark.parametrize("chunk_elems", [50, 10**6])
@pytest.mark.parametrize("full_rows", [True, False])
def test_sampled_candidates_equal_brute_force(chunk_elems, full_rows, monkeypatch):
  monkeypatch.setattr(retrieval, "_FULL_ROW_RATIO", 10**6 if full_rows else 0)
  q, c = _pair(seed=1)
  n_cand = 20
  res = recall_at_k(q, c, n_cand, ks=(1, 5), seed=3, chunk_elems=chunk_elems)
  sets = sample_candidates(150, n_cand, seed=3)
  assert sets.shape == (150, 19)
  for i, row in enumerate(sets):
    assert i not in row and len(set(row)) == 19
  ref, _ = _brute_force(q, c, sets, (1, 5))
  assert res["recall@1"] == ref[1] and res["recall@5"] == ref[5]
  assert res["chance@5"] == pytest.approx(5 / 20)


def test_ties_count_against_the_query():
  z = np.zeros((30, 4))
  res = recall_at_k(z, z, None, ks=(1, 29, 30))
  assert res["recall@1"] == 0.0 and res["recall@29"] == 0.0 and res["recall@30"] == 1.0
  same = np.eye(30)
  assert recall_at_k(same, same, 10, ks=(1,))["recall@1"] == 1.0


def test_cross_modal_directions(tmp_path):
  es = embedding_set(tmp_path, n_subjects=3, n_windows=40, dim=6, absent={"ecg": {0}})
  res = cross_modal_retrieval(es, n_candidates=25, ks=(1, 5))
  assert {"bas->ecg", "ecg->bas", "bas->resp", "resp->bas", "ecg->resp", "resp->ecg",
          "bas->others", "others->bas", "ecg->others", "others->ecg", "resp->others",
          "others->resp"} == set(res)
  assert res["bas->ecg"]["n_queries"] == 80 and res["bas->resp"]["n_queries"] == 120
  assert res["bas->others"]["n_queries"] == 80
  # The synthetic modalities share a per-window signal: retrieval is far above chance.
  assert res["bas->resp"]["recall@1"] > 3 * res["bas->resp"]["chance@1"]
  # LOO candidates are the plain mean of the normalised other modalities.
  keep = es.present["ecg"]
  unit = {m: es.emb[m][keep] / np.linalg.norm(es.emb[m][keep], axis=1, keepdims=True)
          for m in ("bas", "ecg", "resp")}
  ref = recall_at_k(unit["ecg"], (unit["bas"] + unit["resp"]) / 2, 25, ks=(1, 5))
  assert res["ecg->others"] == pytest.approx(ref)
  es.present["ecg"][:] = False
  res = cross_modal_retrieval(es, n_candidates=25, ks=(1,))
  assert "skipped" in res["bas->ecg"] and "needs 3 modalities" in res["bas->others"]["skipped"]
