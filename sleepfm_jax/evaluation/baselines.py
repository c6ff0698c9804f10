"""Baselines on raw windows, scored in the probes' harness with the probes' windows and folds.

Two baselines answer "what do the foundation-model embeddings buy?": a classical spectral-feature
model (here, numpy + scikit-learn) and an end-to-end supervised CNN (`training.supervised`, JAX).
Both evaluate exactly the windows that `probes.probe_embeddings(es, task, "concat")` evaluates on an
export `es` of the same recordings, with the same outer folds and, at a label fraction, the same
training windows (`probes.outer_folds` is the one definition they all use):

* windows: the given recordings in the given order (default: the store's order, which is also
  `export.export_store`'s), each recording's windows in time order — the rows of the
  `EmbeddingSet` that `load_embeddings` builds from such an export;
* presence: a modality is present in a window when any of its selected channels has a good mask
  there (the export's `present_<modality>`); windows with no modality present are left out, as the
  `concat` probe leaves them out;
* labels: staging (stage 0..4) or SDB (0/1), -1 = not used, as `probes.task_labels`.

Both write the predictions format v1 (`evaluation.predictions`) with the window ids, subject,
out-of-fold probabilities, outer fold and bootstrap unit of every labelled window, so
`experiments/evaluate.py --predictions=NAME:FILE` scores them next to the probes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sleepfm_jax.data.selection import ChannelSelection, select_channels
from sleepfm_jax.data.store import WindowStore, shard_files
from sleepfm_jax.modalities import MODALITIES
from sleepfm_jax.evaluation import probes
from sleepfm_jax.evaluation.features import spectral_features
from sleepfm_jax.evaluation.predictions import Predictions


@dataclasses.dataclass
class WindowTable:
  """The windows a baseline evaluates, in the order of an export of the same recordings.

  Attributes:
    store_path: the window store.
    index: [n] global window index in the store.
    recording_id, subject_id: [n] str; epoch: [n] int32; start: [n] float64 (s);
    stage, sdb: [n] int8 as in the store (-1 = unscored / not scored).
    present: modality -> [n] bool, any selected channel of the modality good in that window.
    channels: modality -> selected channel names (the models' input channels, in that order).
    channel_index: modality -> positions of those channels in the store's montage.
  """

  store_path: str
  index: np.ndarray
  recording_id: np.ndarray
  subject_id: np.ndarray
  epoch: np.ndarray
  start: np.ndarray
  stage: np.ndarray
  sdb: np.ndarray
  present: dict[str, np.ndarray]
  channels: dict[str, tuple[str, ...]]
  channel_index: dict[str, np.ndarray]

  def __len__(self) -> int:
    return int(len(self.index))

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.channels)

  @property
  def recordings(self) -> list[str]:
    """Recording ids in table order."""
    _, first = np.unique(self.recording_id, return_index=True)
    return [str(r) for r in self.recording_id[np.sort(first)]]

  @property
  def any_present(self) -> np.ndarray:
    """[n] bool: at least one modality present (the windows the `concat` probe uses)."""
    return np.any([self.present[m] for m in self.modalities], axis=0)

  def labels(self, task: str) -> tuple[np.ndarray, list[str]]:
    """Class index per window for `task` (-1 = not used) and the class names."""
    y, classes = probes.task_labels(self, task)  # reads .stage / .sdb
    return np.where(self.any_present, y, -1), classes

  def skip_reason(self, task: str) -> str | None:
    """Why `task` cannot be evaluated on these windows (None if it can), as the probes say."""
    if not self.any_present.any():
      return "no selected channel is present in any window"
    return probes.skip_reason(self.labels(task)[0], task)

  @property
  def selection(self) -> ChannelSelection:
    return ChannelSelection(self.channels, self.channel_index)

  def select(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The selected channels (and their masks) of a `WindowStore.get_batch` batch."""
    return self.selection.select(batch, dtype=None, presence=False, masks=True)


def _channel_selection(store: WindowStore, channels: Mapping[str, Sequence[str]] | None,
                       modalities: Sequence[str] | None) -> ChannelSelection:
  """`channels` (e.g. a checkpoint's: only its modalities), else every montage channel."""
  if channels is not None:  # a complete selection: the modalities it names, nothing else
    modalities = [m for m in (MODALITIES if modalities is None else modalities) if m in channels]
  selection = select_channels(store.montage, channels, modalities, where=store.path,
                              who="the selection")
  if not selection.channels:
    raise ValueError(f"{store.path}: no channels selected (channels="
                     f"{None if channels is None else dict(channels)}, modalities={modalities})")
  return selection


def select_windows(store: WindowStore | str | os.PathLike,
                   recordings: Sequence[str] | None = None,
                   channels: Mapping[str, Sequence[str]] | None = None,
                   modalities: Sequence[str] | None = None,
                   windows: np.ndarray | None = None) -> WindowTable:
  """Every window of `recordings` (default: all, in store order), with labels and presence.

  Args:
    store: a window store or its path.
    recordings: recording ids, in the order an export lists them (`export_store(recordings=...)`).
    channels: modality -> channel names to use, e.g. a checkpoint's `channels` (so presence matches
      that checkpoint's export); default every montage channel.
    modalities: restrict to these modalities (default: all with channels).
    windows: if given, keep only these store windows (global indices) of those recordings, e.g.
      the held-out time blocks of a single-night run (`splits.json`'s window lists).
  """
  store = store if isinstance(store, WindowStore) else WindowStore(store)
  wanted = list(store.recording_ids) if recordings is None else [str(r) for r in recordings]
  unknown = [r for r in wanted if r not in set(store.recording_ids)]
  if unknown:
    raise ValueError(f"{store.path}: recordings not in the store: {unknown[:10]}")
  if len(set(wanted)) != len(wanted):
    raise ValueError(f"{store.path}: a recording is listed twice in {wanted}")
  if not wanted:
    raise ValueError(f"{store.path}: no recordings selected")
  selection = _channel_selection(store, channels, modalities)
  names, chan_index = selection.channels, selection.index
  files = shard_files(store.montage)
  rec_pos = {r: i for i, r in enumerate(store.recording_ids)}
  parts: dict[str, list[np.ndarray]] = {k: [] for k in ("index", "recording_id", "subject_id")}
  present: dict[str, list[np.ndarray]] = {m: [] for m in names}
  for rid in wanted:
    idx = store.indices_for_recording(rid)
    entry = store.recordings[rec_pos[rid]]
    parts["index"].append(idx)
    parts["recording_id"].append(np.full(len(idx), rid))
    parts["subject_id"].append(np.full(len(idx), entry["subject_id"]))
    shard = store.path / entry["shard"]
    for m, sel in chan_index.items():  # masks only: no signal is read here
      mask = np.load(shard / files[f"mask_{m}"][0], mmap_mode="r", allow_pickle=False)
      present[m].append(np.asarray(mask[:, sel]).any(axis=-1))
  index = np.concatenate(parts["index"])
  keep = np.ones(len(index), bool) if windows is None else np.isin(index, windows)
  if not keep.any():
    raise ValueError(f"{store.path}: none of the {len(windows)} requested windows belongs to "
                     f"recordings {wanted[:10]}")
  index = index[keep]
  lab = store.get_batch(index, modalities=())  # labels and ids only
  return WindowTable(
      store_path=str(store.path), index=index,
      recording_id=np.concatenate(parts["recording_id"]).astype(str)[keep],
      subject_id=np.concatenate(parts["subject_id"]).astype(str)[keep],
      epoch=lab["epoch"], start=lab["start"], stage=lab["stage"], sdb=lab["sdb"],
      present={m: np.concatenate(v)[keep] for m, v in present.items()}, channels=names,
      channel_index=chan_index)


def store_features(store: WindowStore | str | os.PathLike, table: WindowTable, *,
                   chunk: int = 256, progress: bool = True) -> np.ndarray:
  """`spectral_features` of every window of `table` (selected channels), read in chunks.

  Returns:
    [len(table), len(features.feature_names())] float32, rows in table order.
  """
  store = store if isinstance(store, WindowStore) else WindowStore(store)
  chunks = [table.index[i:i + chunk] for i in range(0, len(table), chunk)]
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    chunks = tqdm(chunks, desc="spectral features", unit="chunk")
  parts = [spectral_features(table.select(store.get_batch(c, table.modalities)), table.channels,
                             store.sample_rate) for c in chunks]
  return np.concatenate(parts)


def to_predictions(table: WindowTable, rows: np.ndarray, *, task: str, classes: Sequence[str],
                   y_true: np.ndarray, y_prob: np.ndarray, fold: np.ndarray, unit: np.ndarray,
                   meta: Mapping[str, Any]) -> Predictions:
  """Packs out-of-fold predictions of the table rows `rows` with their window ids."""
  return Predictions(task=task, classes=list(classes), recording_id=table.recording_id[rows],
                     epoch=table.epoch[rows], subject_id=table.subject_id[rows],
                     start=table.start[rows], y_true=y_true, y_prob=y_prob, fold=fold, unit=unit,
                     meta=dict(meta))


def provenance(table: WindowTable, config: probes.ProbeConfig) -> dict[str, Any]:
  """Meta entries every baseline predictions file carries (what was evaluated, which folds)."""
  return {"store": os.path.abspath(table.store_path), "recordings": len(table.recordings),
          "windows": len(table), "channels": {m: list(c) for m, c in table.channels.items()},
          "outer_folds": config.outer_folds, "seed": config.seed, "gap": config.gap}


def spectral_baseline(store: WindowStore | str | os.PathLike,
                      tasks: Sequence[str] = ("staging", "sdb"), *,
                      recordings: Sequence[str] | None = None,
                      channels: Mapping[str, Sequence[str]] | None = None,
                      modalities: Sequence[str] | None = None,
                      config: probes.ProbeConfig = probes.ProbeConfig(),
                      label_fractions: Sequence[float] = (1.0,), name: str = "spectral",
                      meta: Mapping[str, Any] | None = None, chunk: int = 256,
                      progress: bool = True, log=print
                      ) -> dict[tuple[str, float], Predictions | probes.Skipped]:
  """Spectral features → the probe protocol, per task and label fraction.

  Args:
    store: the window store.
    tasks: "staging" and/or "sdb".
    recordings, channels: which windows and channels (see `select_windows`).
    modalities: only these modalities' channels (default all), e.g. ("ecg", "resp") for a
      cardiorespiratory baseline; the other groups' features are zeros with indicator 0.
    config: the probe protocol (folds, C grid, seed, gap, ...), as for the embedding probes.
    label_fractions: fractions of each outer training set's labels (`probes.label_subset`).
    name: the predictions' name (meta).
    meta: added to every predictions file's meta (provenance, e.g. the run the split came from).
    chunk: windows per read.
    progress: tqdm bars.
    log: one-line messages.

  Returns:
    (task, fraction) -> out-of-fold `Predictions`, or `probes.Skipped` with the reason.
  """
  store = store if isinstance(store, WindowStore) else WindowStore(store)
  table = select_windows(store, recordings, channels, modalities)
  x = None
  out: dict[tuple[str, float], Predictions | probes.Skipped] = {}
  for task in tasks:
    reason = table.skip_reason(task)
    if reason is not None:
      log(f"[{name}] {task}: skipped: {reason}")
      for f in label_fractions:
        out[(task, float(f))] = probes.Skipped(task, "spectral", reason)
      continue
    if x is None:  # features once for all tasks and fractions
      x = store_features(store, table, chunk=chunk, progress=progress)
    y, classes = table.labels(task)
    for f in label_fractions:
      res = probes.run_probe(x, y, table.subject_id, classes, config, f, task=task,
                             feature="spectral", progress=progress)
      out[(task, float(f))] = to_predictions(
          table, res.index, task=task, classes=classes, y_true=res.y_true, y_prob=res.y_prob,
          fold=res.fold, unit=res.unit,
          meta={"name": name, "feature": "spectral", "label_fraction": float(f),
                "scheme": res.scheme, **provenance(table, config), "probe": res.summary(),
                "modalities": list(table.modalities),
                **(meta or {})})
      log(f"[{name}] {task}@{f:g}: {len(res.index)} windows, {len(res.folds)} folds "
          f"({res.seconds:.1f}s)" + ("" if res.converged else "  NOT CONVERGED"))
  return out


def predictions_path(out_dir: str | os.PathLike, task: str, fraction: float) -> pathlib.Path:
  """`<out_dir>/<task>_<fraction>.npz`, e.g. `staging_1.npz`, `staging_0.01.npz`."""
  return pathlib.Path(out_dir) / f"{task}_{fraction:g}.npz"


def save_results(out_dir: str | os.PathLike,
                 results: Mapping[tuple[str, float], Predictions | probes.Skipped],
                 **summary: Any) -> pathlib.Path:
  """Writes each `Predictions` (`predictions_path`) and `summary.json` (files, skips, extras)."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  files, skipped = {}, []
  for (task, f), res in results.items():
    if isinstance(res, probes.Skipped):
      skipped.append({"task": task, "label_fraction": f, "reason": res.reason})
    else:
      files[f"{task}@{f:g}"] = str(res.save(predictions_path(out, task, f)))
  path = out / "summary.json"
  path.write_text(json.dumps({"files": files, "skipped": skipped, **summary}, indent=2,
                             default=_json_default) + "\n")
  return path


def _json_default(o):
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  return str(o)
