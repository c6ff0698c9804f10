"""The predictions file format (version 1): per-window class probabilities for one task.

Any model can be scored by the same metrics and report code by writing one of these: the linear
probes write them, and so can the end-to-end CNN baseline (written in JAX) and the spectral-feature
baseline. One `.npz` file (read with `allow_pickle=False`):

```
recording_id [n] str     epoch [n] int32      (together: the window id)
subject_id   [n] str     start [n] float64    (seconds from the recording's start)
y_true       [n] int64   (class index, 0..K-1; only labelled windows)
y_prob       [n, K] float32 (columns in `classes` order)
fold         [n] int32   (outer fold that predicted the window; -1 if not cross-validated)
unit         [n] str     (bootstrap resampling unit: the subject, or a time block)
meta         0-d str     JSON {"format": "sleepfm-jax-predictions", "version": 1,
                               "task": "staging"|"sdb"|..., "classes": [...], "name": ...,
                               ...free-form provenance}
```

`unit` and `fold` are optional on input (defaults: `unit = subject_id`, `fold = -1`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import numpy as np

FORMAT = "sleepfm-jax-predictions"
VERSION = 1


@dataclasses.dataclass
class Predictions:
  """Per-window probabilities for one task (see the module docstring for the fields)."""

  task: str
  classes: list[str]
  recording_id: np.ndarray
  epoch: np.ndarray
  subject_id: np.ndarray
  y_true: np.ndarray
  y_prob: np.ndarray
  start: np.ndarray | None = None
  fold: np.ndarray | None = None
  unit: np.ndarray | None = None
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    n = len(self.y_true)
    self.recording_id = np.asarray(self.recording_id).astype(str)
    self.subject_id = np.asarray(self.subject_id).astype(str)
    self.epoch = np.asarray(self.epoch, np.int32)
    self.y_true = np.asarray(self.y_true, np.int64)
    self.y_prob = np.asarray(self.y_prob, np.float32)
    self.start = (30.0 * self.epoch if self.start is None
                  else np.asarray(self.start, np.float64))
    self.fold = (np.full(n, -1, np.int32) if self.fold is None
                 else np.asarray(self.fold, np.int32))
    self.unit = self.subject_id.copy() if self.unit is None else np.asarray(self.unit).astype(str)
    for key in ("recording_id", "epoch", "subject_id", "start", "fold", "unit"):
      if getattr(self, key).shape != (n,):
        raise ValueError(
            f"predictions '{key}' has shape {getattr(self, key).shape}, expected {(n,)}")
    if self.y_prob.shape != (n, len(self.classes)):
      raise ValueError(f"y_prob has shape {self.y_prob.shape}, expected {(n, len(self.classes))}")
    if n and (self.y_true.min() < 0 or self.y_true.max() >= len(self.classes)):
      raise ValueError(f"y_true must be class indices in 0..{len(self.classes) - 1}")

  def __len__(self) -> int:
    return int(len(self.y_true))

  @property
  def name(self) -> str:
    return str(self.meta.get("name", ""))

  def save(self, path: str | os.PathLike) -> pathlib.Path:
    """Writes the `.npz` file (atomically) and returns its path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "task": self.task,
            "classes": list(self.classes), **self.meta}
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(
        tmp, recording_id=self.recording_id, epoch=self.epoch, subject_id=self.subject_id,
        start=self.start, y_true=self.y_true, y_prob=self.y_prob, fold=self.fold, unit=self.unit,
        meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)
    return path


def load_predictions(path: str | os.PathLike) -> Predictions:
  """Reads a predictions file, validating its format name, version and array shapes."""
  path = pathlib.Path(path)
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable predictions file: {e}") from e
  if "meta" not in arrays:
    raise ValueError(f"{path}: no 'meta' entry: not a predictions file")
  meta = json.loads(str(arrays.pop("meta")))
  if meta.get("format") != FORMAT:
    raise ValueError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
  if meta.get("version") != VERSION:
    raise ValueError(f"{path}: unsupported predictions version {meta.get('version')!r}")
  missing = [k for k in ("recording_id", "epoch", "subject_id", "y_true", "y_prob")
             if k not in arrays]
  if missing:
    raise ValueError(f"{path}: missing arrays {missing}")
  task, classes = meta.pop("task"), meta.pop("classes")
  meta.pop("format"), meta.pop("version")
  try:
    return Predictions(task=task, classes=list(classes), meta=meta,
                       **{k: v for k, v in arrays.items()
                          if k in Predictions.__dataclass_fields__})
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e
