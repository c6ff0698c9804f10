"""MNE interop: an `mne.io.Raw` (with optional `mne.Annotations`) as a `RawRecording`.

YASA and MNE users hold a night as a Raw object. `MneRecording(raw, annotations)` lets
preprocessing (and `sleepfm_jax.embed`) read it like a file: one segment at the Raw's rate (MNE
holds every channel at one rate; its EDF reader upsamples slower channels on reading), samples in
the units the source file used (MNE keeps volts; the EDF reader's original units are restored, so
a Raw read from an EDF gives that EDF's numbers; other voltage channels come back in uV), and the
annotations as `embedded_annotations` (seconds from the first sample). mne itself is never imported
here: it stays an optional dependency.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from typing import Any

import numpy as np

from sleepfm_jax.data.discovery import RecordingSpec, recording_id_for, subject_id_for
from sleepfm_jax.data.recording import ChannelInfo, Segment

_FIFF_UNIT_V = 107
_VOLT_SCALE = {"v": 1.0, "mv": 1e3, "uv": 1e6, "µv": 1e6, "μv": 1e6, "nv": 1e9}


def is_raw(obj: Any) -> bool:
  """Whether `obj` is an MNE Raw object (checked without importing mne)."""
  return any(c.__module__.startswith("mne.") and c.__name__ == "BaseRaw"
             for c in type(obj).__mro__)


def are_raws(obj: Any) -> bool:
  """Whether `obj` is a Raw or a non-empty list/tuple of Raws (what `specs_for` takes)."""
  return is_raw(obj) or (isinstance(obj, (list, tuple)) and bool(obj)
                         and all(is_raw(o) for o in obj))


def _units(raw) -> list[tuple[float, str]]:
  """(factor from MNE's values to the reported unit, unit) per channel."""
  orig = getattr(raw, "_orig_units", None) or {}
  out = []
  for ch in raw.info["chs"]:
    volts = int(ch["unit"]) == _FIFF_UNIT_V
    unit = orig.get(ch["ch_name"])
    if unit is None:
      out.append((1e6, "uV") if volts else (1.0, ""))
    elif volts and unit.strip().lower() in _VOLT_SCALE:
      out.append((_VOLT_SCALE[unit.strip().lower()], unit.strip()))
    else:  # a non-voltage unit the reader left unscaled (e.g. "%"; MNE writes "n/a" for none)
      out.append((1.0, "" if unit.strip().lower() == "n/a" else unit.strip()))
  return out


def _seconds_from_start(raw, annotations) -> np.ndarray:
  """Annotation onsets in seconds from the Raw's first sample."""
  onset = np.asarray(annotations.onset, np.float64)
  if annotations.orig_time is None:  # already relative to the first sample
    return onset
  meas = raw.info["meas_date"]
  shift = (annotations.orig_time - meas).total_seconds() if meas is not None else 0.0
  return onset + shift - raw.first_samp / raw.info["sfreq"]


class MneRecording:
  """An `mne.io.Raw` seen as a `RawRecording` (format "mne")."""

  format = "mne"

  def __init__(self, raw, annotations=None, name: str | None = None):
    if not is_raw(raw):
      raise TypeError(f"expected an mne.io.Raw, got {type(raw).__name__}")
    self.raw = raw
    files = [f for f in (getattr(raw, "filenames", None) or []) if f]
    self.path = str(name or (files[0] if files else "mne.io.Raw"))
    fs = float(raw.info["sfreq"])
    self._scale = _units(raw)
    self.channels = [ChannelInfo(label.strip(), fs, unit, int(raw.n_times))
                     for label, (_, unit) in zip(raw.ch_names, self._scale, strict=True)]
    self.duration = raw.n_times / fs
    self.segments = [Segment(0.0, self.duration)]
    meas = raw.info["meas_date"]
    self.start_datetime = meas.replace(tzinfo=None) if isinstance(meas, datetime.datetime) else None
    self.warnings: list[str] = []
    self._annotations = raw.annotations if annotations is None else annotations

  def __repr__(self) -> str:
    return (f"MneRecording({self.path!r}, channels={len(self.channels)}, "
            f"duration={self.duration:g} s)")

  @property
  def embedded_annotations(self) -> list[tuple[float, float, str]]:
    a = self._annotations
    if a is None or len(a) == 0:
      return []
    onset = _seconds_from_start(self.raw, a)
    return [(float(o), float(d), str(t))
            for o, d, t in zip(onset, a.duration, a.description, strict=True)]

  def digital_scale(self, label: str) -> tuple[float, float]:
    """A Raw keeps no ADC calibration: `units="raw"` needs the file itself."""
    from sleepfm_jax.data.errors import PSGError  # pylint: disable=import-outside-toplevel

    raise PSGError(self.path, "an mne.io.Raw carries no ADC calibration (digital values): "
                   "units='raw' needs the signal file", label)

  def read(self, label: str, segment: int = 0) -> np.ndarray:
    from sleepfm_jax.data.errors import PSGError  # pylint: disable=import-outside-toplevel

    labels = [c.label for c in self.channels]
    if label not in labels:
      raise PSGError(self.path, f"no such channel; the Raw has {labels}", label)
    if segment != 0:
      raise PSGError(self.path, f"segment {segment} out of range (a Raw has 1)", label)
    i = labels.index(label)
    x = np.asarray(self.raw.get_data(picks=[i])[0], dtype=np.float64)
    return x * self._scale[i][0]


@dataclasses.dataclass(frozen=True)
class MneSpec(RecordingSpec):
  """A `RecordingSpec` whose recording is already open (preprocessing reads `recording`)."""

  recording: MneRecording | None = dataclasses.field(default=None, compare=False, repr=False)


def specs_for(raws: Any, annotations: Any = None) -> list[MneSpec]:
  """Recording specs for one Raw or a sequence of them (and their annotations, if given)."""
  raws = [raws] if is_raw(raws) else list(raws)
  if annotations is None or not isinstance(annotations, Sequence):
    annotations = [annotations] * len(raws)
  if len(annotations) != len(raws):
    raise ValueError(f"{len(raws)} Raw objects but {len(annotations)} annotations")
  specs = []
  for k, (raw, ann) in enumerate(zip(raws, annotations, strict=True)):
    rec = MneRecording(raw, ann)
    from_file = rec.path != "mne.io.Raw"
    rid = recording_id_for(rec.path) if from_file else ("raw" if len(raws) == 1 else f"raw-{k}")
    specs.append(MneSpec(rid, subject_id_for(rid), rec.path, None, recording=rec))
  ids = [s.recording_id for s in specs]
  if len(set(ids)) != len(ids):
    specs = [dataclasses.replace(s, recording_id=f"{s.recording_id}-{k}")
             for k, s in enumerate(specs)]
  return specs
