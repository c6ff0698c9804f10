"""Markdown tables of docs/results.md, generated from the experiments' JSON files.

Every number in a results table comes from a machine-readable file under `docs/results/` (one per
experiment, holding per-seed values). A table sits in the markdown between two markers:

    <!-- results: EXPERIMENT KIND key=value ... -->
    ...generated table...
    <!-- /results -->

`render(markdown, results_dir)` regenerates every marked table from `results_dir/EXPERIMENT.json`;
`experiments/render_results.py` rewrites docs/results.md with it, and a test checks that the
committed document equals its regeneration, so a table can never drift from its data.

Kinds (rows of the JSON: `metrics` for probes/baselines, `retrieval`, `budget`):

* `metric task=T metric=M [sources=a,b] [features=f,g]`: mean ± sd over seeds of metric M, one
  row per (source, feature), one column per label budget (in the order the JSON lists them).
* `paired task=T metric=M pairs=a-b,a-c [feature=F]`: per-seed differences a − b (mean ± sd and
  how many seeds were positive), one row per pair, one column per label budget. The two sides use
  their task's headline feature (the JSON's `headline_feature`) unless `feature` is given;
  baselines (`BASELINE_FEATURES`) use their own.
* `retrieval [sources=a,b] [directions=x,y]`: recall@10 mean ± sd, its multiple of chance and the
  median rank, per source and direction.
* `budget`: steps and wall time of each trained source.
* `content [sources=a,b] [views=bas,resp]`: mean ± sd over seeds of each feature group's mean R²
  (what an embedding encodes; `experiments/embedding_content.py`).
* `spread a=A b=B`: whether variant A lies within reference B's seed spread on the primary
  metrics (validation loss and top-1, recall@10 averaged over directions, each task's headline
  AUROC with all labels): A and B mean ± sd, the per-seed difference A − B, and whether
  |mean A − mean B| ≤ 2 sd of B (the bf16 vs f32 check, `sleepfm_jax/evaluation/merge.py`).
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sleepfm_jax.evaluation import content, seeds

BASELINE_FEATURES = ("cnn", "spectral", "oracle")  # rows whose feature is the model itself
# The arguments may hold "->" (retrieval directions); they end at the first " -->".
_MARK = re.compile(r"<!-- results: (?P<args>(?:(?! -->).)*?) -->\n(?P<body>.*?)<!-- /results -->",
                   re.DOTALL)


def _args(text: str) -> tuple[str, str, dict[str, str]]:
  parts = text.split()
  if len(parts) < 2:
    raise ValueError(f"results marker '{text}': expected 'EXPERIMENT KIND key=value ...'")
  opts = {}
  for p in parts[2:]:
    if "=" not in p:
      raise ValueError(f"results marker '{text}': '{p}' is not key=value")
    k, v = p.split("=", 1)
    opts[k] = v
  return parts[0], parts[1], opts


def _csv(value: str | None) -> list[str] | None:
  return None if value is None else [v for v in value.split(",") if v]


def _budgets(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  out: list[str] = []
  for r in rows:
    if r["labels"] not in out:
      out.append(r["labels"])
  return out


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in body]
  return "\n".join(lines) + "\n"


def _metric_table(data: Mapping[str, Any], opts: Mapping[str, str]) -> str:
  task, metric = opts["task"], opts.get("metric", "auroc")
  rows = [r for r in data["metrics"] if r["task"] == task]
  sources, features = _csv(opts.get("sources")), _csv(opts.get("features"))
  if sources:
    rows = [r for r in rows if r["source"] in sources]
  if features:
    rows = [r for r in rows if r["feature"] in features]
  budgets = _budgets(rows)
  agg = seeds.aggregate(rows, ("source", "feature", "labels"), metric)
  cells: dict[tuple[str, str], dict[str, str]] = {}
  for e in agg:
    cells.setdefault((e["source"], e["feature"]), {})[e["labels"]] = seeds.fmt(e)
  order = sorted(cells, key=lambda k: ((sources or []).index(k[0]) if sources else 0,
                                       (features or []).index(k[1]) if features else 0))
  body = [[s, f, *(cells[(s, f)].get(b, "–") for b in budgets)] for s, f in order]
  n = max((e["n"] for e in agg), default=0)
  return _table(["source", "feature", *budgets], body) + (
      f"\n{metric.upper()}, mean ± sd over {n} seeds.\n")


def _paired_table(data: Mapping[str, Any], opts: Mapping[str, str]) -> str:
  task, metric = opts["task"], opts.get("metric", "auroc")
  feature = opts.get("feature") or data["headline_feature"][task]
  pairs = [pair.split("-", 1) for pair in _csv(opts["pairs"])]
  named = {s for pair in pairs for s in pair}
  # the budgets of the paired sources only (a merged file's other variants may have more)
  rows = [r for r in data["metrics"] if r["task"] == task and r["source"] in named and
          r["feature"] in (feature, *BASELINE_FEATURES)]
  budgets = _budgets(rows)
  body = []
  for a, b in pairs:
    diffs = {d["labels"]: d for d in seeds.paired(rows, ("labels",), metric, a, b)}
    body.append([f"{a} − {b}", *(
        f"{seeds.fmt(diffs[x], signed=True)} ({diffs[x]['n_positive']}/{diffs[x]['n']})"
        if x in diffs else "–" for x in budgets)])
  return _table(["difference", *budgets], body) + (
      f"\n{metric.upper()} differences per seed, mean ± sd (seeds where the first is higher / "
      "seeds).\n")


def _retrieval_table(data: Mapping[str, Any], opts: Mapping[str, str]) -> str:
  rows = data["retrieval"]
  sources, directions = _csv(opts.get("sources")), _csv(opts.get("directions"))
  if sources:
    rows = [r for r in rows if r["source"] in sources]
  if directions:
    rows = [r for r in rows if r["direction"] in directions]
  r10 = seeds.aggregate(rows, ("source", "direction"), "recall@10")
  ratio = {(e["source"], e["direction"]): e for e in seeds.aggregate(
      [{**r, "ratio": r["recall@10"] / r["chance@10"]} for r in rows],
      ("source", "direction"), "ratio")}
  rank = {(e["source"], e["direction"]): e
          for e in seeds.aggregate(rows, ("source", "direction"), "median_rank")}
  cand = {(r["source"], r["direction"]): r["n_candidates"] for r in rows}
  body = []
  for e in r10:
    key = (e["source"], e["direction"])
    body.append([e["source"], e["direction"], str(cand[key]), seeds.fmt(e),
                 f"{ratio[key]['mean']:.1f}× (min {ratio[key]['min']:.1f}×)",
                 f"{rank[key]['mean']:.0f}"])
  return _table(["source", "direction", "candidates", "recall@10", "× chance", "median rank"],
                body)


def _budget_table(data: Mapping[str, Any], opts: Mapping[str, str]) -> str:
  del opts
  steps = seeds.aggregate(data["budget"], ("source", "what"), "steps")
  minutes = {(e["source"], e["what"]): e for e in seeds.aggregate(
      [{**r, "minutes": r["wall_s"] / 60.0} for r in data["budget"]], ("source", "what"),
      "minutes")}
  body = [[e["source"], e["what"], seeds.fmt(e, 0),
           seeds.fmt(minutes[(e["source"], e["what"])], 1)] for e in steps]
  n = max((e["n"] for e in steps), default=0)
  return _table(["source", "what", "steps", "wall minutes"], body) + (
      f"\nMean ± sd over {n} seeds.\n")


def _content_table(data: Mapping[str, Any], opts: Mapping[str, str]) -> str:
  """Mean ± sd over seeds of each feature group's mean R² (`experiments/embedding_content.py`
  outputs gathered as `{"seeds": {seed: {source: {view: {feature: r2}}}}}`)."""
  per_seed = list(data["seeds"].values())
  sources = _csv(opts.get("sources")) or list(per_seed[0])
  views = _csv(opts.get("views")) or list(per_seed[0][sources[0]])
  groups = list(content.group_means(per_seed[0][sources[0]][views[0]]))
  body = []
  for source in sources:
    for view in views:
      means = [content.group_means(run[source][view]) for run in per_seed]
      body.append([source, view, *(seeds.fmt(seeds.summary([m[g] for m in means]), 2)
                                   for g in groups)])
  return _table(["source", "embedding", *groups], body) + (
      f"\nMean ± sd over {len(per_seed)} seeds of each group's mean out-of-fold R².\n")


def _primary(data: Mapping[str, Any], source: str) -> dict[str, dict[Any, float]]:
  """`{metric: {seed: value}}` of `source`'s primary metrics (the `spread` table's rows)."""
  out: dict[str, dict[Any, float]] = {}
  for r in data["budget"]:
    if r["source"] == source and r["what"] == "pretraining":
      out.setdefault("validation loss", {})[r["seed"]] = r["val_loss"]
      out.setdefault("validation top-1", {})[r["seed"]] = r["val_top1"]
  recall: dict[Any, list[float]] = {}
  for r in data["retrieval"]:
    if r["source"] == source:
      recall.setdefault(r["seed"], []).append(r["recall@10"])
  out["recall@10 (mean of directions)"] = {s: sum(v) / len(v) for s, v in recall.items()}
  for task, feature in data["headline_feature"].items():
    rows = [r for r in data["metrics"]
            if (r["source"], r["task"], r["feature"]) == (source, task, feature)]
    if rows:
      last = _budgets(rows)[-1]
      out[f"{task} {feature} AUROC, {last}"] = {r["seed"]: r["auroc"] for r in rows
                                                 if r["labels"] == last}
  return out


def _spread_table(data: Mapping[str, Any], opts: Mapping[str, str]) -> str:
  a, b = opts["a"], opts["b"]
  pa, pb = _primary(data, a), _primary(data, b)
  body = []
  for metric, vb in pb.items():
    va = pa.get(metric, {})
    sa, sb = seeds.summary(list(va.values())), seeds.summary(list(vb.values()))
    both = sorted(set(va) & set(vb))
    diff = seeds.summary([va[s] - vb[s] for s in both])
    within = (sa["n"] and sb["n"] > 1 and abs(sa["mean"] - sb["mean"]) <= 2 * sb["sd"])
    body.append([metric, seeds.fmt(sa), seeds.fmt(sb), seeds.fmt(diff, signed=True),
                 f"{2 * sb['sd']:.3f}" if sb["n"] > 1 else "–", "yes" if within else "**no**"])
  return _table(["metric", a, b, f"{a} − {b} per seed", f"2 sd of {b}", "within"], body) + (
      f"\nMean ± sd over seeds; 'within': |mean {a} − mean {b}| ≤ 2 sd of {b}.\n")


def _primary_table(data: Mapping[str, Any], opts: Mapping[str, str]) -> str:
  """One row per source of `sources=`, one column per primary metric (`_primary`): e.g. the
  settings of a sweep side by side."""
  sources = _csv(opts.get("sources")) or []
  per = {s: _primary(data, s) for s in sources}
  metrics = list(dict.fromkeys(m for p in per.values() for m in p))
  body = [[s, *(seeds.fmt(seeds.summary(list(per[s].get(m, {}).values()))) for m in metrics)]
          for s in sources]
  counts = sorted({len(v) for p in per.values() for v in p.values()}) or [0]
  lo, hi = counts[0], counts[-1]
  seeds_said = f"{hi} seed{'s' if hi != 1 else ''}" if lo == hi else f"{lo}–{hi} seeds per row"
  return _table(["source", *metrics], body) + (
      f"\nMean ± sd over {seeds_said}"
      f"{' (one seed: sd 0 is no spread measured)' if lo == 1 else ''}.\n")


_KINDS = {"metric": _metric_table, "paired": _paired_table, "retrieval": _retrieval_table,
          "budget": _budget_table, "content": _content_table, "spread": _spread_table,
          "primary": _primary_table}


def render(markdown: str, results_dir: str | pathlib.Path) -> str:
  """`markdown` with every marked table regenerated from `results_dir`."""
  cache: dict[str, Any] = {}

  def one(m: re.Match) -> str:
    experiment, kind, opts = _args(m.group("args"))
    if kind not in _KINDS:
      raise ValueError(f"results marker: unknown kind '{kind}'; one of {sorted(_KINDS)}")
    if experiment not in cache:
      path = pathlib.Path(results_dir) / f"{experiment}.json"
      if not path.exists():
        raise FileNotFoundError(f"results marker names '{experiment}', but {path} does not exist")
      cache[experiment] = json.loads(path.read_text())
    table = _KINDS[kind](cache[experiment], opts)
    return f"<!-- results: {m.group('args')} -->\n{table}<!-- /results -->"

  out, count = _MARK.subn(one, markdown)
  opened = len(re.findall(r"^<!-- results: ", markdown, re.MULTILINE))
  if count != opened:  # a marker the pattern misses would stay stale, silently
    raise ValueError(f"results markers: {opened} opened at a line start, {count} matched (each "
                     "needs '<!-- results: ARGS -->', a newline, then '<!-- /results -->')")
  return out
