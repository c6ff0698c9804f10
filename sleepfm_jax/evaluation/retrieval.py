"""Zero-shot cross-modal retrieval: does a window's BAS embedding find the same window's ECG one?

Protocol (docs/evaluation.md): for each query window i, the candidate set holds its true match i and
N - 1 other windows drawn uniformly without replacement (seeded; N = all windows uses every
window). Candidates are ranked by dot product; the rank of the true match is the number of other
candidates scoring at least as high (ties count against the query, so degenerate embeddings cannot
score well). Recall@k is the fraction of queries with rank < k; chance is k / N.

Similarities are computed in chunks of query rows, so memory is bounded by `chunk_elems` floats
whatever N is (N = 90,000 never builds an N×N matrix).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from sleepfm_jax.data.channels import MODALITIES
from sleepfm_jax.evaluation.embeddings import EmbeddingSet


_FULL_ROW_RATIO = 40


def sample_candidates(n: int, n_candidates: int, seed: int) -> np.ndarray:
  """[n, n_candidates - 1] indices of the other candidates of each query (never the query itself).

  Drawn query by query from one `np.random.default_rng(seed)` stream, exactly as `recall_at_k`
  draws them, so tests can rebuild the candidate sets.
  """
  return _draw(np.random.default_rng(seed), n, n_candidates - 1, np.arange(n))


def _draw(rng: np.random.Generator, n: int, m: int, queries: np.ndarray) -> np.ndarray:
  out = np.empty((len(queries), m), np.int64)
  for r, i in enumerate(queries):
    j = rng.choice(n - 1, size=m, replace=False)
    out[r] = j + (j >= i)
  return out


def _ranks(query: np.ndarray, cand: np.ndarray, n_candidates: int, seed: int,
           chunk_elems: int) -> np.ndarray:
  """0-based rank of each query's true match among its candidates (ties pessimistic)."""
  n, dim = query.shape
  ranks = np.empty(n, np.int64)
  if n_candidates >= n:  # every window is a candidate: chunked full rows
    step = max(1, chunk_elems // n)
    for lo in range(0, n, step):
      rows = np.arange(lo, min(n, lo + step))
      sims = query[rows] @ cand.T
      true = sims[np.arange(len(rows)), rows]
      ranks[rows] = (sims >= true[:, None]).sum(axis=1) - 1
    return ranks
  rng = np.random.default_rng(seed)
  # Full similarity rows by one matrix product, then pick the candidates (BLAS-bound), or gather
  # the candidates' vectors first (memory-bound); the first is faster unless n >> N (measured).
  full_rows = n <= _FULL_ROW_RATIO * n_candidates
  step = max(1, chunk_elems // (n if full_rows else n_candidates * dim))
  for lo in range(0, n, step):
    rows = np.arange(lo, min(n, lo + step))
    idx = np.concatenate([rows[:, None], _draw(rng, n, n_candidates - 1, rows)], axis=1)
    if full_rows:
      sims = np.take_along_axis(query[rows] @ cand.T, idx, axis=1)
    else:
      sims = np.einsum("qd,qkd->qk", query[rows], cand[idx])
    ranks[rows] = (sims[:, 1:] >= sims[:, :1]).sum(axis=1)
  return ranks


def recall_at_k(query: np.ndarray, cand: np.ndarray, n_candidates: int | None = None,
                ks: Sequence[int] = (1, 5, 10), seed: int = 0, chunk_elems: int = 2**24) -> dict:
  """Retrieval of row i of `cand` from row i of `query` among N candidates.

  Args:
    query: [n, D] query embeddings (already normalised as the protocol wants).
    cand: [n, D] candidate embeddings; row i is the true match of query i.
    n_candidates: N, candidates per query including the true match (None or ≥ n: all n windows).
    ks: cut-offs for recall@k.
    seed: seed of the candidate sampling.
    chunk_elems: floats per similarity chunk (memory bound).

  Returns:
    {"n_queries", "n_candidates", "recall@k" and "chance@k" for each k, "median_rank",
     "mean_rank"} (ranks 1-based).
  """
  query = np.asarray(query)
  cand = np.asarray(cand)
  if query.shape != cand.shape or query.ndim != 2:
    raise ValueError(f"query {query.shape} and candidates {cand.shape} must both be [n, D]")
  n = len(query)
  if n < 2:
    raise ValueError("retrieval needs at least 2 windows")
  n_cand = n if n_candidates is None else max(2, min(int(n_candidates), n))
  ranks = _ranks(query, cand, n_cand, seed, chunk_elems)
  out: dict = {"n_queries": int(n), "n_candidates": int(n_cand)}
  for k in ks:
    out[f"recall@{k}"] = float(np.mean(ranks < k))
    out[f"chance@{k}"] = min(1.0, k / n_cand)
  out["median_rank"] = float(np.median(ranks) + 1)
  out["mean_rank"] = float(np.mean(ranks) + 1)
  return out


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def cross_modal_retrieval(es: EmbeddingSet, n_candidates: int | None = 1000,
                          ks: Sequence[int] = (1, 5, 10), seed: int = 0,
                          chunk_elems: int = 2**24) -> dict[str, dict]:
  """Retrieval for every modality pair (both directions) and leave-one-out direction.

  Pairwise `a->b`: queries are the L2-normalised `a` embeddings, candidates the normalised `b`
  embeddings, over windows where both are present. Leave-one-out `a->others` / `others->a`: the
  other side is the plain mean of the normalised embeddings of the other modalities (as in the LOO
  loss, not re-normalised), over windows where every modality is present; it needs 3 modalities.

  Returns:
    {direction: `recall_at_k` result} or {direction: {"skipped": reason}}.
  """
  available = [m for m in MODALITIES if es.present[m].any()]
  unit = {m: _unit(es.emb[m]) for m in available}
  results: dict[str, dict] = {}
  for a, b in itertools.permutations(MODALITIES, 2):
    key = f"{a}->{b}"
    if a not in available or b not in available:
      results[key] = {"skipped": f"modality '{a if a not in available else b}' absent"}
      continue
    both = es.present[a] & es.present[b]
    if both.sum() < 2:
      results[key] = {"skipped": f"{int(both.sum())} windows have both {a} and {b}"}
      continue
    results[key] = recall_at_k(unit[a][both], unit[b][both], n_candidates, ks, seed, chunk_elems)
  for a in MODALITIES:
    for key in (f"{a}->others", f"others->{a}"):
      if len(available) < 3:
        results[key] = {"skipped": f"leave-one-out needs 3 modalities; present: {available}"}
    if len(available) < 3:
      continue
    all_present = np.all([es.present[m] for m in MODALITIES], axis=0)
    if all_present.sum() < 2:
      for key in (f"{a}->others", f"others->{a}"):
        results[key] = {"skipped": f"{int(all_present.sum())} windows have every modality"}
      continue
    others = np.mean([unit[m][all_present] for m in MODALITIES if m != a], axis=0)
    mine = unit[a][all_present]
    results[f"{a}->others"] = recall_at_k(mine, others, n_candidates, ks, seed, chunk_elems)
    results[f"others->{a}"] = recall_at_k(others, mine, n_candidates, ks, seed, chunk_elems)
  return results
