"""One evaluation run: probes, metrics with CIs and retrieval over named embedding sets.

`run_suite` is what `experiments/evaluate.py` calls; `report.write_report` renders its result.
External predictions (CNN baseline, spectral baseline, anything that writes the predictions format)
are scored by the same metric code next to the probes.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sleepfm_jax.evaluation import probes as probes_lib
from sleepfm_jax.evaluation import retrieval as retrieval_lib
from sleepfm_jax.evaluation.embeddings import EmbeddingSet
from sleepfm_jax.evaluation.metrics import bootstrap_metrics
from sleepfm_jax.evaluation.predictions import Predictions

PROBE_TASKS = tuple(probes_lib.TASKS)


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
  """What to evaluate and how (see docs/evaluation.md).

  Attributes:
    tasks: any of "staging", "sdb", "retrieval".
    features: feature kinds probed for each embedding set (`EmbeddingSet.features`).
    label_fractions: training-label fractions for the label-efficiency curve.
    probe: probe protocol settings.
    n_boot: bootstrap replicates for the CIs (0 = none).
    boot_seed: seed of the bootstrap.
    retrieval_candidates: N candidates per query (None = all windows).
    retrieval_ks: recall cut-offs.
  """

  tasks: tuple[str, ...] = ("staging", "sdb", "retrieval")
  features: tuple[str, ...] = probes_lib.FEATURE_KINDS
  label_fractions: tuple[float, ...] = (1.0,)
  probe: probes_lib.ProbeConfig = probes_lib.ProbeConfig()
  n_boot: int = 1000
  boot_seed: int = 0
  retrieval_candidates: int | None = 1000
  retrieval_ks: tuple[int, ...] = (1, 5, 10)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Entry:
  """One scored set of predictions (a probe, or an external predictions file)."""

  source: str           # embedding-set or predictions name
  task: str
  feature: str          # feature kind probed, or "external"
  label_fraction: float
  predictions: Predictions
  metrics: dict[str, Any]
  probe: dict[str, Any] | None = None

  @property
  def key(self) -> str:
    return f"{self.source}/{self.task}/{self.feature}@{self.label_fraction:g}"

  def summary(self) -> dict[str, Any]:
    return {"source": self.source, "task": self.task, "feature": self.feature,
            "label_fraction": self.label_fraction, "classes": self.predictions.classes,
            "n_windows": len(self.predictions),
            "n_subjects": int(len(np.unique(self.predictions.subject_id))),
            "n_recordings": int(len(np.unique(self.predictions.recording_id))),
            "metrics": self.metrics, "probe": self.probe}


@dataclasses.dataclass
class SuiteResult:
  config: SuiteConfig
  entries: list[Entry]
  skipped: list[dict[str, str]]
  retrieval: dict[str, dict[str, dict]]
  embeddings: dict[str, EmbeddingSet]
  seconds: float = 0.0

  def headline(self, source: str, task: str) -> Entry | None:
    """The entry plotted for a source/task: full labels, 'concat' if probed, else the first."""
    cands = [e for e in self.entries if e.source == source and e.task == task]
    if not cands:
      return None
    full = [e for e in cands if e.label_fraction == 1.0] or cands
    for feat in ("concat", "combined", "external"):
      for e in full:
        if e.feature == feat:
          return e
    return full[0]

  def compare(self, source: str, control: str) -> dict[str, Any]:
    """The headline of `source` against a `control` source (e.g. the untrained encoders).

    Per task, both headline entries (full labels, `concat` if probed) with macro AUROC (95 % CI),
    AUPRC and kappa, and the AUROC difference; per retrieval direction of `source` (and of the
    control), recall@10, its chance level and their ratio; `min_x_chance` is the smallest ratio
    over `source`'s directions.
    """
    def brief(e: Entry | None) -> dict[str, Any] | None:
      if e is None:
        return None
      m = e.metrics
      ci = m.get("ci", {}).get("auroc_macro") or {}
      return {"feature": e.feature, "n_windows": len(e.predictions),
              "auroc": m["auroc_macro"], "auroc_ci": [ci.get("lo"), ci.get("hi")],
              "auprc": m["auprc_macro"], "kappa": m["kappa"]}

    tasks = {}
    for task in dict.fromkeys(e.task for e in self.entries):
      a, b = brief(self.headline(source, task)), brief(self.headline(control, task))
      tasks[task] = {source: a, control: b,
                     "auroc_difference": None if a is None or b is None else
                     a["auroc"] - b["auroc"]}
    retrieval = {}
    for name in (source, control):
      retrieval[name] = {d: {"recall@10": r["recall@10"], "chance@10": r["chance@10"],
                             "x_chance": r["recall@10"] / r["chance@10"],
                             "n_candidates": r["n_candidates"]}
                         for d, r in self.retrieval.get(name, {}).items() if "skipped" not in r}
    ratios = [r["x_chance"] for r in retrieval[source].values()]
    return {"source": source, "control": control, "tasks": tasks, "retrieval": retrieval,
            "min_x_chance": min(ratios) if ratios else None}

  def to_dict(self) -> dict[str, Any]:
    return {"config": self.config.to_dict(), "entries": [e.summary() for e in self.entries],
            "skipped": self.skipped, "retrieval": self.retrieval,
            "embeddings": {name: {"path": es.path, "windows": len(es),
                                  "recordings": len(es.recordings),
                                  "subjects": int(len(np.unique(es.subject_id))),
                                  "metadata": es.metadata}
                           for name, es in self.embeddings.items()},
            "seconds": round(self.seconds, 1)}


def score(predictions: Predictions, config: SuiteConfig) -> dict[str, Any]:
  """Point metrics + bootstrap CIs of a predictions set (units from `predictions.unit`)."""
  return bootstrap_metrics(predictions.y_true, predictions.y_prob, predictions.classes,
                           predictions.unit, n_boot=config.n_boot, seed=config.boot_seed)


def run_suite(embeddings: Mapping[str, EmbeddingSet],
              predictions: Mapping[str, Predictions] | None = None,
              config: SuiteConfig = SuiteConfig(), progress: bool = True,
              log=print) -> SuiteResult:
  """Runs every requested task on every embedding set and scores external predictions.

  Args:
    embeddings: name -> loaded embedding set (e.g. {"loo": ..., "pairwise": ...}).
    predictions: name -> external predictions (their own task).
    config: what to run.
    progress: tqdm bars over outer folds.
    log: one-line progress messages (print, absl logging.info, or a no-op).
  """
  t0 = time.time()
  entries: list[Entry] = []
  skipped: list[dict[str, str]] = []
  retrieval: dict[str, dict] = {}
  unknown = set(config.tasks) - set(PROBE_TASKS) - {"retrieval"}
  if unknown:
    raise ValueError(f"unknown tasks {sorted(unknown)}; known: {[*PROBE_TASKS, 'retrieval']}")
  for name, es in embeddings.items():
    for task in (t for t in config.tasks if t in PROBE_TASKS):
      for feature in config.features:
        for fraction in config.label_fractions:
          res = probes_lib.probe_embeddings(es, task, feature, config.probe, fraction,
                                            progress=progress)
          if isinstance(res, probes_lib.Skipped):
            skipped.append({"source": name, "task": task, "feature": feature,
                            "label_fraction": fraction, "reason": res.reason})
            log(f"[{name}] {task}/{feature}@{fraction:g}: skipped: {res.reason}")
            break  # the reason does not depend on the fraction
          preds = probes_lib.to_predictions(res, es, name=name, source=es.path)
          entry = Entry(name, task, feature, fraction, preds, score(preds, config),
                        res.summary())
          entries.append(entry)
          m = entry.metrics
          log(f"[{name}] {task}/{feature}@{fraction:g}: AUROC {m['auroc_macro']:.3f} "
              f"kappa {m['kappa']:.3f} n={m['n']} ({res.seconds:.1f}s)"
              + ("" if res.converged else "  NOT CONVERGED"))
    if "retrieval" in config.tasks:
      retrieval[name] = retrieval_lib.cross_modal_retrieval(
          es, config.retrieval_candidates, config.retrieval_ks, seed=config.probe.seed)
      log(f"[{name}] retrieval: " + ", ".join(
          f"{k} R@1={v['recall@1']:.3f}" for k, v in retrieval[name].items() if "recall@1" in v))
  for name, preds in (predictions or {}).items():
    if preds.task in PROBE_TASKS and preds.task not in config.tasks:
      continue
    entry = Entry(name, preds.task, "external", float(preds.meta.get("label_fraction", 1.0)),
                  preds, score(preds, config))
    entries.append(entry)
    log(f"[{name}] {preds.task} (external): AUROC {entry.metrics['auroc_macro']:.3f}")
  return SuiteResult(config, entries, skipped, retrieval, dict(embeddings), time.time() - t0)


def parse_named(spec: str) -> dict[str, str]:
  """'a:DIR1,b:DIR2' -> {'a': 'DIR1', 'b': 'DIR2'}; an unnamed path is named after its file."""
  out: dict[str, str] = {}
  for item in (s.strip() for s in spec.split(",")):
    if not item:
      continue
    name, sep, path = item.partition(":")
    if not sep:
      p = pathlib.Path(item.rstrip("/"))
      name, path = (p.stem if p.suffix == ".npz" else p.name), item
    name, path = name.strip(), path.strip()
    if name in out:
      raise ValueError(f"name '{name}' given twice in '{spec}'")
    out[name] = path
  return out


def fractions(values: Sequence[str | float]) -> tuple[float, ...]:
  """Sorted unique label fractions in (0, 1]."""
  out = sorted({float(v) for v in values})
  bad = [v for v in out if not 0 < v <= 1]
  if bad:
    raise ValueError(f"label fractions must be in (0, 1]: {bad}")
  return tuple(out)
