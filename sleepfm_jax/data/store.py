"""The window store: one folder of memory-mappable `.npy` files per recording, plus `index.json`.

Layout (format "sleepfm-jax-window-store", version 1; see docs/store.md):

  store/
    index.json                     format, version, sample rate, montage, preprocessing config and
                                   the recordings in a deterministic order with their window offsets
    report.json                    the preprocessing report
    shards/<recording_id>/
      bas.npy ecg.npy resp.npy     [n, C_mod, samples] float16 or float32 (C_mod may be 0)
      mask_bas.npy ...             [n, C_mod] bool: channel present and of good quality
      stage.npy sdb.npy            [n] int8 (-1 = unscored / not scored)
      epoch.npy                    [n] int32 (epoch k: the window starts at epoch_onset + 30 k)
      start.npy                    [n] float64 (seconds from the recording start)
      events.json                  the recording's scored events
      recording.json               this recording's index entry (lets a store be rebuilt or audited)

`StoreWriter` writes each shard atomically (temporary folder, then rename) so an interrupted run
never leaves a half-written shard under its final name; `finalize` writes the index. `WindowStore` reads
windows through lazily opened memmaps, is picklable (it carries only its path) and reads batches
with one fancy-indexed read per shard. numpy only.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sleepfm_jax.data.channels import MODALITIES, Montage

FORMAT = "sleepfm-jax-window-store"
VERSION = 1
STAGES = ("W", "N1", "N2", "N3", "REM")
DTYPES = ("float16", "float32")
LABEL_KEYS = {"stage": np.int8, "sdb": np.int8, "epoch": np.int32, "start": np.float64}
FLOAT16_MAX = float(np.finfo(np.float16).max)

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_REQUIRED_INDEX_KEYS = (
    "sample_rate", "window_seconds", "samples", "dtype", "montage", "recordings")


class StoreError(ValueError):
  """A window store on disk is missing, malformed or of an unsupported format/version."""


def shard_files(montage: Montage) -> dict[str, tuple[str, tuple[int, ...] | None]]:
  """Returns {array key: (file name, trailing shape)} for a shard; None = signals (C, samples)."""
  files = {}
  for m in MODALITIES:
    files[m] = (f"{m}.npy", None)
    files[f"mask_{m}"] = (f"mask_{m}.npy", (len(montage.channels(m)),))
  for k in LABEL_KEYS:
    files[k] = (f"{k}.npy", ())
  return files


def _atomic_write_json(path: pathlib.Path, obj: Any) -> None:
  tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
  tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
  os.replace(tmp, path)


def _json_default(o):
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, pathlib.Path):
    return str(o)
  raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _jsonable(obj: Any) -> Any:
  return json.loads(json.dumps(obj, default=_json_default))


class StoreWriter:
  """Writes recordings into a window store; picklable, so worker processes can write shards.

  A writer sent to a worker process writes that worker's shards and returns their index entries; the
  main process `register`s them and calls `finalize` once. In a single process, `write_recording`
  registers its entry itself.
  """

  def __init__(
      self,
      path: str | os.PathLike,
      *,
      montage: Montage,
      sample_rate: int = 256,
      window_seconds: float = 30.0,
      dtype: str = "float16",
      preprocessing: Mapping[str, Any] | None = None,
      overwrite: bool = False,
  ):
    if dtype not in DTYPES:
      raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    samples = sample_rate * window_seconds
    if abs(samples - round(samples)) > 1e-9:
      raise ValueError(f"{window_seconds} s at {sample_rate} Hz is not a whole number of samples")
    self.path = pathlib.Path(path)
    self.montage = montage
    self.sample_rate = sample_rate
    self.window_seconds = window_seconds
    self.samples = int(round(samples))
    self.dtype = dtype
    self.preprocessing = _jsonable(dict(preprocessing or {}))
    self._entries: dict[str, dict] = {}
    self._prepare(overwrite)

  def _prepare(self, overwrite: bool) -> None:
    if self.path.exists() and any(self.path.iterdir()):
      index = self.path / "index.json"
      if not overwrite:
        raise StoreError(f"{self.path}: output folder is not empty (pass overwrite=True to replace "
                         "an existing window store)")
      if index.exists():
        try:
          fmt = json.loads(index.read_text()).get("format")
        except (OSError, ValueError, AttributeError):
          fmt = None
        if fmt != FORMAT:
          raise StoreError(f"{self.path}: refusing to overwrite: index.json is not a window store")
      elif any(p.name not in ("shards", "report.json") for p in self.path.iterdir()):
        raise StoreError(f"{self.path}: refusing to overwrite a folder that is not a window store")
      for name in ("index.json", "report.json"):
        (self.path / name).unlink(missing_ok=True)
      shutil.rmtree(self.path / "shards", ignore_errors=True)
    (self.path / "shards").mkdir(parents=True, exist_ok=True)

  def write_recording(
      self, recording_id: str, subject_id: str, arrays: Mapping[str, np.ndarray],
      meta: Mapping[str, Any] | None = None,
  ) -> dict:
    """Validates and writes one recording's shard atomically; returns (and registers) its entry.

    Args:
      recording_id: unique id, also the shard's folder name ([A-Za-z0-9._-], not starting with '.').
      subject_id: the subject the recording belongs to (splits are by subject).
      arrays: "bas"/"ecg"/"resp" [n, C_mod, samples] (any float dtype, converted to the store dtype;
        float16 values beyond +-65504 are clipped and counted), "mask_<modality>" [n, C_mod] bool,
        "stage", "sdb", "epoch", "start" [n]. Missing masks default to all True.
      meta: extra JSON-serialisable fields for the index entry, e.g. "source",
        "annotation_source", "channel_map", "respiratory_scored", and "events" (a list of dicts,
        written to events.json rather than the index).

    Returns:
      The recording's index entry (without "first_window", assigned by `finalize`).
    """
    if not isinstance(recording_id, str) or not _ID_RE.match(recording_id):
      raise ValueError(f"recording_id {recording_id!r} must match {_ID_RE.pattern}")
    meta = dict(meta or {})
    events = meta.pop("events", [])
    files = shard_files(self.montage)
    if "stage" not in arrays:
      raise ValueError(f"{recording_id}: arrays must contain 'stage'")
    n = int(np.shape(arrays["stage"])[0])
    out: dict[str, np.ndarray] = {}
    saturated = 0
    for key, (_, tail) in files.items():
      if key in MODALITIES:
        c = len(self.montage.channels(key))
        shape = (n, c, self.samples)
        a = np.asarray(arrays[key]) if key in arrays else np.zeros(shape, self.dtype)
        if a.shape != shape:
          raise ValueError(f"{recording_id}: '{key}' has shape {a.shape}, expected {shape}")
        if self.dtype == "float16" and a.dtype != np.float16 and a.size:
          over = int(np.count_nonzero(np.abs(a) > FLOAT16_MAX))
          if over:
            saturated += over
            a = np.clip(a, -FLOAT16_MAX, FLOAT16_MAX)
        out[key] = a.astype(self.dtype, copy=False)
      elif key.startswith("mask_"):
        shape = (n, *tail)
        a = np.asarray(arrays[key]) if key in arrays else np.ones(shape, bool)
        if a.shape != shape:
          raise ValueError(f"{recording_id}: '{key}' has shape {a.shape}, expected {shape}")
        out[key] = a.astype(bool, copy=False)
      else:
        if key not in arrays:
          raise ValueError(f"{recording_id}: arrays must contain '{key}'")
        a = np.asarray(arrays[key])
        if a.shape != (n,):
          raise ValueError(f"{recording_id}: '{key}' has shape {a.shape}, expected ({n},)")
        out[key] = a.astype(LABEL_KEYS[key], copy=False)
    unknown = set(arrays) - set(files)
    if unknown:
      raise ValueError(f"{recording_id}: unknown array keys {sorted(unknown)}")

    entry = {"recording_id": recording_id, "subject_id": str(subject_id),
             "shard": f"shards/{recording_id}", "num_windows": n}
    entry.update(_jsonable(meta))
    if saturated:
      entry["float16_saturated_samples"] = saturated

    shards = self.path / "shards"
    tmp = shards / f".tmp-{recording_id}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
      for key, (name, _) in files.items():
        np.save(tmp / name, out[key], allow_pickle=False)
      (tmp / "events.json").write_text(json.dumps(_jsonable(list(events))) + "\n")
      (tmp / "recording.json").write_text(json.dumps(entry, indent=1) + "\n")
      final = shards / recording_id
      old = None
      if final.exists():
        old = shards / f".old-{recording_id}-{uuid.uuid4().hex}"
        os.replace(final, old)
      os.replace(tmp, final)
      if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    self.register(entry)
    return entry

  def __getstate__(self):
    # Sent to worker processes: the configuration only, not the entries registered so far.
    return {**self.__dict__, "_entries": {}}

  def register(self, entry: Mapping[str, Any]) -> None:
    """Adds the index entry of a shard written by another process (e.g. a worker's writer)."""
    rid = entry["recording_id"]
    if rid in self._entries and self._entries[rid] != entry:
      raise ValueError(f"recording_id {rid!r} written twice with different content")
    self._entries[rid] = dict(entry)

  def finalize(self, report: Mapping[str, Any] | None = None) -> dict:
    """Writes index.json (recordings sorted by id) and report.json; removes stale shard folders.

    Returns:
      The index dict.
    """
    entries = [self._entries[k] for k in sorted(self._entries)]
    first = 0
    recordings = []
    for e in entries:
      recordings.append({**e, "first_window": first})
      first += int(e["num_windows"])
    index = {
        "format": FORMAT,
        "version": VERSION,
        "sample_rate": self.sample_rate,
        "window_seconds": self.window_seconds,
        "samples": self.samples,
        "dtype": self.dtype,
        "montage": self.montage.to_dict(),
        "preprocessing": self.preprocessing,
        "stages": list(STAGES),
        "num_windows": first,
        "num_recordings": len(recordings),
        "num_subjects": len({e["subject_id"] for e in entries}),
        "recordings": recordings,
    }
    shards = self.path / "shards"
    keep = set(self._entries)
    for p in shards.iterdir():
      if p.name not in keep:
        shutil.rmtree(p, ignore_errors=True)
    if report is not None:
      _atomic_write_json(self.path / "report.json", _jsonable(dict(report)))
    _atomic_write_json(self.path / "index.json", index)
    return index


def _npy_header(path: pathlib.Path) -> tuple[tuple[int, ...], np.dtype]:
  with open(path, "rb") as f:
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(f)
  return tuple(shape), dtype


def _open_npy(path: pathlib.Path) -> np.ndarray:
  """Memory-maps an .npy file (zero-size arrays, which cannot be mapped, are loaded)."""
  shape, _ = _npy_header(path)
  if int(np.prod(shape)) == 0:
    return np.load(path, allow_pickle=False)
  return np.load(path, mmap_mode="r", allow_pickle=False)


class WindowStore:
  """Random and batched access to the windows of a store; numpy only, lazy, picklable by path.

  Windows are numbered 0..num_windows-1 in index order (recordings sorted by id, windows in time
  order). Shards are memory-mapped on first use and at most `max_open_shards` stay open (each open
  memmap holds a file descriptor). Safe to share between threads.
  """

  def __init__(self, path: str | os.PathLike, *, validate: bool = True, max_open_shards: int = 64):
    self.path = pathlib.Path(path)
    self.max_open_shards = max_open_shards
    index_path = self.path / "index.json"
    if not index_path.exists():
      raise StoreError(f"{self.path}: not a window store (no index.json)")
    try:
      index = json.loads(index_path.read_text())
    except ValueError as e:
      raise StoreError(f"{index_path}: unreadable JSON: {e}") from e
    if not isinstance(index, dict) or index.get("format") != FORMAT:
      raise StoreError(f"{index_path}: format is {index.get('format')!r} "
                       f"(expected {FORMAT!r})" if isinstance(index, dict) else
                       f"{index_path}: not a window store index")
    if index.get("version") != VERSION:
      raise StoreError(f"{index_path}: unsupported store version {index.get('version')!r} "
                       f"(this code reads version {VERSION})")
    missing = [k for k in _REQUIRED_INDEX_KEYS if k not in index]
    if missing:
      raise StoreError(f"{index_path}: missing keys {missing}")
    if index["dtype"] not in DTYPES:
      raise StoreError(f"{index_path}: dtype {index['dtype']!r} not in {DTYPES}")
    self.index = index
    try:
      self.montage = Montage.from_dict(index["montage"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      raise StoreError(f"{index_path}: bad montage {index['montage']!r}") from e
    self.sample_rate = int(index["sample_rate"])
    self.window_seconds = float(index["window_seconds"])
    self.samples = int(index["samples"])
    self.dtype = np.dtype(index["dtype"])
    self.recordings: list[dict] = list(index["recordings"])
    counts = np.array([int(r["num_windows"]) for r in self.recordings], dtype=np.int64)
    self._first = np.concatenate([[0], np.cumsum(counts)])[:-1].astype(np.int64)
    declared = np.array([int(r["first_window"]) for r in self.recordings], dtype=np.int64)
    if not np.array_equal(declared, self._first):
      raise StoreError(f"{index_path}: recordings' first_window do not follow their num_windows")
    self.num_windows = int(counts.sum())
    if index.get("num_windows", self.num_windows) != self.num_windows:
      raise StoreError(f"{index_path}: num_windows {index['num_windows']} != sum over recordings "
                       f"{self.num_windows}")
    self._counts = counts
    self.recording_ids = [r["recording_id"] for r in self.recordings]
    if len(set(self.recording_ids)) != len(self.recording_ids):
      raise StoreError(f"{index_path}: duplicate recording ids")
    self._rec_pos = {rid: i for i, rid in enumerate(self.recording_ids)}
    self.subject_ids: list[str] = sorted({r["subject_id"] for r in self.recordings})
    self._subject_pos = {s: i for i, s in enumerate(self.subject_ids)}
    self.recording_subject = np.array(
        [self._subject_pos[r["subject_id"]] for r in self.recordings], dtype=np.int32)
    self.subjects = np.repeat(self.recording_subject, counts)
    self._files = shard_files(self.montage)
    self._cache: collections.OrderedDict[int, dict[str, np.ndarray]] = collections.OrderedDict()
    self._lock = threading.Lock()
    if validate:
      self.validate()

  # Pickling carries the path only; memmaps are reopened lazily in the receiving process.
  def __getstate__(self):
    return {"path": str(self.path), "max_open_shards": self.max_open_shards}

  def __setstate__(self, state):
    self.__init__(state["path"], validate=False, max_open_shards=state["max_open_shards"])

  def __len__(self) -> int:
    return self.num_windows

  def __repr__(self) -> str:
    return (f"WindowStore({str(self.path)!r}, recordings={len(self.recordings)}, "
            f"subjects={len(self.subject_ids)}, windows={self.num_windows}, dtype={self.dtype})")

  def _expected_shape(self, key: str, n: int) -> tuple[int, ...]:
    if key in MODALITIES:
      return (n, len(self.montage.channels(key)), self.samples)
    return (n, *self._files[key][1])

  def validate(self) -> None:
    """Checks every shard's files exist with the shapes and dtypes the index implies (headers only).

    Raises:
      StoreError: naming the shard file at fault.
    """
    for r, n in zip(self.recordings, self._counts):
      shard = self.path / r["shard"]
      for key, (name, _) in self._files.items():
        p = shard / name
        if not p.exists():
          raise StoreError(f"{p}: missing shard file")
        try:
          shape, dtype = _npy_header(p)
        except (OSError, ValueError) as e:
          raise StoreError(f"{p}: unreadable .npy header: {e}") from e
        want = self._expected_shape(key, int(n))
        if shape != want:
          raise StoreError(f"{p}: shape {shape}, expected {want}")
        want_dtype = (self.dtype if key in MODALITIES else
                      np.dtype(bool) if key.startswith("mask_") else np.dtype(LABEL_KEYS[key]))
        if dtype != want_dtype:
          raise StoreError(f"{p}: dtype {dtype}, expected {want_dtype}")

  def _arrays(self, r: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Memmaps of shard `r` for `keys`, opened on first use (LRU over shards)."""
    with self._lock:
      arrays = self._cache.get(r)
      if arrays is None:
        arrays = self._cache[r] = {}
        while len(self._cache) > self.max_open_shards:
          self._cache.popitem(last=False)
      self._cache.move_to_end(r)
    missing = [k for k in keys if k not in arrays]
    if missing:
      shard = self.path / self.recordings[r]["shard"]
      opened = {k: _open_npy(shard / self._files[k][0]) for k in missing}
      with self._lock:
        arrays.update(opened)
    return arrays

  def close(self) -> None:
    """Drops all open memmaps (they are reopened on demand)."""
    with self._lock:
      self._cache.clear()

  def recording_of(self, indices) -> np.ndarray:
    """Recording position (in index order) of each global window index."""
    return (np.searchsorted(self._first, np.asarray(indices, np.int64), side="right") - 1).astype(
        np.int32)

  def get_batch(
      self, indices: Sequence[int] | np.ndarray, modalities: Iterable[str] = MODALITIES
  ) -> dict[str, np.ndarray]:
    """Reads windows `indices` (any order, repeats allowed) as a dict of stacked arrays.

    Reads are grouped by shard: one fancy-indexed memmap read per shard and key, written straight
    into preallocated float32 outputs.

    Returns:
      {"bas": [B, C, T] float32, "mask_bas": [B, C] bool, ... for each modality in `modalities`,
       "stage", "sdb": [B] int8, "epoch": [B] int32, "start": [B] float64,
       "recording", "subject": [B] int32, "index": [B] int64}.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= self.num_windows):
      bad = idx[(idx < 0) | (idx >= self.num_windows)][0]
      raise IndexError(f"window index {bad} out of range [0, {self.num_windows})")
    modalities = tuple(modalities)
    for m in modalities:
      if m not in MODALITIES:
        raise ValueError(f"unknown modality {m!r}; expected some of {MODALITIES}")
    b = idx.size
    out: dict[str, np.ndarray] = {}
    for m in modalities:
      c = len(self.montage.channels(m))
      out[m] = np.empty((b, c, self.samples), np.float32)
      out[f"mask_{m}"] = np.empty((b, c), bool)
    for k, dt in LABEL_KEYS.items():
      out[k] = np.empty(b, dt)
    rec = self.recording_of(idx)
    keys = [k for m in modalities for k in (m, f"mask_{m}")] + list(LABEL_KEYS)
    if b:
      order = np.argsort(rec, kind="stable")
      bounds = np.flatnonzero(np.diff(rec[order])) + 1
      for group in np.split(order, bounds):
        r = int(rec[group[0]])
        local = idx[group] - self._first[r]
        arrays = self._arrays(r, keys)
        if group.size == 1:
          g, loc = int(group[0]), int(local[0])
          for k in keys:
            out[k][g] = arrays[k][loc]
        else:
          for k in keys:
            out[k][group] = arrays[k][local]
    out["recording"] = rec
    out["subject"] = self.recording_subject[rec] if b else np.empty(0, np.int32)
    out["index"] = idx
    return out

  def __getitem__(self, i: int) -> dict[str, Any]:
    """One window: {"bas": [C, T] float32, ..., "stage": int8, ..., "index": int64}."""
    i = int(i)
    if i < 0:
      i += self.num_windows
    batch = self.get_batch([i])
    return {k: v[0] for k, v in batch.items()}

  def indices_for_subjects(self, subject_ids: Iterable[str]) -> np.ndarray:
    """Sorted global window indices of all recordings of `subject_ids`.

    Raises:
      KeyError: for a subject id that is not in the store.
    """
    wanted = list(subject_ids)
    unknown = [s for s in wanted if s not in self._subject_pos]
    if unknown:
      raise KeyError(f"{self.path}: subjects not in the store: {unknown[:10]}")
    pos = np.array([self._subject_pos[s] for s in wanted], dtype=np.int32)
    return np.flatnonzero(np.isin(self.subjects, pos)).astype(np.int64)

  def indices_for_recording(self, recording_id: str) -> np.ndarray:
    """Global window indices of one recording, in time order."""
    if recording_id not in self._rec_pos:
      raise KeyError(f"{self.path}: recording {recording_id!r} not in the store")
    r = self._rec_pos[recording_id]
    return np.arange(self._first[r], self._first[r] + self._counts[r], dtype=np.int64)

  def events(self, recording_id: str) -> list[dict]:
    """The scored events of one recording (from its events.json)."""
    r = self._rec_pos[recording_id]
    return json.loads((self.path / self.recordings[r]["shard"] / "events.json").read_text())
