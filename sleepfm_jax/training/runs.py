"""What a pretraining run reads and holds out: its data plan and its `splits.json` (numpy only).

`plan_data` checks a pretraining config against a window store, selects the channels
(`data.selection`) and splits the windows into pretrain / val / downstream parts (by subject, or
by time blocks within each recording). The trainer writes `split_record` to the run's
`splits.json`; baselines and evaluations read it back with `run_splits` to work on exactly the
windows pretraining never saw. This module never imports jax, so numpy-only tools (the spectral
baseline) can read a run's splits.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from sleepfm_jax.data import splits
from sleepfm_jax.data.selection import ChannelSelection, select_channels
from sleepfm_jax.data.store import WindowStore
from sleepfm_jax.modalities import MODALITIES

SPLITS_FILE = "splits.json"
CONFIG_FILE = "config.json"
PARTS = ("pretrain", "val", "downstream")


@dataclasses.dataclass(frozen=True)
class DataPlan:
  """What the run reads: modalities, channel selection per modality, and window indices."""

  modalities: tuple[str, ...]
  channels: dict[str, tuple[str, ...]]  # modality -> channel names used (subset of the montage)
  channel_index: dict[str, np.ndarray]  # modality -> positions of those channels in the store
  pretrain: np.ndarray
  val: np.ndarray
  downstream: np.ndarray

  @property
  def in_channels(self) -> dict[str, int]:
    return {m: len(self.channels[m]) for m in self.modalities}

  @property
  def selection(self) -> ChannelSelection:
    return ChannelSelection(self.channels, self.channel_index)


def plan_data(store: WindowStore, config: ml_collections.ConfigDict) -> DataPlan:
  """Checks the config against the store and splits windows into pretrain / val / downstream."""
  cfg = config.data
  selection = select_channels(store.montage, cfg.get("channels", None), cfg.modalities,
                              where=store.path, who="config.data.channels")
  if len(selection.modalities) < 2:
    raise ValueError(f"{store.path}: contrastive pretraining needs at least two modalities with "
                     f"channels; config asks for {list(cfg.modalities)}, the store's montage has "
                     f"{ {m: list(store.montage.channels(m)) for m in MODALITIES} }")
  fractions = {"downstream": 1.0 - cfg.pretrain_fraction,
               "val": cfg.pretrain_fraction * cfg.val_fraction,
               "pretrain": cfg.pretrain_fraction * (1.0 - cfg.val_fraction)}
  fractions = {k: v for k, v in fractions.items() if v > 0}
  if cfg.split == "subject":
    groups = splits.split_subjects(store.subject_ids, fractions, seed=cfg.split_seed)
    idx = {k: store.indices_for_subjects(v) for k, v in groups.items()}
  elif cfg.split == "time":
    per_recording = [store.indices_for_recording(r["recording_id"]) for r in store.recordings]
    idx = splits.split_time_blocks(per_recording, fractions, seed=cfg.split_seed)
  else:
    raise ValueError(f"config.data.split must be 'subject' or 'time', got {cfg.split!r}")
  empty = np.zeros((0,), np.int64)
  plan = DataPlan(selection.modalities, selection.channels, selection.index,
                  *(idx.get(part, empty) for part in PARTS))
  if len(plan.pretrain) < config.batch_size:
    raise ValueError(f"{store.path}: the pretrain split has {len(plan.pretrain)} windows, fewer than "
                     f"one global batch ({config.batch_size}); lower batch_size or add data")
  return plan


def validation_windows(val: np.ndarray, *, batch_size: int, max_batches: int = 0,
                       seed: int = 0) -> np.ndarray:
  """The windows a validation pass reads, in the order they are batched.

  A seeded permutation of the whole validation split, cut to `max_batches * batch_size` windows
  when `max_batches` caps the pass: every evaluation of a run sees the same windows in the same
  batches, drawn from across the split (all its subjects and nights), never a run of consecutive
  windows, whose within-batch retrieval would be a different (harder, time-correlated) task.
  """
  order = np.random.default_rng(seed).permutation(np.asarray(val, np.int64))
  return order[:max_batches * batch_size] if max_batches else order


def split_record(store: WindowStore, plan: DataPlan,
                 config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What each split of a run holds, by recording and subject id (the run's `splits.json`).

  A part's `whole_recordings` is False when it holds only some windows of a recording (the
  "time" split); such a part also lists its store window indices (`windows`), so that
  evaluations can keep to exactly the windows pretraining never saw.
  """
  cfg = config.data
  out: dict[str, Any] = {
      "store": os.path.abspath(str(store.path)), "split": cfg.split,
      "split_seed": int(cfg.split_seed), "pretrain_fraction": float(cfg.pretrain_fraction),
      "val_fraction": float(cfg.val_fraction), "modalities": list(plan.modalities),
      "channels": {m: list(c) for m, c in plan.channels.items()}, "parts": {}}
  for name in PARTS:
    idx = getattr(plan, name)
    counts = np.bincount(store.recording_of(idx), minlength=len(store.recordings))
    held = np.flatnonzero(counts)
    out["parts"][name] = {
        "recordings": [store.recording_ids[r] for r in held],
        "subjects": sorted({store.recordings[r]["subject_id"] for r in held}),
        "num_windows": int(len(idx)),
        "whole_recordings": bool(all(counts[r] == int(store.recordings[r]["num_windows"])
                                     for r in held))}
    if not out["parts"][name]["whole_recordings"]:
      out["parts"][name]["windows"] = [int(i) for i in np.sort(idx)]
  return out


