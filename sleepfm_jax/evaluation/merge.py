"""Several evidence results side by side: one JSON whose sources carry the variant's tag.

`experiments/evidence.py` writes one results JSON per variant of an experiment (float32 vs
bfloat16 compute, say). `merge({"f32": a, "bf16": b})` gives one JSON in the same format in which
source `loo` of variant `bf16` is `loo_bf16`, so every `results_doc` table (and the paired per-seed
differences between variants) works on it unchanged. `curves` reads each pretraining run's
validation rows from the evidence workdir, so the merged file also holds the loss curves.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

from sleepfm_jax.evaluation import report

_ROWS = ("metrics", "retrieval", "budget", "curves")
_CURVE_KEYS = ("loss", "top1")


def tag_source(source: str, tag: str) -> str:
  if "-" in tag or "-" in source:
    raise ValueError(f"'{source}', '{tag}': '-' separates the two sides of a paired table")
  return f"{source}_{tag}"


def merge(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
  """One results dict from `{tag: results}`; row lists are concatenated with tagged sources."""
  if not results:
    raise ValueError("nothing to merge")
  first = next(iter(results.values()))
  out: dict[str, Any] = {k: [] for k in _ROWS}
  out["headline_feature"] = first.get("headline_feature", {})
  out["variants"] = {}
  for tag, res in results.items():
    if res.get("headline_feature", {}) != out["headline_feature"]:
      raise ValueError(f"variant '{tag}' has other headline features: "
                       f"{res.get('headline_feature')} vs {out['headline_feature']}")
    for key in _ROWS:
      out[key] += [{**r, "source": tag_source(r["source"], tag)} for r in res.get(key, [])]
    out["variants"][tag] = {k: res[k] for k in ("settings", "command", "date", "hardware",
                                                "wall_s") if k in res}
  return out


def curves(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
  """Validation rows of every `seed_S/pretrain_NAME/metrics.jsonl` under an evidence workdir:
  one row per (source NAME, seed, step) with the validation loss and top-1."""
  rows = []
  for path in sorted(pathlib.Path(workdir).glob("seed_*/pretrain_*/metrics.jsonl")):
    seed = int(path.parts[-3].removeprefix("seed_"))
    source = path.parts[-2].removeprefix("pretrain_")
    for r in report.read_metrics_jsonl(path):
      if r.get("split") == "val":
        rows.append({"source": source, "seed": seed, "step": int(r["step"]),
                     **{k: float(r[k]) for k in _CURVE_KEYS if k in r}})
  return rows
