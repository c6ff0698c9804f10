"""The embedding export format (version 2): one writer, one reader (which also reads version 1).

An export directory holds one `.npz` file per recording plus an `index.json`:

```
emb/
  index.json     {"format": "sleepfm-jax-embeddings", "version": 2, "embedding_dim": 512,
                  "modalities": ["bas", "ecg", "resp"],
                  "recordings": [{"recording_id", "subject_id", "file", "num_windows"}, ...],
                  "checkpoint": ..., "step": ..., ...extra metadata}
  <recording>.npz
     emb_bas, emb_ecg, emb_resp   [n, D] float32, L2-normalised (unit rows, as the original SleepFM
                                  saves them); rows of absent modalities are all zero
     norm_bas, norm_ecg, norm_resp [n] float32: the encoder output's L2 norm (emb * norm is the
                                  unnormalised embedding); 0 where absent
     emb_combined                 [n, D] float32; mean of the L2-normalised present modalities
     present_bas|ecg|resp         [n] bool
     stage [n] int8 (0..4, -1)    sdb [n] int8 (1, 0, -1)
     epoch [n] int32              start [n] float64 (seconds from the recording's start)
```

Version 1 stored the unnormalised encoder outputs in `emb_<modality>` and had no
`norm_<modality>`; the reader normalises them on load, so an `EmbeddingSet` means the same from
either version. Files are read with `allow_pickle=False`. The exporter (`sleepfm_jax.export`)
writes through `EmbeddingWriter`, so this module is the only definition of the format. It is
numpy-only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sleepfm_jax.data.annotations import STAGES
from sleepfm_jax.data.channels import MODALITIES  # also the order of the "concat" features
from sleepfm_jax.data.errors import PSGError

FORMAT = "sleepfm-jax-embeddings"
VERSION = 2
READABLE_VERSIONS = (1, 2)

_PER_WINDOW = {"stage": np.int8, "sdb": np.int8, "epoch": np.int32, "start": np.float64}


class EmbeddingFormatError(PSGError):
  """A malformed embedding export: `str(e)` is `"{path}: {message}"` (the project's input error)."""

  def __reduce__(self):
    return (EmbeddingFormatError, (self.path, self.message))


def unit_rows(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(rows / their L2 norms, the norms) in float32; all-zero rows stay zero."""
  e = np.asarray(e, np.float64)
  norm = np.linalg.norm(e, axis=1, keepdims=True)
  unit = np.divide(e, norm, out=np.zeros_like(e), where=norm > 0)
  return unit.astype(np.float32), norm[:, 0].astype(np.float32)


def combine(emb: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray]) -> np.ndarray:
  """Mean of the L2-normalised embeddings of the modalities present in each window.

  Windows with no modality present get a zero row. This is the `emb_combined` of the format.
  """
  n, dim = next(iter(emb.values())).shape
  total = np.zeros((n, dim), np.float64)
  count = np.zeros((n, 1), np.float64)
  for mod in MODALITIES:
    e = np.asarray(emb[mod], np.float64)
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    unit = np.divide(e, norm, out=np.zeros_like(e), where=norm > 0)
    p = np.asarray(present[mod], bool)[:, None]
    total += np.where(p, unit, 0.0)
    count += p
  return np.divide(total, count, out=np.zeros_like(total), where=count > 0).astype(np.float32)


def _safe_name(recording_id: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", recording_id).strip("._") or "recording"


class EmbeddingWriter:
  """Writes an export directory one recording at a time (streaming-friendly).

  Usage: `w = EmbeddingWriter(out, checkpoint=..., step=...)`, `w.write(...)` per recording, then
  `w.finalize()` writes `index.json` (a directory without it is an incomplete export).
  """

  def __init__(self, out_dir: str | os.PathLike, *, embedding_dim: int | None = None,
               **metadata: Any):
    self.out_dir = pathlib.Path(out_dir)
    self.out_dir.mkdir(parents=True, exist_ok=True)
    self.embedding_dim = embedding_dim
    self.metadata = metadata
    self._recordings: list[dict[str, Any]] = []
    self._files: set[str] = set()
    self._ids: set[str] = set()

  def write(self, recording_id: str, subject_id: str, *, emb: Mapping[str, np.ndarray],
            present: Mapping[str, np.ndarray] | None = None, stage: Sequence[int],
            sdb: Sequence[int] | None = None, epoch: Sequence[int] | None = None,
            start: Sequence[float] | None = None) -> pathlib.Path:
    """Writes one recording's file and returns its path.

    Args:
      recording_id: unique id of the recording.
      subject_id: id of the subject (splits and bootstrap group by it).
      emb: modality -> [n, D] embeddings (any scale: written L2-normalised, with their norms); a
        modality missing from the mapping is absent throughout.
      present: modality -> [n] bool; defaults to "present" for every modality given in `emb`.
        Rows of absent modalities are written as zeros whatever `emb` holds there.
      stage: [n] stage codes 0..4 or -1.
      sdb: [n] SDB codes 1/0/-1; default all -1 (respiratory events not scored).
      epoch: [n] epoch index in the recording; default 0..n-1.
      start: [n] window start in seconds; default 30 * epoch.
    """
    if recording_id in self._ids:
      raise ValueError(f"{self.out_dir}: recording '{recording_id}' written twice")
    stage = np.asarray(stage, np.int8)
    n = stage.shape[0]
    dims = {np.asarray(e).shape[1] for e in emb.values()}
    if self.embedding_dim is None:
      if len(dims) != 1:
        raise ValueError(f"{self.out_dir}: '{recording_id}': embedding widths differ: {dims}")
      self.embedding_dim = dims.pop()
    dim = self.embedding_dim
    arrays: dict[str, np.ndarray] = {}
    full_emb, full_present = {}, {}
    for mod in MODALITIES:
      if mod in emb:
        e = np.asarray(emb[mod], np.float32)
        if e.shape != (n, dim):
          raise ValueError(f"{self.out_dir}: '{recording_id}': emb_{mod} has shape {e.shape}, "
                           f"expected {(n, dim)}")
        p = (np.ones(n, bool) if present is None or mod not in present
             else np.asarray(present[mod], bool))
      else:
        e = np.zeros((n, dim), np.float32)
        p = np.zeros(n, bool)
      if p.shape != (n,):
        raise ValueError(f"{self.out_dir}: '{recording_id}': present_{mod} has shape {p.shape}")
      full_emb[mod] = np.where(p[:, None], e, 0.0).astype(np.float32)
      full_present[mod] = p
      arrays[f"emb_{mod}"], arrays[f"norm_{mod}"] = unit_rows(full_emb[mod])
      arrays[f"present_{mod}"] = p
    arrays["emb_combined"] = combine(full_emb, full_present)
    epoch = np.arange(n, dtype=np.int32) if epoch is None else np.asarray(epoch, np.int32)
    values = {"stage": stage, "sdb": np.full(n, -1, np.int8) if sdb is None else sdb,
              "epoch": epoch, "start": 30.0 * epoch if start is None else start}
    for key, dtype in _PER_WINDOW.items():
      arr = np.asarray(values[key], dtype)
      if arr.shape != (n,):
        raise ValueError(f"{self.out_dir}: '{recording_id}': {key} has shape {arr.shape}, "
                         f"expected {(n,)}")
      arrays[key] = arr
    name = _safe_name(recording_id)
    base, k = name, 1
    while name in self._files:
      k += 1
      name = f"{base}-{k}"
    self._files.add(name)
    self._ids.add(recording_id)
    path = self.out_dir / f"{name}.npz"
    tmp = self.out_dir / f".{name}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    self._recordings.append({"recording_id": recording_id, "subject_id": str(subject_id),
                             "file": path.name, "num_windows": int(n)})
    return path

  @property
  def recordings(self) -> list[dict[str, Any]]:
    """Index entries of the recordings written so far."""
    return list(self._recordings)

  def finalize(self) -> pathlib.Path:
    """Writes `index.json` and returns its path."""
    return write_index(self.out_dir, self._recordings, self.embedding_dim, **self.metadata)


def write_index(out_dir: str | os.PathLike, recordings: Sequence[Mapping[str, Any]],
                embedding_dim: int | None, **metadata: Any) -> pathlib.Path:
  """Writes `index.json` for recording files already in `out_dir` (atomically); returns its path.

  `EmbeddingWriter.finalize` calls it; a multi-process export calls it once, on one process, with
  the entries of every process's writer (`EmbeddingWriter.recordings`).
  """
  out_dir = pathlib.Path(out_dir)
  index = {"format": FORMAT, "version": VERSION, "embedding_dim": embedding_dim,
           "modalities": list(MODALITIES), "stages": list(STAGES),
           "recordings": [dict(r) for r in recordings]}
  ids = [r["recording_id"] for r in index["recordings"]]
  if len(set(ids)) != len(ids):
    raise ValueError(f"{out_dir}: a recording is listed twice in the index")
  for key, value in metadata.items():
    if key in index:
      raise ValueError(f"metadata key '{key}' clashes with a format field")
    index[key] = value
  path = out_dir / "index.json"
  tmp = out_dir / ".index.json.tmp"
  tmp.write_text(json.dumps(index, indent=1))
  os.replace(tmp, path)
  return path


def save_embeddings(out_dir: str | os.PathLike, recordings: Iterable[Mapping[str, Any]],
                    **metadata: Any) -> pathlib.Path:
  """Writes a whole export at once; each item holds `EmbeddingWriter.write`'s keyword arguments.

  Returns the path of `index.json`.
  """
  writer = EmbeddingWriter(out_dir, **metadata)
  for rec in recordings:
    writer.write(**rec)
  return writer.finalize()


@dataclasses.dataclass
class EmbeddingSet:
  """All windows of an export, concatenated over recordings in index order.

  Per window: `emb[mod]` [N, D] (L2-normalised, zero where absent), `present[mod]` [N],
  `combined` [N, D], `stage`, `sdb`, `epoch`, `start`, `recording_id` and `subject_id` (string
  arrays), and `norm[mod]` [N] (the encoder output's norm; empty for sets built by hand). Windows
  keep their within-recording order, so contiguous index ranges are contiguous in time
  (time-blocked splits rely on it).
  """

  emb: dict[str, np.ndarray]
  present: dict[str, np.ndarray]
  combined: np.ndarray
  stage: np.ndarray
  sdb: np.ndarray
  epoch: np.ndarray
  start: np.ndarray
  recording_id: np.ndarray
  subject_id: np.ndarray
  metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
  path: str = ""
  norm: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return int(self.stage.shape[0])

  @property
  def embedding_dim(self) -> int:
    return int(self.combined.shape[1])

  def features(self, kind: str) -> np.ndarray:
    """Feature matrix for a probe.

    Args:
      kind: a modality (`"bas"`, `"ecg"`, `"resp"`), `"combined"` (mean of the normalised present
        modalities), `"concat"` (the three L2-normalised embeddings side by side, 3 D wide, zeros
        where absent: the original SleepFM's "combined" probe feature, whose order resp|bas|ecg
        differs from ours, bas|ecg|resp, by a column permutation only), or modalities joined by `+`
        (e.g. `"bas+resp"`), concatenated in that order.
    """
    if kind == "combined":
      return self.combined
    mods = self._modalities(kind)
    if len(mods) == 1:
      return self.emb[mods[0]]
    return np.concatenate([self.emb[m] for m in mods], axis=1)

  @staticmethod
  def _modalities(kind: str) -> tuple[str, ...]:
    """The modalities a feature kind reads (all of them for `concat` and `combined`)."""
    mods = MODALITIES if kind in ("concat", "combined") else tuple(kind.split("+"))
    unknown = [m for m in mods if m not in MODALITIES]
    if unknown:
      raise ValueError(f"unknown feature kind '{kind}' (modalities {MODALITIES}, 'concat', "
                       "'combined')")
    return mods

  def feature_missing(self, kind: str) -> np.ndarray | None:
    """[N, width] bool, True in the block of a modality absent from a window, for feature kinds
    that join several modalities (`concat`, `a+b`); None for one modality or `combined`, whose
    values are all measured (probes leave out windows without the modality)."""
    mods = self._modalities(kind)
    if kind == "combined" or len(mods) == 1:
      return None
    return np.concatenate([np.repeat(~self.present[m][:, None], self.emb[m].shape[1], axis=1)
                           for m in mods], axis=1)

  def feature_present(self, kind: str) -> np.ndarray:
    """[N] bool: the window has at least one of the modalities that `kind` uses."""
    return np.any([self.present[m] for m in self._modalities(kind)], axis=0)

  def subset(self, index: np.ndarray) -> EmbeddingSet:
    """The windows selected by an integer index or boolean mask, in that order."""
    take = lambda a: a[index]
    return EmbeddingSet(
        emb={m: take(e) for m, e in self.emb.items()},
        present={m: take(p) for m, p in self.present.items()},
        combined=take(self.combined), stage=take(self.stage), sdb=take(self.sdb),
        epoch=take(self.epoch), start=take(self.start), recording_id=take(self.recording_id),
        subject_id=take(self.subject_id), metadata=self.metadata, path=self.path,
        norm={m: take(v) for m, v in self.norm.items()})

  @property
  def recordings(self) -> list[str]:
    """Recording ids in order of first appearance."""
    _, first = np.unique(self.recording_id, return_index=True)
    return [str(r) for r in self.recording_id[np.sort(first)]]


def _check_array(path, npz, key, shape, kind) -> np.ndarray:
  if key not in npz.files:
    raise EmbeddingFormatError(path, f"missing array '{key}'")
  arr = npz[key]
  if arr.shape != shape:
    raise EmbeddingFormatError(path, f"'{key}' has shape {arr.shape}, expected {shape}")
  if arr.dtype.kind not in kind:
    raise EmbeddingFormatError(path, f"'{key}' has dtype {arr.dtype}")
  return arr


def load_embeddings(path: str | os.PathLike, recordings: Sequence[str] | None = None
                    ) -> EmbeddingSet:
  """Reads an export directory (format v2, or v1 normalised on load) into an `EmbeddingSet`.

  Args:
    path: the export directory (or its `index.json`).
    recordings: optional recording ids to load (default: all, in index order).

  Raises:
    EmbeddingFormatError: wrong format name or version, missing or mis-shaped arrays, a count that
      disagrees with the index. The message names the file.
  """
  root = pathlib.Path(path)
  if root.name == "index.json":
    root = root.parent
  index_path = root / "index.json"
  if not index_path.exists():
    raise EmbeddingFormatError(index_path, "no index.json: not an embedding export (or incomplete)")
  try:
    index = json.loads(index_path.read_text())
  except json.JSONDecodeError as e:
    raise EmbeddingFormatError(index_path, f"not valid JSON: {e}") from e
  if index.get("format") != FORMAT:
    raise EmbeddingFormatError(index_path,
                               f"format is {index.get('format')!r}, expected {FORMAT!r}")
  version = index.get("version")
  if version not in READABLE_VERSIONS:
    raise EmbeddingFormatError(index_path, f"unsupported version {version!r} "
                               f"(this reader knows versions {READABLE_VERSIONS})")
  entries = index.get("recordings", [])
  if recordings is not None:
    by_id = {e["recording_id"]: e for e in entries}
    missing = [r for r in recordings if r not in by_id]
    if missing:
      raise EmbeddingFormatError(index_path, f"recordings not in the export: {missing}")
    entries = [by_id[r] for r in recordings]
  if not entries:
    raise EmbeddingFormatError(index_path, "the export holds no recordings")
  dim = index.get("embedding_dim")
  parts: dict[str, list[np.ndarray]] = {}
  rec_ids, subj_ids = [], []
  for entry in entries:
    file = root / entry["file"]
    if not file.exists():
      raise EmbeddingFormatError(file, f"listed in {index_path} but missing")
    with np.load(file, allow_pickle=False) as npz:
      n = int(entry["num_windows"])
      if dim is None:
        dim = npz["emb_combined"].shape[1]
      arrays = {}
      for mod in MODALITIES:
        arrays[f"emb_{mod}"] = _check_array(file, npz, f"emb_{mod}", (n, dim), "f")
        arrays[f"present_{mod}"] = _check_array(file, npz, f"present_{mod}", (n,), "b")
        if version == 1:  # stored unnormalised
          arrays[f"emb_{mod}"], arrays[f"norm_{mod}"] = unit_rows(arrays[f"emb_{mod}"])
        else:
          arrays[f"norm_{mod}"] = _check_array(file, npz, f"norm_{mod}", (n,), "f")
      arrays["emb_combined"] = _check_array(file, npz, "emb_combined", (n, dim), "f")
      for key in _PER_WINDOW:
        arrays[key] = _check_array(file, npz, key, (n,), "iuf")
    for key, arr in arrays.items():
      parts.setdefault(key, []).append(arr)
    rec_ids.append(np.full(n, entry["recording_id"]))
    subj_ids.append(np.full(n, entry["subject_id"]))
  cat = {k: np.concatenate(v) for k, v in parts.items()}
  present = {m: cat[f"present_{m}"].astype(bool) for m in MODALITIES}
  emb = {m: np.where(present[m][:, None], cat[f"emb_{m}"], 0).astype(np.float32)
         for m in MODALITIES}
  norm = {m: np.where(present[m], cat[f"norm_{m}"], 0).astype(np.float32) for m in MODALITIES}
  metadata = {k: v for k, v in index.items() if k != "recordings"}
  return EmbeddingSet(
      emb=emb, present=present, combined=cat["emb_combined"].astype(np.float32),
      stage=cat["stage"].astype(np.int8), sdb=cat["sdb"].astype(np.int8),
      epoch=cat["epoch"].astype(np.int32), start=cat["start"].astype(np.float64),
      recording_id=np.concatenate(rec_ids), subject_id=np.concatenate(subj_ids),
      metadata=metadata, path=str(root), norm=norm)