def run_dir(path: str) -> str:
  """The work directory of a run from it or a checkpoint path inside it (best/, checkpoints/N)."""
  cand = os.path.abspath(path)
  for _ in range(4):
    if any(os.path.exists(os.path.join(cand, f)) for f in (SPLITS_FILE, CONFIG_FILE)):
      return cand
    cand = os.path.dirname(cand)
  raise FileNotFoundError(f"{path}: not inside a pretraining work directory (no {SPLITS_FILE} or "
                          f"{CONFIG_FILE} here or in the parent directories)")


def run_splits(path: str, store: str | None = None) -> dict[str, Any]:
  """The splits of a pretraining run: its `splits.json`, or recomputed from its `config.json`.

  Args:
    path: the run's work directory or a checkpoint location inside it.
    store: the window store, if not at the path recorded in the run (recomputation only).
  """
  workdir = run_dir(path)
  file = os.path.join(workdir, SPLITS_FILE)
  if os.path.exists(file):
    with open(file) as f:
      return json.load(f)
  with open(os.path.join(workdir, CONFIG_FILE)) as f:  # runs from before splits.json existed
    config = ml_collections.ConfigDict(json.load(f)["config"])
  store = WindowStore(store or config.data.store)
  return split_record(store, plan_data(store, config), config)


def held_out_recordings(splits_: Mapping[str, Any], part: str = "downstream") -> list[str]:
  """Recording ids of a split part, refusing parts that hold only some windows of a recording."""
  info = splits_["parts"][part]
  if not info["recordings"]:
    raise ValueError(f"the run's '{part}' split is empty")
  if not info["whole_recordings"]:
    raise ValueError(f"the run's '{part}' split holds only part of its recordings (split "
                     f"'{splits_['split']}': time blocks within each night), but exports and "
                     "baselines work on whole recordings; pass the recordings explicitly")
  return list(info["recordings"])


def part_windows(splits_: Mapping[str, Any], store: WindowStore, part: str = "pretrain"
                 ) -> np.ndarray:
  """Store window indices of a split part, in `store`: by recording id when the part holds whole
  recordings (any store of those recordings), else the listed windows (the run's own store)."""
  info = splits_["parts"][part]
  if info["whole_recordings"]:
    missing = [r for r in info["recordings"] if r not in store.recording_ids]
    if missing:
      raise ValueError(f"{store.path}: the run's '{part}' recordings {missing[:3]} are not in it")
    found = [store.indices_for_recording(r) for r in info["recordings"]]
    return np.sort(np.concatenate(found)) if found else np.zeros(0, np.int64)
  if os.path.abspath(str(store.path)) != os.path.abspath(splits_["store"]):
    raise ValueError(f"{store.path}: the run's '{part}' part lists windows of its own store "
                     f"({splits_['store']}), not of this one")
  return np.asarray(info["windows"], np.int64)


def downstream_selection(path: str, store: str | None = None
                         ) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
  """What a run held out for downstream use: (recording ids, the encoders' channels, provenance).

  The provenance dict (`split_from_checkpoint`, `split_part`) goes into the meta of whatever is
  computed on those recordings (baseline predictions, summaries).
  """
  split = run_splits(path, store=store)
  return (held_out_recordings(split), split["channels"],
          {"split_from_checkpoint": path, "split_part": "downstream"})
