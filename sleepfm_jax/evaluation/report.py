"""The evaluation report: `report.md`, `report.json` and PNG plots in one folder.

Plots (matplotlib `Figure` objects, no pyplot global state; readable at 100% zoom):
* `hypnogram_<source>.png`: scored vs predicted hypnogram of one held-out night, with the
  predicted stage probabilities underneath;
* `roc_<source>_<task>.png`: one-vs-rest ROC curve per class;
* `confusion_<source>_<task>.png`: row-normalised confusion matrix with counts;
* `tsne_<source>.png`: t-SNE of a stage-stratified subsample of embeddings, coloured by stage;
* `retrieval_<source>.png`: recall@k per retrieval direction against chance;
* `label_efficiency_<task>.png`: macro AUROC (95% CI) against the fraction of training labels;
* `training_curves.png`: every numeric series of a training metrics JSONL file;
* `plot_variant_curves`: validation curves of several variants and seeds (`evaluation/merge.py`).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from sklearn.metrics import roc_curve

from sleepfm_jax.data.annotations import STAGES
from sleepfm_jax.evaluation.embeddings import EmbeddingSet
from sleepfm_jax.evaluation.predictions import Predictions

if TYPE_CHECKING:
  from sleepfm_jax.evaluation.suite import SuiteResult

# Colour per stage (colour-blind-friendly) and the hypnogram's conventional top-to-bottom order.
STAGE_COLORS = {"W": "#E69F00", "N1": "#56B4E9", "N2": "#0072B2", "N3": "#1B2A49",
                "REM": "#D55E00"}
HYPNOGRAM_ORDER = ("W", "REM", "N1", "N2", "N3")
_DPI = 110


def slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _colors(classes: Sequence[str]) -> list[str]:
  palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442"]
  return [STAGE_COLORS.get(c, palette[i % len(palette)]) for i, c in enumerate(classes)]


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
  fig.savefig(path, dpi=_DPI, bbox_inches="tight")
  return path


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def pick_night(pred: Predictions) -> str:
  """The held-out recording to draw: the one with the most predicted windows (ties: first id)."""
  ids, counts = np.unique(pred.recording_id, return_counts=True)
  return str(ids[np.argmax(counts)])


def plot_hypnogram(pred: Predictions, path: pathlib.Path, recording: str | None = None,
                   title: str = "") -> pathlib.Path:
  """Scored vs predicted hypnogram (and stacked probabilities) of one recording."""
  rec = recording or pick_night(pred)
  sel = np.nonzero(pred.recording_id == rec)[0]
  sel = sel[np.argsort(pred.start[sel], kind="stable")]
  hours = pred.start[sel] / 3600.0
  classes = list(pred.classes)
  order = [c for c in HYPNOGRAM_ORDER if c in classes] + [c for c in classes
                                                          if c not in HYPNOGRAM_ORDER]
  level = np.array([order.index(c) for c in classes])
  y_true, y_prob = pred.y_true[sel], pred.y_prob[sel]
  y_pred = y_prob.argmax(1)
  # Break the line across unlabelled stretches (gaps longer than one epoch).
  step = np.median(np.diff(hours)) if len(hours) > 1 else 30 / 3600
  breaks = np.nonzero(np.diff(hours) > 1.5 * step)[0] + 1

  def _line(values):
    x = np.insert(hours, breaks, np.nan)
    y = np.insert(level[values].astype(float), breaks, np.nan)
    return np.append(x, x[-1] + step), np.append(y, y[-1])

  fig = Figure(figsize=(12, 6.2))
  axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1, 0.8]})
  acc = float(np.mean(y_true == y_pred)) if len(sel) else float("nan")
  for ax, values, label in ((axes[0], y_true, "Scored"), (axes[1], y_pred, "Predicted")):
    ax.plot(*_line(values), drawstyle="steps-post", color="#333333", lw=1.0)
    for c, name in enumerate(classes):
      hit = values == c
      ax.scatter(hours[hit], level[values[hit]], s=6, color=_colors(classes)[c], zorder=3)
    ax.set_yticks(range(len(order)), order)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_ylabel(label)
    ax.grid(axis="x", alpha=0.3)
  bottom = np.zeros(len(sel))
  for c, name in enumerate(classes):
    axes[2].fill_between(hours, bottom, bottom + y_prob[:, c], step="post", lw=0,
                         color=_colors(classes)[c], label=name)
    bottom = bottom + y_prob[:, c]
  axes[2].set_ylim(0, 1)
  axes[2].set_ylabel("P(stage)")
  axes[2].set_xlabel("Hours from recording start")
  axes[2].legend(ncol=len(classes), loc="upper center", bbox_to_anchor=(0.5, -0.45),
                 frameon=False)
  fig.suptitle(f"{title} — held-out night {rec} ({len(sel)} epochs, accuracy {acc:.2f})".strip(
      " —"), fontsize=12)
  return _save(fig, path)


def plot_roc(pred: Predictions, path: pathlib.Path, title: str = "") -> pathlib.Path:
  """One-vs-rest ROC curve per class, AUROC in the legend."""
  fig = Figure(figsize=(5.8, 5.2))
  ax = fig.subplots()
  classes = pred.classes
  pairs = [(1, classes[1])] if len(classes) == 2 else list(enumerate(classes))
  for c, name in pairs:
    pos = pred.y_true == c
    if pos.all() or not pos.any():
      continue
    fpr, tpr, _ = roc_curve(pos, pred.y_prob[:, c])
    auc = float(np.trapezoid(tpr, fpr))
    ax.plot(fpr, tpr, color=_colors(classes)[c], lw=1.8, label=f"{name} (AUROC {auc:.3f})")
  ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
  ax.set_xlabel("False positive rate")
  ax.set_ylabel("True positive rate")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.01)
  ax.set_aspect("equal")
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right", fontsize=9)
  ax.set_title(title, fontsize=11)
  return _save(fig, path)


def plot_confusion(confusion: Sequence[Sequence[float]], classes: Sequence[str],
                   path: pathlib.Path, title: str = "") -> pathlib.Path:
  """Row-normalised confusion matrix (colour and %) with raw counts."""
  cm = np.asarray(confusion, np.float64)
  rows = cm.sum(1, keepdims=True)
  norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
  k = len(classes)
  fig = Figure(figsize=(1.2 * k + 2.4, 1.1 * k + 1.8))
  ax = fig.subplots()
  im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
  for i in range(k):
    for j in range(k):
      ax.text(j, i, f"{100 * norm[i, j]:.0f}%\n({int(cm[i, j])})", ha="center", va="center",
              fontsize=9, color="white" if norm[i, j] > 0.55 else "black")
  ax.set_xticks(range(k), classes)
  ax.set_yticks(range(k), classes)
  ax.set_xlabel("Predicted")
  ax.set_ylabel("Scored")
  ax.set_title(title, fontsize=11)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of scored row")
  return _save(fig, path)


def plot_tsne(es: EmbeddingSet, path: pathlib.Path, feature: str = "concat",
              max_points: int = 2000, seed: int = 0, title: str = "") -> pathlib.Path | None:
  """t-SNE (after PCA to 50 dims) of up to `max_points` stage-labelled windows."""
  from sklearn.decomposition import PCA  # pylint: disable=import-outside-toplevel

  labelled = np.nonzero((es.stage >= 0) & es.feature_present(feature))[0]
  if len(labelled) < 10:
    return None
  rng = np.random.default_rng(seed)
  # Stratified subsample: each stage keeps its share, at least 1 window (shows rare N1 too).
  take = []
  share = min(1.0, max_points / len(labelled))
  for c in np.unique(es.stage[labelled]):
    members = labelled[es.stage[labelled] == c]
    take.append(rng.choice(members, max(1, round(share * len(members))), replace=False))
  idx = np.sort(np.concatenate(take))
  x = es.features(feature)[idx].astype(np.float64)
  x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
  x = PCA(n_components=min(50, *x.shape), random_state=seed).fit_transform(x)
  perplexity = float(min(30.0, max(2.0, (len(idx) - 1) / 3.0)))
  xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
            max_iter=500).fit_transform(x)
  fig = Figure(figsize=(6.6, 5.8))
  ax = fig.subplots()
  for c, name in enumerate(STAGES):
    hit = es.stage[idx] == c
    if hit.any():
      ax.scatter(xy[hit, 0], xy[hit, 1], s=7, alpha=0.75, color=STAGE_COLORS[name],
                 label=f"{name} ({int(hit.sum())})")
  ax.set_xticks([])
  ax.set_yticks([])
  ax.legend(markerscale=2.5, fontsize=9, loc="best")
  ax.set_title(title or f"t-SNE of '{feature}' embeddings ({len(idx)} windows)", fontsize=11)
  return _save(fig, path)


def plot_retrieval(results: dict[str, dict], path: pathlib.Path, title: str = ""
                   ) -> pathlib.Path | None:
  """Grouped bars of recall@k per direction, with the chance level of each k."""
  rows = [(d, r) for d, r in results.items() if "skipped" not in r]
  if not rows:
    return None
  ks = sorted(int(k.split("@")[1]) for k in rows[0][1] if k.startswith("recall@"))
  fig = Figure(figsize=(max(6.0, 0.9 * len(rows) + 2.5), 4.4))
  ax = fig.subplots()
  width = 0.8 / len(ks)
  x = np.arange(len(rows))
  for j, k in enumerate(ks):
    vals = [r[f"recall@{k}"] for _, r in rows]
    ax.bar(x + (j - (len(ks) - 1) / 2) * width, vals, width, label=f"recall@{k}",
           color=["#0072B2", "#56B4E9", "#A6D8F5", "#DDEEF8"][j % 4])
    chance = rows[0][1][f"chance@{k}"]
    ax.axhline(chance, ls=":", lw=1, color="grey")
  ax.set_xticks(x, [d for d, _ in rows], rotation=30, ha="right")
  top = max(r[f"recall@{k}"] for _, r in rows for k in ks)
  ax.set_ylim(0, min(1.0, max(0.05, 1.2 * top)))
  ax.set_ylabel("Recall")
  ax.legend(fontsize=9, ncol=len(ks))
  ax.grid(axis="y", alpha=0.3)
  n_cand = rows[0][1]["n_candidates"]
  ax.set_title(title or f"Cross-modal retrieval among {n_cand} candidates "
               "(dotted: chance)", fontsize=11)
  return _save(fig, path)


def plot_label_efficiency(entries: Sequence[dict[str, Any]], path: pathlib.Path,
                          metric: str = "auroc_macro", title: str = "") -> pathlib.Path | None:
  """Metric (with CI) against the label fraction, one line per source/feature."""
  series: dict[str, list[tuple[float, float, float, float]]] = {}
  for e in entries:
    if e["feature"] == "external":
      continue
    m = e["metrics"]
    ci = m.get("ci", {}).get(metric, {"lo": m[metric], "hi": m[metric]})
    series.setdefault(f"{e['source']}/{e['feature']}", []).append(
        (e["label_fraction"], m[metric], ci["lo"], ci["hi"]))
  series = {k: sorted(v) for k, v in series.items() if len(v) >= 2}
  if not series:
    return None
  fig = Figure(figsize=(6.8, 4.6))
  ax = fig.subplots()
  for i, (name, pts) in enumerate(sorted(series.items())):
    f, v, lo, hi = map(np.asarray, zip(*pts))
    ax.errorbar(100 * f, v, yerr=[v - lo, hi - v], marker="o", capsize=3, lw=1.5,
                label=name, color=f"C{i % 10}")
  ax.set_xscale("log")
  ticks = sorted({100 * p[0] for pts in series.values() for p in pts})
  ax.set_xticks(ticks, [f"{t:g}%" for t in ticks])
  ax.minorticks_off()
  ax.set_xlabel("Training labels used")
  ax.set_ylabel(metric.replace("_", " ").replace("auroc", "AUROC"))
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8, loc="lower right")
  ax.set_title(title, fontsize=11)
  return _save(fig, path)


def read_metrics_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Reads a JSON-lines metrics log; blank or non-JSON lines are skipped."""
  rows = []
  for line in pathlib.Path(path).read_text().splitlines():
    line = line.strip()
    if not line:
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(row, dict):
      rows.append(row)
  return rows


