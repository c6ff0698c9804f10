"""Training metrics on disk: `metrics.jsonl` (appended as the run goes), `metrics.csv` and
`curves.png` (rewritten on flush). Used by every trainer; resumed runs drop rows logged after the
restored step, so no step appears twice."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


class MetricsLog:
  """Appends metrics to ``metrics.jsonl``; rewrites ``metrics.csv`` and ``curves.png`` on flush."""

  def __init__(self, workdir: str, *, resume_step: int | None, enabled: bool = True):
    self.enabled = enabled
    self.jsonl = os.path.join(workdir, "metrics.jsonl")
    self.rows: list[dict] = []
    if os.path.exists(self.jsonl):
      with open(self.jsonl) as f:
        rows = [json.loads(line) for line in f if line.strip()]
      # Resumed runs drop what was logged after the restored checkpoint, so no step appears twice.
      self.rows = [r for r in rows if resume_step is not None and r["step"] <= resume_step]
      if enabled:
        self._rewrite_jsonl()

  def _rewrite_jsonl(self):
    with open(self.jsonl, "w") as f:
      for r in self.rows:
        f.write(json.dumps(r) + "\n")

  def write(self, step: int, split: str, metrics: Mapping[str, Any]):
    row = {"step": int(step), "split": split,
           **{k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}}
    self.rows.append(row)
    if self.enabled:
      with open(self.jsonl, "a") as f:
        f.write(json.dumps(row) + "\n")

  def flush(self):
    if not self.enabled or not self.rows:
      return
    keys = sorted({k for r in self.rows for k in r} - {"step", "split"})
    with open(self.jsonl[:-len(".jsonl")] + ".csv", "w", newline="") as f:
      w = csv.DictWriter(f, ["step", "split", *keys])
      w.writeheader()
      w.writerows(self.rows)
    plot_curves(self.rows, os.path.join(os.path.dirname(self.jsonl), "curves.png"))


def plot_curves(rows: list[dict], path: str):
  """Training/validation loss, retrieval accuracy and temperature against step."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for split, style in (("train", "-"), ("val", "o-")):
    rs = [r for r in rows if r["split"] == split]
    if not rs:
      continue
    steps = [r["step"] for r in rs]
    axes[0].plot(steps, [r["loss"] for r in rs], style, label=f"{split} loss")
    acc_keys = sorted(k for k in rs[-1] if k.startswith("acc/"))
    for k in acc_keys:
      axes[1].plot(steps, [r.get(k, np.nan) for r in rs], style, label=f"{split} {k[4:]}")
    if split == "val" and "top1" in rs[-1]:
      axes[1].plot(steps, [r.get("top1", np.nan) for r in rs], "ko-", label="val top-1 (mean)")
      axes[1].plot(steps, [r.get("top1_chance", np.nan) for r in rs], "k:", label="chance")
    if split == "train":
      axes[2].plot(steps, [r.get("temperature", np.nan) for r in rs], label="t (logit scale = e^t)")
  axes[0].set_title("contrastive loss")
  axes[1].set_title("top-1 retrieval in batch")
  axes[2].set_title("temperature")
  for ax in axes:
    ax.set_xlabel("step")
    if ax.lines:
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
