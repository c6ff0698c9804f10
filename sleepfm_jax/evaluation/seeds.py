"""Results over several seeds: mean +- sd per condition and paired per-seed differences.

An experiment repeated with seeds 0..S-1 yields one row per (condition, seed): a flat dict with
the condition's keys (source, task, feature, labels, ...), `seed` and metric values. `aggregate`
summarises each condition over its seeds; `paired` compares two sources seed by seed on otherwise
identical conditions (same folds, same labelled windows, same data), which removes the variation
the two share and is the comparison the evidence rules ask for. numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def _key(row: Mapping[str, Any], keys: Sequence[str]) -> tuple:
  return tuple(row.get(k) for k in keys)


def summary(values: Sequence[float]) -> dict[str, Any]:
  """Mean, sample sd (ddof 1; 0 for one value), min, max and the values of finite `values`."""
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
  if not v.size:
    return {"n": 0, "mean": None, "sd": None, "min": None, "max": None, "values": []}
  return {"n": int(v.size), "mean": float(v.mean()),
          "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
          "min": float(v.min()), "max": float(v.max()), "values": [float(x) for x in v]}


def aggregate(rows: Iterable[Mapping[str, Any]], keys: Sequence[str], metric: str
              ) -> list[dict[str, Any]]:
  """One entry per distinct `keys` tuple: the keys, the seeds and `summary` of `metric`.

  Entries keep the order in which their condition first appears in `rows`. A condition that has
  the same seed twice is an error (two results for one run would be averaged silently).
  """
  groups: dict[tuple, list[Mapping[str, Any]]] = {}
  for row in rows:
    if metric in row:
      groups.setdefault(_key(row, keys), []).append(row)
  out = []
  for key, members in groups.items():
    seeds = [m.get("seed") for m in members]
    if len(set(seeds)) != len(seeds):
      raise ValueError(f"condition {dict(zip(keys, key, strict=True))} has repeated seeds {seeds}")
    order = np.argsort([-1 if s is None else s for s in seeds], kind="stable")
    out.append({**dict(zip(keys, key, strict=True)), "seeds": [seeds[i] for i in order],
                **summary([members[i][metric] for i in order])})
  return out


def paired(rows: Iterable[Mapping[str, Any]], keys: Sequence[str], metric: str, a: str, b: str,
           by: str = "source") -> list[dict[str, Any]]:
  """Per condition, the per-seed differences `a - b` of `metric` between two values of `by`.

  `keys` name the condition (without `by` and `seed`); only seeds present for both sides count.
  Each entry: the keys, `a`, `b`, the seeds, `summary` of the differences and `n_positive`
  (seeds where a > b).
  """
  rows = list(rows)
  side: dict[str, dict[tuple, dict[Any, float]]] = {a: {}, b: {}}
  for row in rows:
    if row.get(by) in side and metric in row:
      per_seed = side[row[by]].setdefault(_key(row, keys), {})
      if row.get("seed") in per_seed:
        raise ValueError(f"{by}={row[by]} {dict(zip(keys, _key(row, keys), strict=True))}: "
                         f"seed {row.get('seed')} appears twice")
      per_seed[row.get("seed")] = row[metric]
  out = []
  for key, va in side[a].items():
    vb = side[b].get(key)
    if not vb:
      continue
    seeds = sorted(s for s in va if s in vb and va[s] is not None and vb[s] is not None)
    diffs = [float(va[s]) - float(vb[s]) for s in seeds]
    out.append({**dict(zip(keys, key, strict=True)), "a": a, "b": b, "seeds": seeds,
                **summary(diffs), "n_positive": int(sum(d > 0 for d in diffs))})
  return out


def fmt(entry: Mapping[str, Any], digits: int = 3, signed: bool = False) -> str:
  """`mean ± sd` of an `aggregate`/`paired` entry ("–" when it has no values)."""
  if not entry or entry.get("mean") is None:
    return "–"
  sign = "+" if signed else ""
  return f"{entry['mean']:{sign}.{digits}f} ± {entry['sd']:.{digits}f}"