def plot_training_curves(rows: Sequence[dict[str, Any]], path: pathlib.Path,
                         max_panels: int = 6) -> pathlib.Path | None:
  """All numeric series against `step` (or line number); every '*loss*' series in one panel."""
  xkey = "step" if any("step" in r for r in rows) else None
  keys: list[str] = []
  for r in rows:
    for k, v in r.items():
      if k not in keys and k not in ("step", "epoch", "time") and isinstance(v, int | float) \
          and not isinstance(v, bool):
        keys.append(k)
  if not keys:
    return None
  losses = [k for k in keys if "loss" in k.lower()]
  panels = ([("loss", losses)] if losses else []) + [(k, [k]) for k in keys if k not in losses]
  panels = panels[:max_panels]
  cols = min(3, len(panels))
  nrows = math.ceil(len(panels) / cols)
  fig = Figure(figsize=(4.6 * cols, 3.4 * nrows))
  axes = np.atleast_1d(fig.subplots(nrows, cols)).ravel()
  for ax, (name, series) in zip(axes, panels):
    for k in series:
      pts = [(r.get(xkey, i) if xkey else i, r[k]) for i, r in enumerate(rows)
             if isinstance(r.get(k), int | float)]
      if pts:
        x, y = zip(*pts)
        ax.plot(x, y, marker="." if len(pts) < 50 else None, lw=1.3, label=k)
    ax.set_title(name, fontsize=10)
    ax.set_xlabel(xkey or "record")
    ax.grid(alpha=0.3)
    if len(series) > 1:
      ax.legend(fontsize=8)
  for ax in axes[len(panels):]:
    ax.set_visible(False)
  fig.suptitle("Training curves", fontsize=12)
  fig.tight_layout()
  return _save(fig, path)


