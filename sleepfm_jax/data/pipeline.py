"""Grain input pipelines over a window store: shuffled, sharded, resumable training batches and
ordered, padded evaluation batches.

Training (`train_dataset` → `train_iterator`):

  MapDataset.range(len(source)).seed(seed).shuffle().repeat()   global shuffle, new order each epoch
    .batch(global_batch, drop_remainder=True)                    global batches of window *positions*
  [or, with recordings_per_batch = k: .range(batches).repeat()
    .map_with_index(RecordingGroupedBatches(...))]               k chunks of one recording each (sampling.py)
    .map(ProcessSlice(...))                                      this process's contiguous rows
    .map(LoadBatch(source))                                      one fancy-indexed read per shard
    [.random_map(CrossModalShift(...))]                          optional augmentation (augment.py)
    .to_iter_dataset(ReadOptions(...)) [.mp_prefetch(...)]       threads / worker processes

Batching positions and reading each batch in one `get_batch` call is equivalent to
`MapDataset.source(source)...batch(...)` (same windows, same order) but avoids building and stacking
one dict per window: grain 0.2.18's `MapDataset.batch` fetches its elements one by one (its batched
read push-down is disabled), see benchmarks/preprocess.py for the measured difference.

The module never imports jax itself: the trainer passes `jax.process_index()` and
`jax.process_count()`. (grain's own package imports jax, but workers never initialise a backend.)
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterable, Iterator, Sequence

import grain
import numpy as np
from absl import flags
from absl import logging

from sleepfm_jax.data.augment import CrossModalShift
from sleepfm_jax.data.channels import MODALITIES
from sleepfm_jax.data.sampling import RecordingGroupedBatches
from sleepfm_jax.data.store import WindowStore


class WindowSource(grain.sources.RandomAccessDataSource):
  """A picklable random-access source over (a subset of) the windows of a store.

  Position p of the source is store window `indices[p]` (all windows if `indices` is None). The
  store is opened (and validated) once here; a pickled copy in a Grain worker carries only the path
  and the indices and reopens the memmaps lazily on first access.
  """

  def __init__(
      self,
      store_path: str | os.PathLike,
      indices: Sequence[int] | np.ndarray | None = None,
      modalities: Iterable[str] = MODALITIES,
  ):
    self.store_path = str(store_path)
    self.modalities = tuple(modalities)
    unknown = [m for m in self.modalities if m not in MODALITIES]
    if unknown:
      raise ValueError(f"unknown modalities {unknown}; expected some of {MODALITIES}")
    self._store: WindowStore | None = WindowStore(self.store_path)
    if indices is None:
      self.indices = None
      self._len = self._store.num_windows
    else:
      self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
      if self.indices.size and (self.indices.min() < 0 or
                                self.indices.max() >= self._store.num_windows):
        raise IndexError(f"{self.store_path}: indices out of range [0, {self._store.num_windows})")
      self._len = int(self.indices.size)

  @property
  def store(self) -> WindowStore:
    if self._store is None:
      self._store = WindowStore(self.store_path, validate=False)
    return self._store

  def __getstate__(self):
    return {"store_path": self.store_path, "indices": self.indices,
            "modalities": self.modalities, "_len": self._len}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._store = None

  def __len__(self) -> int:
    return self._len

  def __repr__(self) -> str:
    subset = "all" if self.indices is None else f"{self._len} selected"
    return (f"WindowSource({self.store_path!r}, windows={subset}, "
            f"modalities={list(self.modalities)})")

  def _store_indices(self, positions) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    if pos.size and (pos.min() < 0 or pos.max() >= self._len):
      raise IndexError(f"source position out of range [0, {self._len})")
    return pos if self.indices is None else self.indices[pos]

  def recordings(self) -> np.ndarray:
    """[len(self)] the store's recording position of each source position."""
    return self.store.recording_of(self._store_indices(np.arange(self._len)))

  def get_batch(self, positions: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """Stacked windows at source `positions` (see `WindowStore.get_batch`)."""
    return self.store.get_batch(self._store_indices(positions), self.modalities)

  def __getitem__(self, position: int) -> dict[str, np.ndarray]:
    batch = self.get_batch([position])
    return {k: v[0] for k, v in batch.items()}

  def _getitems(self, positions: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Batched read (grain's SupportsBatchedReadRandomAccessDataSource)."""
    batch = self.get_batch(positions)
    return [{k: v[i] for k, v in batch.items()} for i in range(len(positions))]


class LoadBatch:
  """Grain map: an array of source positions → a batch dict (picklable, holds the source)."""

  def __init__(self, source: WindowSource):
    self.source = source

  def __call__(self, positions: np.ndarray) -> dict[str, np.ndarray]:
    return self.source.get_batch(positions)


class ProcessSlice:
  """Grain map: a global batch of positions → this process's contiguous part (picklable)."""

  def __init__(self, process_index: int, local_batch: int):
    self.start, self.stop = process_index * local_batch, (process_index + 1) * local_batch

  def __call__(self, positions: np.ndarray) -> np.ndarray:
    return positions[self.start:self.stop]


def _process(process_index, process_count) -> tuple[int, int]:
  pi = 0 if process_index is None else int(process_index)
  pc = 1 if process_count is None else int(process_count)
  if pc < 1 or not 0 <= pi < pc:
    raise ValueError(f"need 0 <= process_index < process_count, got {pi}, {pc}")
  return pi, pc


def train_dataset(
    source: WindowSource,
    *,
    global_batch: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    cross_modal_shift: int = 0,
    recordings_per_batch: int = 0,
) -> grain.MapDataset:
  """Infinite, shuffled, per-process training batches (dicts of stacked numpy arrays).

  The global order is a seeded shuffle of all source positions, reshuffled each epoch, cut into
  global batches; process p of P takes rows [p * B / P, (p + 1) * B / P) of each global batch. The
  processes' windows are disjoint and together cover each epoch, and the global batch the
  processes assemble (`jax.make_array_from_process_local_data` concatenates in process order) is
  the same, row for row, whatever P: a run is reproducible across process counts.

  Args:
    source: the windows to train on (e.g. a subject split's `WindowSource`).
    global_batch: batch size summed over processes (divisible by process_count).
    seed: shuffle seed.
    process_index: this process (`jax.process_index()`), default 0.
    process_count: number of processes (`jax.process_count()`), default 1.
    cross_modal_shift: if > 0, roll each modality of each window by its own random offset of at
      most this many samples (`augment.CrossModalShift`), drawn from `seed` and the batch index.

  Returns:
    A `grain.MapDataset` whose element i is the i-th local batch.
  """
  pi, pc = _process(process_index, process_count)
  if global_batch < 1 or global_batch % pc:
    raise ValueError(f"global_batch {global_batch} must be a positive multiple of process_count "
                     f"{pc}")
  if len(source) == 0:
    raise ValueError(f"{source!r} is empty: nothing to train on")
  if recordings_per_batch > 0:
    plan = RecordingGroupedBatches(source.recordings(), global_batch=global_batch,
                                   groups=recordings_per_batch, seed=seed)
    if plan.left_out["recordings"]:
      logging.warning("%s: %d recordings (%d windows) have fewer windows than one chunk of %d and "
                      "are left out of training", source, plan.left_out["recordings"],
                      plan.left_out["windows"], plan.chunk)
    ds = grain.MapDataset.range(plan.batches_per_epoch).seed(seed).repeat().map_with_index(plan)
  else:
    ds = grain.MapDataset.range(len(source)).seed(seed).shuffle().repeat()
    ds = ds.batch(global_batch, drop_remainder=True)
  ds = ds.map(ProcessSlice(pi, global_batch // pc))
  ds = ds.map(LoadBatch(source))
  if cross_modal_shift > 0:
    ds = ds.random_map(CrossModalShift(source.modalities, cross_modal_shift, process_index=pi,
                                       local_batch=global_batch // pc, global_batch=global_batch))
  return ds


def train_iterator(
    dataset: grain.MapDataset,
    *,
    worker_count: int = 0,
    prefetch: int = 2,
    read_threads: int = 2,
) -> grain.DatasetIterator:
  """Iterates a training dataset, optionally in `worker_count` worker processes.

  The iterator supports `get_state()` / `set_state(state)` (or Orbax through
  `grain.checkpoint.CheckpointSave/Restore`): a fresh iterator of the same dataset and worker count
  set to a saved state yields exactly the batches that followed the save.

  Args:
    dataset: from `train_dataset`.
    worker_count: worker processes (spawned; 0 = read in this process).
    prefetch: batches buffered per worker (and in the reading threads).
    read_threads: threads reading batches per process.
  """
  ds = dataset.to_iter_dataset(
      grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch))
  if worker_count > 0:
    # Grain reads its absl flags when it starts workers; outside an absl app (tests, notebooks)
    # nothing has parsed them, so accept their defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=prefetch))
  return iter(ds)


def eval_plan(n: int, batch_size: int, process_index: int | None = None,
              process_count: int | None = None) -> tuple[int, int]:
  """Returns (first position, number of batches) of this process's contiguous evaluation block.

  Every process gets the same number of batches (so multi-host evaluation steps stay in lockstep);
  block p covers positions [p * nb * B, (p + 1) * nb * B) clipped to n.
  """
  pi, pc = _process(process_index, process_count)
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  nb = -(-n // (pc * batch_size))
  return pi * nb * batch_size, nb


def eval_batches(
    source: WindowSource,
    *,
    batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    prefetch: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
  """Ordered evaluation batches: every window exactly once over all processes, none dropped.

  Each process reads a contiguous block of the source in order (see `eval_plan`). Batches have
  exactly `batch_size` rows; rows past the end are padding with "valid" False, zero signals, False
  masks, stage/sdb -1 and index -1. Batches are read `prefetch` ahead on a background thread.

  Yields:
    Batch dicts as in `WindowStore.get_batch`, plus "valid": [B] bool.
  """
  n = len(source)
  start, nb = eval_plan(n, batch_size, process_index, process_count)

  def load(b: int) -> dict[str, np.ndarray]:
    pos = np.arange(start + b * batch_size, start + (b + 1) * batch_size, dtype=np.int64)
    valid = pos < n
    batch = source.get_batch(np.where(valid, pos, 0))
    if not valid.all():
      pad = ~valid
      for k, v in batch.items():
        if k.startswith("mask_"):
          v[pad] = False
        elif k in ("stage", "sdb", "index", "epoch", "recording", "subject"):
          v[pad] = -1
        else:
          v[pad] = 0
    batch["valid"] = valid
    return batch

  if nb == 0:
    return
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    pending = [pool.submit(load, b) for b in range(min(nb, max(1, prefetch)))]
    for b in range(nb):
      batch = pending.pop(0).result()
      if b + len(pending) + 1 < nb:
        pending.append(pool.submit(load, b + len(pending) + 1))
      yield batch
