"""Preprocessing: PSG recordings → window store, in parallel, with a per-file report.

Per recording: open the signal file (header only) → harmonise its channels to the montage → read
the annotations (or the EDF+ file's own) and crop them to the signal → plan the epoch-aligned
windows → for one channel at a time: read, judge each window's quality on the original-rate samples,
optionally filter, optionally normalise robustly, resample to `sample_rate`, cut the windows → write
the shard. A file that fails is reported as skipped (with the reason, and the traceback for
unexpected errors) and the batch carries on. numpy/scipy only.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import multiprocessing
import os
import pathlib
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sleepfm_jax.data import annotations as ann_lib
from sleepfm_jax.data import cohorts, discovery
from sleepfm_jax.data import signal as sig
from sleepfm_jax.data import units as units_lib
from sleepfm_jax.data import windowing
from sleepfm_jax.data.channels import MODALITIES, MONTAGES, Montage, harmonise
from sleepfm_jax.data.errors import PSGError
from sleepfm_jax.data.recording import open_recording
from sleepfm_jax.data.store import FLOAT16_MAX, StoreWriter

REPORT_FORMAT = "sleepfm-jax-preprocess-report"
CROPPED = "cropped past signal end"
OUTSIDE = "outside a signal segment (gap or incomplete epoch)"
NO_ANNOTATIONS = "no stage annotations"
OUTSIDE_SLEEP = "outside the sleep period +- {:g} min"
# What the original SleepFM fed its encoders (0_extract_pretraining_data.py, CinC-2018): the ADC
# counts of the .mat file, unnormalised, resampled by FFT over the whole recording from one sample
# after the first scored sample, windows one sample after each epoch boundary (see docs/model.md,
# "Fidelity to the original"). Presets that claim to reproduce the original apply these.
ORIGINAL_INPUTS = {"units": "raw", "normalise": "none", "dtype": "float32", "resampler": "fft",
                   "alignment": "original"}
RESAMPLERS = ("polyphase", "fft")
ALIGNMENTS = ("epoch", "original")


@dataclasses.dataclass
class PreprocessConfig:
  """How recordings become windows. The defaults follow the original SleepFM where it is explicit.

  Attributes:
    sample_rate: output sampling rate in Hz (SleepFM: 256).
    window_seconds: window (= epoch) length in seconds (30).
    montage: a name in `channels.MONTAGES` ("paper", "sleepedf", "standard") or an explicit
      {"bas": [...], "ecg": [...], "resp": [...]} of canonical names.
    aliases: raw label → canonical name overrides (None or "" ignores a channel).
    dtype: "float16" (half the disk; fine for normalised signals) or "float32".
    normalise: "robust" ((x - median) / (IQR / 1.349) per channel and recording) or "none" (the
      original: unnormalised).
    units: "physical" (the header's calibrated units), "raw" (the file's digital values: what the
      original fed, see `units`), or {modality or canonical channel: either}.
    resampler: "polyphase" (`signal.resample`, chunked, bounded memory) or "fft" (`signal.
      resample_fft`, the original's MNE FFT resampling over each whole segment).
    alignment: "epoch" (windows start at the annotations' epoch boundaries) or "original" (each
      segment is cut one input sample after its first window's boundary and resampled from there;
      windows start one input sample after each boundary, as the original's extraction does).
    filters: {modality or canonical channel: {"bandpass": [lo, hi], "notch": f0}} zero-phase
      filters at the original rate (a channel entry overrides its modality's). A corner at or above
      a channel's Nyquist frequency is dropped for that channel and noted in the report.
    drop_unscored: drop windows whose stage is excluded/unscored (the original does).
    crop_wake_minutes: if set, keep only the sleep period: from this many minutes before the first
      sleep epoch (N1, N2, N3 or REM) to this many minutes after the last one. Long out-of-bed wake
      (e.g. Sleep-EDF's 22-h recordings) otherwise dominates the windows and inflates staging
      scores. None keeps the whole recording; a recording without sleep epochs is kept whole and
      noted in its report.
    sdb_scored: "auto" (the annotations say whether respiratory events were scored), "yes" or "no".
    sdb_scored_for: {recording id or folder: "auto" | "yes" | "no"} overriding `sdb_scored` for
      one recording, or for every recording whose signal file lies under the folder (the deepest
      folder wins; a recording id wins over folders).
    cohort: a preset of `cohorts.PRESETS` ("shhs", "mesa", "cinc2018", ...) or "": its channel
      labels join `aliases` (yours win) and channels off its expected rates/units are noted.
    workers: recordings processed in parallel (spawned processes; 1 = in this process).
    flat_tol: a window is flat if its peak-to-peak amplitude <= flat_tol x the channel's median one.
    clip_fraction: a window is clipped if more than this fraction of samples sit on the channel's
      extreme values.
    quality_exempt: canonical channels exempt from the flat/clipped tests (legitimately constant or
      bounded traces, e.g. SpO2 at 97-100 %); non-finite samples are still masked.
  """

  sample_rate: int = 256
  window_seconds: float = 30.0
  montage: Any = "standard"
  aliases: dict = dataclasses.field(default_factory=dict)
  dtype: str = "float16"
  normalise: str = "robust"
  filters: dict = dataclasses.field(default_factory=dict)
  drop_unscored: bool = True
  crop_wake_minutes: float | None = None
  sdb_scored: str = "auto"
  sdb_scored_for: dict = dataclasses.field(default_factory=dict)
  cohort: str = ""
  workers: int = 1
  flat_tol: float = 1e-6
  clip_fraction: float = 0.5
  quality_exempt: tuple = ("SpO2",)
  units: Any = "physical"
  resampler: str = "polyphase"
  alignment: str = "epoch"

  def __post_init__(self):
    if self.normalise not in ("robust", "none"):
      raise ValueError(f"normalise must be 'robust' or 'none', got {self.normalise!r}")
    if self.sdb_scored not in ("auto", "yes", "no"):
      raise ValueError(f"sdb_scored must be 'auto', 'yes' or 'no', got {self.sdb_scored!r}")
    bad = {k: v for k, v in self.sdb_scored_for.items() if v not in ("auto", "yes", "no")}
    if bad:
      raise ValueError(f"sdb_scored_for values must be 'auto', 'yes' or 'no', got {bad}")
    if self.cohort:
      cohorts.get(self.cohort)  # validates
    if self.dtype not in ("float16", "float32"):
      raise ValueError(f"dtype must be 'float16' or 'float32', got {self.dtype!r}")
    if self.crop_wake_minutes is not None and self.crop_wake_minutes < 0:
      raise ValueError(f"crop_wake_minutes must be >= 0 or None, got {self.crop_wake_minutes}")
    if self.workers < 1:
      raise ValueError(f"workers must be >= 1, got {self.workers}")
    units_lib.validate(self.units)
    if self.resampler not in RESAMPLERS:
      raise ValueError(f"resampler must be one of {RESAMPLERS}, got {self.resampler!r}")
    if self.alignment not in ALIGNMENTS:
      raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")
    self.quality_exempt = tuple(self.quality_exempt)
    self.get_montage()  # validates

  def get_montage(self) -> Montage:
    if isinstance(self.montage, str):
      if self.montage not in MONTAGES:
        raise ValueError(f"unknown montage {self.montage!r}; one of {sorted(MONTAGES)} or a dict")
      return MONTAGES[self.montage]
    return Montage.from_dict(self.montage)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["montage"] = self.montage if isinstance(self.montage, str) else self.get_montage().to_dict()
    d["quality_exempt"] = list(self.quality_exempt)
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> PreprocessConfig:
    """Builds a config from a dict (e.g. `ConfigDict.to_dict()`); unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise ValueError(f"unknown preprocessing settings {sorted(unknown)}; known: {sorted(names)}")
    return cls(**dict(d))


def _filters_for(cfg: PreprocessConfig, modality: str, name: str) -> dict:
  spec = dict(cfg.filters.get(modality) or {})
  spec.update(cfg.filters.get(name) or {})
  return spec


def _apply_filters(x, fs, spec, notes, label):
  """Band-pass / notch at the original rate; corners the rate cannot carry are dropped (noted)."""
  nyq = fs / 2.0
  band = spec.get("bandpass")
  if band:
    lo, hi = band
    if hi is not None and hi >= nyq:
      notes.append(f"{label}: band-pass high corner {hi} Hz >= Nyquist {nyq} Hz, not applied")
      hi = None
    if lo is not None and lo >= nyq:
      notes.append(f"{label}: band-pass low corner {lo} Hz >= Nyquist {nyq} Hz, not applied")
      lo = None
    if lo is not None or hi is not None:
      x = sig.bandpass(x, fs, lo, hi)
  f0 = spec.get("notch")
  if f0:
    if f0 < nyq:
      x = sig.notch(x, fs, f0)
    else:
      notes.append(f"{label}: notch {f0} Hz >= Nyquist {nyq} Hz, not applied")
  return x


def _plan(rec, ann, cfg: PreprocessConfig):
  """Epochs that become windows, the segment of each, and exclusion counts by reason."""
  n_epochs = ann.n_epochs
  seg_of = np.full(n_epochs, -1, np.int64)
  for s_i, seg in enumerate(rec.segments):
    n_out = int(np.floor(seg.duration * cfg.sample_rate + 1e-6))
    k_lo, k_hi, _, _ = windowing.epoch_range(
        n_out, cfg.sample_rate, seg.start, ann.epoch_onset, n_epochs, cfg.window_seconds)
    seg_of[k_lo:k_hi] = s_i
  inside = seg_of >= 0
  scored = ann.stages >= 0
  keep = inside & (scored | (not cfg.drop_unscored))
  excluded: collections.Counter = collections.Counter()
  if not inside.all():
    excluded[OUTSIDE] += int(np.count_nonzero(~inside))
  if cfg.drop_unscored:
    for k in np.flatnonzero(inside & ~scored):
      excluded[ann_lib.exclusion_reason(ann.stage_raw[k], -1)] += 1
  if cfg.crop_wake_minutes is not None:
    period = sleep_period(ann.stages, cfg.crop_wake_minutes, cfg.window_seconds)
    if period is not None:
      cropped = keep & ~period
      if cropped.any():
        excluded[OUTSIDE_SLEEP.format(cfg.crop_wake_minutes)] += int(np.count_nonzero(cropped))
      keep &= period
  epochs = np.flatnonzero(keep)
  return epochs, seg_of[epochs], excluded


def sleep_period(stages: np.ndarray, margin_minutes: float,
                 window_seconds: float = 30.0) -> np.ndarray | None:
  """Epochs from `margin_minutes` before the first sleep epoch to as long after the last one.

  Sleep epochs are those scored N1, N2, N3 or REM (stage 1-4). Returns a boolean mask over the
  epochs, or None when the recording has no sleep epoch.
  """
  sleep = np.flatnonzero((stages >= 1) & (stages <= 4))
  if not sleep.size:
    return None
  margin = int(round(margin_minutes * 60.0 / window_seconds))
  k = np.arange(stages.size)
  return (k >= sleep[0] - margin) & (k <= sleep[-1] + margin)


def _annotations(spec: discovery.RecordingSpec, rec, cfg: PreprocessConfig, notes: list[str]):
  if spec.annotation_path:
    ann = ann_lib.read_annotations(spec.annotation_path, epoch_len=cfg.window_seconds)
  else:
    try:
      ann = ann_lib.from_records(rec.embedded_annotations, rec.path, epoch_len=cfg.window_seconds)
    except PSGError:
      n = int(np.floor(rec.duration / cfg.window_seconds + 1e-9))
      notes.append("no annotation file and no stage annotations in the signal file: all windows "
                   "unscored")
      ann = ann_lib.Annotations(
          epoch_onset=0.0, stages=np.full(n, -1, np.int8), stage_raw=[NO_ANNOTATIONS] * n,
          excluded={NO_ANNOTATIONS: n} if n else {}, events=[], respiratory_scored=False,
          source="")
  return ann


def process_recording(spec: discovery.RecordingSpec, cfg: PreprocessConfig, writer: StoreWriter) -> dict:
  """Preprocesses one recording into `writer`'s store; returns its report entry.

  Raises:
    PSGError: unreadable file, no channel of the montage, no window to write.
  """
  t0 = time.perf_counter()
  montage = cfg.get_montage()
  notes: list[str] = []
  rec = getattr(spec, "recording", None) or open_recording(spec.signal_path)  # mne_io.MneSpec
  labels = [c.label for c in rec.channels]
  cmap = harmonise(labels, montage, cohorts.merged_aliases(cfg.cohort, cfg.aliases) or None)
  notes.extend(cohorts.check(cfg.cohort, rec.channels, cmap))
  if all(raw is None for m in MODALITIES for raw in cmap.assignments[m]):
    raise PSGError(rec.path, f"no channel matches the montage ({montage.to_dict()}); labels in the "
                   f"file: {labels}")
  info = {c.label: c for c in rec.channels}

  ann = _annotations(spec, rec, cfg, notes)
  n_annotated = ann.n_epochs
  where = os.path.basename(ann.source or rec.path)
  notes.extend(f"{where}: {issue}" for issue in ann.issues)
  ann, cropped = ann_lib.crop_to_duration(ann, rec.duration, cfg.window_seconds)
  cropped_epochs = {k: v for k, v in cropped.items() if not k.startswith("event: ")}
  cropped_events = sum(v for k, v in cropped.items() if k.startswith("event: "))
  if cropped_epochs or cropped_events:
    notes.append(f"{where}: {sum(cropped_epochs.values())} annotated epoch(s) and {cropped_events} "
                 f"event(s) lie outside the signal (0 to {rec.duration:g} s): not used")
  epochs, seg_of, excluded = _plan(rec, ann, cfg)
  if sum(cropped_epochs.values()):
    excluded[CROPPED] += sum(cropped_epochs.values())
  n = int(epochs.size)
  if n == 0:
    raise PSGError(rec.path, f"no complete {cfg.window_seconds:g}-s windows to write "
                   f"(excluded: {dict(excluded)})")
  mode, why = sdb_scored_mode(cfg, spec)
  scored = {"auto": ann.respiratory_scored, "yes": True, "no": False}[mode]
  if not scored:
    notes.append(f"respiratory events not scored ({why}): SDB labels are -1")
  sdb = ann_lib.sdb_labels(ann.events, ann.epoch_onset, ann.n_epochs, cfg.window_seconds,
                           scored=scored)

  samples = int(round(cfg.sample_rate * cfg.window_seconds))
  arrays: dict[str, np.ndarray] = {}
  masked: dict[str, dict[str, int]] = {}
  norm_stats: dict[str, dict] = {}
  channel_errors: dict[str, str] = {}
  saturated = 0
  for m in MODALITIES:
    names = montage.channels(m)
    out = np.zeros((n, len(names), samples), dtype=cfg.dtype)
    mask = np.zeros((n, len(names)), dtype=bool)
    for j, (name, raw) in enumerate(zip(names, cmap.assignments[m], strict=True)):
      if raw is None:
        continue
      try:
        good, reasons, stats, sat = _process_channel(
            rec, raw, info[raw].fs, name, m, ann, epochs, seg_of, out, j, cfg, notes)
      except PSGError as e:
        channel_errors[name] = str(e)
        notes.append(f"{name} ('{raw}') not used: {e}")
        continue
      mask[:, j] = good
      saturated += sat
      masked[name] = {"masked": int(np.count_nonzero(~good)),
                      **{k: int(np.count_nonzero(v)) for k, v in reasons.items()}}
      if stats is not None:
        norm_stats[name] = stats
    arrays[m] = out
    arrays[f"mask_{m}"] = mask
  if not masked:
    raise PSGError(rec.path, f"no montage channel could be read: {channel_errors}")
  arrays["stage"] = ann.stages[epochs]
  arrays["sdb"] = sdb[epochs]
  arrays["epoch"] = epochs.astype(np.int32)
  arrays["start"] = ann.epoch_onset + cfg.window_seconds * epochs.astype(np.float64)

  stage_counts = np.bincount(arrays["stage"][arrays["stage"] >= 0], minlength=len(ann_lib.STAGES))
  missing_modalities = [m for m in MODALITIES
                        if not any(name in masked for name in montage.channels(m))]
  meta = {
      "source": os.path.abspath(spec.signal_path),
      "annotation_source": os.path.abspath(spec.annotation_path) if spec.annotation_path else None,
      "format": rec.format,
      "start_datetime": rec.start_datetime.isoformat() if rec.start_datetime else None,
      "duration": float(rec.duration),
      "epoch_onset": float(ann.epoch_onset),
      "channel_map": cmap.to_dict(),
      "channel_fs": {name: info[raw].fs for m in MODALITIES
                     for name, raw in zip(montage.channels(m), cmap.assignments[m], strict=True)
                     if raw is not None},
      "units": {name: units_lib.for_channel(cfg.units, m, name) for m in MODALITIES
                for name in montage.channels(m) if name in masked},
      "respiratory_scored": bool(scored),
      "stage_counts": dict(zip(ann_lib.STAGES, map(int, stage_counts), strict=True)),
      "missing_modalities": missing_modalities,
      "events": [dataclasses.asdict(e) for e in ann.events],
  }
  entry = writer.write_recording(spec.recording_id, spec.subject_id, arrays, meta)
  return {
      "recording_id": spec.recording_id,
      "subject_id": spec.subject_id,
      "status": "ok",
      "source": meta["source"],
      "annotation_source": meta["annotation_source"],
      "hours": float(rec.duration) / 3600.0,
      "windows": n,
      "epochs_annotated": n_annotated,
      "excluded": dict(sorted(excluded.items())),
      "cropped_labels": cropped_epochs,
      "cropped_events": cropped_events,
      "stage_counts": meta["stage_counts"],
      "sdb_positive": int(np.count_nonzero(arrays["sdb"] == 1)) if scored else None,
      "respiratory_scored": bool(scored),
      "unknown_annotations": dict(ann.unknown),
      "masked_windows": masked,
      "missing_channels": {m: v for m, v in cmap.missing.items() if v},
      "missing_modalities": missing_modalities,
      "ignored_channels": cmap.to_dict()["ignored"],
      "channel_errors": channel_errors,
      "normalisation": norm_stats,
      "float16_saturated_samples": saturated + entry.get("float16_saturated_samples", 0),
      "notes": list(dict.fromkeys(notes)),  # once each, not once per segment
      "seconds": round(time.perf_counter() - t0, 3),
  }


def sdb_scored_mode(cfg: PreprocessConfig, spec: discovery.RecordingSpec) -> tuple[str, str]:
  """("auto" | "yes" | "no", what decided it) for one recording: `sdb_scored_for` by recording id,
  else by the deepest folder holding its signal file, else `sdb_scored`."""
  if spec.recording_id in cfg.sdb_scored_for:
    return cfg.sdb_scored_for[spec.recording_id], f"sdb_scored_for {spec.recording_id!r}"
  signal = pathlib.Path(os.path.abspath(spec.signal_path))
  folders = [(len(pathlib.Path(os.path.abspath(k)).parts), k) for k in cfg.sdb_scored_for
             if pathlib.Path(os.path.abspath(k)) in signal.parents]
  if folders:
    key = max(folders)[1]
    return cfg.sdb_scored_for[key], f"sdb_scored_for {key!r}"
  if cfg.sdb_scored == "auto":
    return "auto", "the annotations say so; sdb_scored_for overrides"
  return cfg.sdb_scored, f"sdb_scored={cfg.sdb_scored!r}"


def _process_channel(rec, raw, fs, name, modality, ann, epochs, seg_of, out, j, cfg, notes):
  """Reads, judges, conditions, resamples and windows one channel into out[:, j]."""
  seg_ids = np.unique(seg_of)
  xs = {int(s): rec.read(raw, int(s)) for s in seg_ids}
  if units_lib.for_channel(cfg.units, modality, name) == "raw":
    gain, offset = rec.digital_scale(raw)
    xs = {s: units_lib.to_digital(x, gain, offset) for s, x in xs.items()}
  rails = None
  if name not in cfg.quality_exempt:
    ranges = [r for r in (windowing.finite_range(x) for x in xs.values()) if r is not None]
    if ranges:
      rails = (min(r[0] for r in ranges), max(r[1] for r in ranges))
  # 1. Quality per window, on the original-rate samples.
  k = epochs.size
  stats = {"nonfinite": np.zeros(k, bool), "ptp": np.zeros(k), "rail_fraction": np.zeros(k)}
  bounds = {}
  for s in seg_ids:
    rows = np.flatnonzero(seg_of == s)
    seg = rec.segments[int(s)]
    x = xs[int(s)]
    lo, hi = windowing.raw_window_bounds(x.size, fs, seg.start, ann.epoch_onset, epochs[rows],
                                         cfg.window_seconds)
    bounds[int(s)] = (rows, lo, hi)
    for b, block in _raw_blocks(x, fs, seg.start, ann, epochs[rows], lo, hi, cfg.window_seconds):
      for key, v in windowing.window_stats(block, rails).items():
        stats[key][rows[b]] = v
  exempt = name in cfg.quality_exempt
  good, reasons = windowing.quality_from_stats(
      stats, flat_tol=cfg.flat_tol, clip_fraction=cfg.clip_fraction, check_flat=not exempt,
      check_clip=not exempt)

  # 2. Statistics for normalisation on the finite samples of good windows, over all segments.
  norm = None
  if cfg.normalise == "robust":
    valid_parts = []
    for s in seg_ids:
      rows, lo, hi = bounds[int(s)]
      v = np.zeros(xs[int(s)].size, bool)
      for r, a, b in zip(rows, lo, hi, strict=True):
        if good[r]:
          v[a:b] = True
      valid_parts.append(v)
    x_all = np.concatenate(list(xs.values())) if len(xs) > 1 else next(iter(xs.values()))
    v_all = np.concatenate(valid_parts) if len(valid_parts) > 1 else valid_parts[0]
    norm = sig.robust_stats(x_all, v_all)
    del x_all, v_all, valid_parts

  # 3. Per segment: fill non-finite samples, filter, normalise, resample, cut windows.
  spec = _filters_for(cfg, modality, name)
  saturated = 0
  for s in seg_ids:
    rows, _, _ = bounds[int(s)]
    x = xs.pop(int(s))
    if not x.flags.writeable or x.dtype != np.float64:
      x = np.array(x, dtype=np.float64)  # modified in place below
    bad = ~np.isfinite(x)
    if bad.any():
      fill = norm["median"] if norm else (np.median(x[~bad]) if (~bad).any() else 0.0)
      x[bad] = fill
    if spec:
      x = _apply_filters(x, fs, spec, notes, name)
    if norm is not None:
      x -= norm["median"]
      x /= norm["scale"]
    y, y_start, onset = _resample(x, fs, rec.segments[int(s)].start, ann.epoch_onset,
                                  int(epochs[rows].min()), cfg)
    del x
    w, ks = windowing.window_signal(y, cfg.sample_rate, y_start, onset, ann.n_epochs,
                                    cfg.window_seconds)
    pos = np.searchsorted(ks, epochs[rows])
    found = (pos < ks.size) & (ks[np.minimum(pos, ks.size - 1)] == epochs[rows]) if ks.size else (
        np.zeros(rows.size, bool))
    p = pos[found]
    contiguous = p.size and p[-1] - p[0] + 1 == p.size
    src = w[p[0]:p[-1] + 1] if contiguous else w[p]  # a view when nothing was dropped
    if cfg.dtype == "float16" and src.size and (src.max() > FLOAT16_MAX or
                                                 src.min() < -FLOAT16_MAX):
      saturated += int(np.count_nonzero(np.abs(src) > FLOAT16_MAX))
      src = np.clip(src, -FLOAT16_MAX, FLOAT16_MAX)
    r = rows[found]
    if r.size and r[-1] - r[0] + 1 == r.size:
      out[r[0]:r[-1] + 1, j] = src
    else:
      out[r, j] = src
    good[rows[~found]] = False  # planned at the output rate but short after resampling (rounding)
    del y, w, src
  if reasons["nonfinite"].any():
    out[reasons["nonfinite"], j] = 0
  return good, reasons, norm, saturated


def _resample(x, fs, seg_start, epoch_onset, first_epoch, cfg):
  """Resamples one segment of a channel; returns (y, time of y[0], onset of epoch 0 in y).

  With alignment "original" the segment is first cut one sample after the boundary of its first
  window (`first_epoch`), and epochs are taken to start one sample after their boundaries, so that
  the output's sample grid starts at the first window, as in the original's extraction.
  """
  if cfg.alignment == "original":
    boundary = (epoch_onset + cfg.window_seconds * first_epoch - seg_start) * fs
    cut = int(np.floor(boundary + 0.5 + 1e-6)) + 1
    x, seg_start, epoch_onset = x[cut:], seg_start + cut / fs, epoch_onset + 1.0 / fs
  resample = sig.resample_fft if cfg.resampler == "fft" else sig.resample
  return resample(x, fs, cfg.sample_rate), seg_start, epoch_onset


def _raw_blocks(x, fs, seg_start, ann, sel, lo, hi, window_s, block=256):
  """Yields (slice into `sel`, [b, T] original-rate windows) for the epochs `sel` of a segment.

  Uses a reshaped view of the segment when the window is a whole number of samples (the usual
  case; rows are then copied block by block), else gathers rounded sample ranges.
  """
  try:
    w, ks = windowing.window_signal(x, fs, seg_start, ann.epoch_onset, ann.n_epochs, window_s)
    pos = np.searchsorted(ks, sel)
    direct = bool(ks.size) and np.array_equal(ks[np.minimum(pos, ks.size - 1)], sel)
  except ValueError:
    direct = False
  width = int(np.min(hi - lo)) if sel.size else 0
  for b in range(0, sel.size, block):
    sl = slice(b, b + block)
    if direct:
      p = pos[sl]
      yield sl, (w[p[0]:p[-1] + 1] if p[-1] - p[0] + 1 == p.size else w[p])
    else:
      yield sl, x[lo[sl, None] + np.arange(width)]


def _run_one(spec: discovery.RecordingSpec, cfg: PreprocessConfig, writer: StoreWriter) -> dict:
  """`process_recording` that never raises: failures become a "skipped" report entry."""
  try:
    return process_recording(spec, cfg, writer)
  except PSGError as e:
    reason, tb = str(e), None
  except Exception as e:  # pylint: disable=broad-except
    reason, tb = f"{spec.signal_path}: {type(e).__name__}: {e}", traceback.format_exc()
  return {"recording_id": spec.recording_id, "subject_id": spec.subject_id, "status": "skipped",
          "source": os.path.abspath(spec.signal_path), "annotation_source": spec.annotation_path,
          "reason": reason, "traceback": tb}


def preprocess(
    specs: Sequence[discovery.RecordingSpec],
    out_dir: str | os.PathLike,
    config: PreprocessConfig | Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    unpaired: Sequence[tuple[str, str]] = (),
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
) -> dict:
  """Preprocesses recordings into a window store at `out_dir`; returns the report.

  Recordings run in `config.workers` spawned processes, each writing its own shard; the index and
  report.json are written at the end. Nothing raises for a bad file: it is listed under "skipped"
  with its reason.

  Args:
    specs: recordings (from `discovery.discover`).
    out_dir: the store folder (must be empty or, with overwrite, an existing store).
    config: a `PreprocessConfig` or a dict of its fields (default settings if None).
    overwrite: replace an existing store at `out_dir`.
    unpaired: files discovery could not pair, (path, reason), copied into the report.
    progress: show a tqdm progress bar.
    on_result: called with each recording's report entry as it completes.

  Returns:
    The report (also written to out_dir/report.json); see docs/store.md.
  """
  cfg = config if isinstance(config, PreprocessConfig) else PreprocessConfig.from_dict(config or {})
  ids = [s.recording_id for s in specs]
  dup = sorted({i for i in ids if ids.count(i) > 1})
  if dup:
    raise ValueError(f"duplicate recording ids: {dup}")
  t0 = time.perf_counter()
  writer = StoreWriter(out_dir, montage=cfg.get_montage(), sample_rate=cfg.sample_rate,
                       window_seconds=cfg.window_seconds, dtype=cfg.dtype,
                       preprocessing=cfg.to_dict(), overwrite=overwrite)
  results: list[dict] = []
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

  bar = tqdm(total=len(specs), desc="preprocess", unit="rec", disable=not progress)

  def done(r: dict) -> None:
    results.append(r)
    bar.update(1)
    bar.set_postfix(ok=sum(x["status"] == "ok" for x in results),
                    skipped=sum(x["status"] != "ok" for x in results))
    if on_result is not None:
      on_result(r)

  if cfg.workers == 1 or len(specs) <= 1:
    for spec in specs:
      done(_run_one(spec, cfg, writer))
  else:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=cfg.workers, mp_context=ctx) as pool:
      futures = {pool.submit(_run_one, spec, cfg, writer): spec for spec in specs}
      for fut in concurrent.futures.as_completed(futures):
        spec = futures[fut]
        try:
          r = fut.result()
        except Exception as e:  # pylint: disable=broad-except  (e.g. a worker killed for memory)
          r = {"recording_id": spec.recording_id, "subject_id": spec.subject_id,
               "status": "skipped", "source": os.path.abspath(spec.signal_path),
               "annotation_source": spec.annotation_path,
               "reason": f"{spec.signal_path}: worker failed: {type(e).__name__}: {e}",
               "traceback": traceback.format_exc()}
        if r["status"] == "ok":
          writer.register(_entry_of(writer, r["recording_id"]))
        done(r)
  bar.close()
  report = summarise(results, cfg, unpaired, time.perf_counter() - t0, os.fspath(out_dir))
  writer.finalize(report)
  return report


def _entry_of(writer: StoreWriter, recording_id: str) -> dict:
  """The index entry a worker wrote next to its shard (recording.json)."""
  import json  # pylint: disable=import-outside-toplevel

  return json.loads((writer.path / "shards" / recording_id / "recording.json").read_text())


def summarise(results: Sequence[dict], cfg: PreprocessConfig, unpaired=(), elapsed: float = 0.0,
              output: str = "") -> dict:
  """Aggregates per-recording report entries into the preprocessing report."""
  results = sorted(results, key=lambda r: r["recording_id"])
  ok = [r for r in results if r["status"] == "ok"]
  skipped = [r for r in results if r["status"] != "ok"]
  excluded: collections.Counter = collections.Counter()
  masked: collections.Counter = collections.Counter()
  stages: collections.Counter = collections.Counter()
  unknown: collections.Counter = collections.Counter()
  for r in ok:
    unknown.update(r.get("unknown_annotations", {}))
    excluded.update(r["excluded"])
    stages.update(r["stage_counts"])
    for name, c in r["masked_windows"].items():
      masked[name] += c["masked"]
  return {
      "format": REPORT_FORMAT,
      "version": 1,
      "output": output,
      "config": cfg.to_dict(),
      "files": {"total": len(results), "ok": len(ok), "skipped": len(skipped),
                "unpaired": sum(not why.startswith(discovery.ALTERNATE) for _, why in unpaired),
                "alternate_annotations": sum(why.startswith(discovery.ALTERNATE)
                                             for _, why in unpaired)},
      "windows": int(sum(r["windows"] for r in ok)),
      "hours": round(sum(r["hours"] for r in ok), 4),
      "elapsed_s": round(elapsed, 3),
      "stage_counts": {s: int(stages[s]) for s in ann_lib.STAGES},
      "excluded": dict(sorted(excluded.items())),
      "masked_windows": dict(sorted(masked.items())),
      "unknown_annotations": dict(sorted(unknown.items())),
      "respiratory_unscored": [r["recording_id"] for r in ok if not r.get("respiratory_scored", 1)],
      "missing_modalities": {r["recording_id"]: r["missing_modalities"] for r in ok
                             if r["missing_modalities"]},
      "skipped": [{k: r[k] for k in ("recording_id", "source", "reason", "traceback")}
                  for r in skipped],
      "unpaired": [{"path": p, "reason": why} for p, why in unpaired],
      "recordings": list(results),
  }


def format_summary(report: Mapping[str, Any]) -> str:
  """A short human-readable summary of a preprocessing report."""
  f = report["files"]
  lines = [
      f"files: {f['ok']} ok, {f['skipped']} skipped, {f.get('unpaired', 0)} unpaired; "
      f"{report['windows']} windows from {report['hours']:.2f} h of PSG in "
      f"{report['elapsed_s']:.1f} s",
      "stages: " + ", ".join(f"{k} {v}" for k, v in report["stage_counts"].items()),
  ]
  if report["excluded"]:
    lines.append("epochs excluded: " +
                 ", ".join(f"{k}: {v}" for k, v in report["excluded"].items()))
  if report["masked_windows"]:
    lines.append("masked windows per channel: " +
                 ", ".join(f"{k} {v}" for k, v in report["masked_windows"].items()))
  if report.get("unknown_annotations"):
    lines.append("unknown annotation labels (kept as 'other', never mapped): " + ", ".join(
        f"{k!r} {v}" for k, v in report["unknown_annotations"].items()))
  if report.get("respiratory_unscored"):
    ids = report["respiratory_unscored"]
    lines.append(f"respiratory events not scored in {len(ids)} recording(s), SDB labels -1 "
                 f"(override with sdb_scored_for): {', '.join(ids[:10])}"
                 + (" ..." if len(ids) > 10 else ""))
  for rid, mods in report["missing_modalities"].items():
    lines.append(f"missing modalities: {rid}: {', '.join(mods)}")
  for s in report["skipped"]:
    lines.append(f"skipped {s['recording_id']}: {s['reason']}")
  for u in report["unpaired"]:
    if not u["reason"].startswith(discovery.ALTERNATE):
      lines.append(f"unpaired {u['path']}: {u['reason']}")
  preferred = sum("NSRR XML is preferred" in u["reason"] for u in report["unpaired"])
  if preferred:
    lines.append(f"{preferred} Profusion XML file(s) not used: the recording's NSRR XML is "
                 "preferred")
  if f.get("alternate_annotations"):
    lines.append(f"{f['alternate_annotations']} alternate annotation file(s) not used: another "
                 "file of the same recording's annotations was preferred (listed in report.json)")
  return "\n".join(lines)