def plot_variant_curves(rows: Sequence[dict[str, Any]], path: pathlib.Path,
                        keys: Sequence[str] = ("loss", "top1"), title: str = "") -> pathlib.Path:
  """One panel per key against step; one line per (source, seed), one colour per source."""
  sources = list(dict.fromkeys(r["source"] for r in rows))
  fig = Figure(figsize=(4.8 * len(keys), 3.6))
  axes = np.atleast_1d(fig.subplots(1, len(keys)))
  for ax, key in zip(axes, keys):
    for i, source in enumerate(sources):
      for j, seed in enumerate(sorted({r["seed"] for r in rows if r["source"] == source})):
        pts = sorted((r["step"], r[key]) for r in rows
                     if r["source"] == source and r["seed"] == seed and key in r)
        if pts:
          x, y = zip(*pts)
          ax.plot(x, y, color=f"C{i}", lw=1.3, alpha=0.85, marker=".",
                  label=source if j == 0 else None)
    ax.set_title(f"validation {key}", fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(title or "Validation curves (one line per seed)", fontsize=11)
  fig.tight_layout()
  return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# Markdown / JSON
# ---------------------------------------------------------------------------------------------


def _fmt(m: dict[str, Any], key: str) -> str:
  v = m.get(key, float("nan"))
  if v is None or not np.isfinite(v):
    return "–"
  ci = m.get("ci", {}).get(key)
  if ci and ci["n_valid"]:
    return f"{v:.3f} ({ci['lo']:.3f}–{ci['hi']:.3f})"
  return f"{v:.3f}"


def _task_section(task: str, entries: list[dict[str, Any]], plots: dict[str, str]) -> list[str]:
  title = {"staging": "Sleep staging (5 classes)", "sdb": "Sleep-disordered breathing (binary)"}
  lines = [f"## {title.get(task, task)}", ""]
  lines += ["| source | feature | labels | AUROC macro | AUPRC macro | accuracy | macro F1 | "
            "Cohen's κ | windows | subjects | converged |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
  for e in entries:
    m = e["metrics"]
    conv = "–" if e["probe"] is None else ("yes" if e["probe"]["converged"] else "**NO**")
    lines.append(
        f"| {e['source']} | {e['feature']} | {100 * e['label_fraction']:g}% | "
        f"{_fmt(m, 'auroc_macro')} | {_fmt(m, 'auprc_macro')} | {_fmt(m, 'accuracy')} | "
        f"{_fmt(m, 'f1_macro')} | {_fmt(m, 'kappa')} | {e['n_windows']} | {e['n_subjects']} | "
        f"{conv} |")
  classes = entries[0]["classes"]
  full = [e for e in entries if e["label_fraction"] == 1.0]
  if full:
    lines += ["", "Per-class AUROC / AUPRC (100% labels):", "",
              "| source | feature | " + " | ".join(classes) + " |",
              "|---|---|" + "---|" * len(classes)]
    for e in full:
      m = e["metrics"]
      cells = [f"{_num(m.get(f'auroc[{c}]'))} / {_num(m.get(f'auprc[{c}]'))}" for c in classes]
      lines.append(f"| {e['source']} | {e['feature']} | " + " | ".join(cells) + " |")
  lines.append("")
  for name, rel in plots.items():
    lines += [f"![{name}]({rel})", ""]
  return lines


def _num(v) -> str:
  return "–" if v is None or not np.isfinite(v) else f"{v:.3f}"


def write_report(out_dir: str | os.PathLike, result: SuiteResult,
                 metrics_jsonl: str | None = None, tsne_points: int = 2000,
                 title: str = "SleepFM-JAX evaluation",
                 compare: tuple[str, str] | None = None) -> dict[str, pathlib.Path]:
  """Writes report.md, report.json and plots/ for a `suite.SuiteResult`; returns their paths.

  `compare=(source, control)` puts `result.compare(source, control)` at the top of both files
  (`headline` in the JSON): e.g. the pretrained encoders against the same encoders untrained.
  """
  out = pathlib.Path(out_dir)
  plot_dir = out / "plots"
  plot_dir.mkdir(parents=True, exist_ok=True)
  summary = result.to_dict()
  if compare is not None:
    summary["headline"] = result.compare(*compare)
  entries = summary["entries"]
  plots: dict[str, dict[str, str]] = {}   # section -> {caption: relative path}

  def _add(section: str, caption: str, path: pathlib.Path | None):
    if path is not None:
      plots.setdefault(section, {})[caption] = str(path.relative_to(out))

  sources = list(dict.fromkeys(e.source for e in result.entries))
  tasks = list(dict.fromkeys(e.task for e in result.entries))
  for task in tasks:
    for source in sources:
      head = result.headline(source, task)
      if head is None:
        continue
      tag = slug(f"{source}_{task}")
      label = f"{source} · {head.feature}" if head.feature != "external" else source
      _add(task, f"ROC {label}", plot_roc(head.predictions, plot_dir / f"roc_{tag}.png",
                                          f"{label}: one-vs-rest ROC ({task})"))
      _add(task, f"Confusion {label}", plot_confusion(
          head.metrics["confusion"], head.predictions.classes, plot_dir / f"confusion_{tag}.png",
          f"{label}: confusion ({task})"))
      if task == "staging":
        _add(task, f"Hypnogram {label}", plot_hypnogram(
            head.predictions, plot_dir / f"hypnogram_{slug(source)}.png", title=label))
    _add(task, "Label efficiency", plot_label_efficiency(
        [e for e in entries if e["task"] == task], plot_dir / f"label_efficiency_{task}.png",
        title=f"Label efficiency ({task})"))
  for source, es in result.embeddings.items():
    feature = "concat" if "concat" in result.config.features else result.config.features[0]
    _add("embeddings", f"t-SNE {source}", plot_tsne(
        es, plot_dir / f"tsne_{slug(source)}.png", feature=feature, max_points=tsne_points,
        title=f"{source}: t-SNE of '{feature}' embeddings, coloured by scored stage"))
  for source, res in result.retrieval.items():
    _add("retrieval", f"Retrieval {source}", plot_retrieval(
        res, plot_dir / f"retrieval_{slug(source)}.png"))
  if metrics_jsonl:
    _add("training", "Training curves", plot_training_curves(
        read_metrics_jsonl(metrics_jsonl), plot_dir / "training_curves.png"))

  cfg = result.config
  lines = [f"# {title}", "",
           f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} in "
           f"{summary['seconds']:.0f} s.", ""]
  if "headline" in summary:
    lines += _headline_section(summary["headline"])
  if summary["embeddings"]:
    lines += ["| embedding set | path | windows | recordings | subjects | checkpoint | step |",
              "|---|---|---|---|---|---|---|"]
    for name, info in summary["embeddings"].items():
      meta = info["metadata"]
      lines.append(f"| {name} | `{info['path']}` | {info['windows']} | {info['recordings']} | "
                   f"{info['subjects']} | {meta.get('checkpoint', '–')} | "
                   f"{meta.get('step', '–')} |")
    lines.append("")
  p = cfg.probe
  lines += ["**Protocol.** Logistic-regression probes (StandardScaler → L2 LogisticRegression, "
            f"lbfgs, class_weight={p.class_weight}, max_iter={p.max_iter}, tol={p.tol:g}; scaler "
            + ("fit on every window of the outer training fold, labels unused" if p.scaler == "fold"
               else "fit on the labelled training windows") + "); "
            f"{p.outer_folds} outer folds grouped by subject (time-blocked with a {p.gap}-window "
            f"gap for a single subject); C ∈ {{{', '.join(f'{c:g}' for c in p.c_grid)}}} chosen "
            f"by {p.inner_folds}-fold inner CV on macro AUROC. 95% CIs: percentile bootstrap "
            f"over subjects (time blocks of {p.block} windows for a single subject), "
            f"{cfg.n_boot} replicates, seed {cfg.boot_seed}. Values are point estimates with "
            "(95% CI). See docs/evaluation.md.", ""]
  for task in tasks:
    lines += _task_section(task, [e for e in entries if e["task"] == task], plots.get(task, {}))
  if result.retrieval:
    lines += ["## Cross-modal retrieval", "",
              "| source | direction | queries | candidates | " +
              " | ".join(f"R@{k}" for k in cfg.retrieval_ks) + " | chance@1 | median rank |",
              "|---|---|---|---|" + "---|" * len(cfg.retrieval_ks) + "---|---|"]
    for source, res in result.retrieval.items():
      for direction, r in res.items():
        if "skipped" in r:
          lines.append(f"| {source} | {direction} | skipped: {r['skipped']} |" + " |" * (
              3 + len(cfg.retrieval_ks)))
          continue
        lines.append(f"| {source} | {direction} | {r['n_queries']} | {r['n_candidates']} | " +
                     " | ".join(f"{r[f'recall@{k}']:.3f}" for k in cfg.retrieval_ks) +
                     f" | {r['chance@1']:.4f} | {r['median_rank']:g} |")
    lines.append("")
    for name, rel in plots.get("retrieval", {}).items():
      lines += [f"![{name}]({rel})", ""]
  for section, heading in (("embeddings", "Embeddings"), ("training", "Training")):
    if section in plots:
      lines += [f"## {heading}", ""]
      for name, rel in plots[section].items():
        lines += [f"![{name}]({rel})", ""]
  warnings = [(e["source"], e["task"], e["feature"], e["label_fraction"], w)
              for e in entries if e["probe"] for w in e["probe"]["warnings"]]
  min_units: dict[tuple[str, str], int] = {}
  for e in entries:
    n, key = e["metrics"]["bootstrap"]["n_units"], (e["source"], e["task"])
    min_units[key] = min(n, min_units.get(key, n))
  warnings += [(src, task, "all", 1.0, f"as few as {n} resampling units: its bootstrap CIs are "
                "unreliable (fewer than 10)")
               for (src, task), n in min_units.items() if cfg.n_boot and n < 10]
  if warnings:
    lines += ["## Warnings", ""] + [f"- {s} {t}/{f}@{100 * fr:g}%: {w}" if f != "all" else
                                    f"- {s} {t}: {w}" for s, t, f, fr, w in warnings]
    lines.append("")
  if summary["skipped"]:
    lines += ["## Skipped", ""] + [f"- {s['source']} {s['task']}/{s['feature']}: {s['reason']}"
                                   for s in summary["skipped"]]
    lines.append("")
  summary["plots"] = {sec: dict(v) for sec, v in plots.items()}
  md_path, json_path = out / "report.md", out / "report.json"
  md_path.write_text("\n".join(lines))
  json_path.write_text(json.dumps(_jsonable(summary), indent=1, allow_nan=False))
  return {"markdown": md_path, "json": json_path,
          **{f"plot:{rel}": out / rel for sec in plots.values() for rel in sec.values()}}


def _headline_section(h: dict[str, Any]) -> list[str]:
  """Pretrained vs control per task, and retrieval against chance."""
  src, ctl = h["source"], h["control"]
  lines = ["## Headline", "", f"`{src}` against the control `{ctl}` (the same encoders with "
           "random weights), full labels:", "",
           f"| task | {src} macro AUROC (95 % CI) | {ctl} | difference | {src} AUPRC | {ctl} "
           "AUPRC |", "|---|---|---|---|---|---|"]
  for task, t in h["tasks"].items():
    a, b = t[src], t[ctl]
    if a is None or b is None:
      continue
    lo, hi = a["auroc_ci"]
    ci = f" ({lo:.3f}–{hi:.3f})" if lo is not None else ""
    lines.append(f"| {task} | {a['auroc']:.3f}{ci} | {b['auroc']:.3f} | "
                 f"{t['auroc_difference']:+.3f} | {a['auprc']:.3f} | {b['auprc']:.3f} |")
  lines += ["", f"Cross-modal retrieval, recall@10 against chance (`{src}`; `{ctl}` in brackets):",
            "", "| direction | candidates | recall@10 | chance | × chance |", "|---|---|---|---|---|"]
  for d, r in h["retrieval"][src].items():
    c = h["retrieval"].get(ctl, {}).get(d)
    extra = f" ({c['recall@10']:.3f})" if c else ""
    lines.append(f"| {d} | {r['n_candidates']} | {r['recall@10']:.3f}{extra} | "
                 f"{r['chance@10']:.4f} | {r['x_chance']:.1f}× |")
  return lines + [""]


def _jsonable(x):
  """NaN/inf -> None and numpy scalars -> Python, so the JSON is strict."""
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  return x
