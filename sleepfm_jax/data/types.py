"""Types shared by the PSG readers and everything downstream of them (numpy only).

`ChannelInfo` and `Segment` describe what a signal file holds; `RawRecording` is the protocol that
every reader (`edf.EdfRecording`, `wfdb_io.WfdbRecording`) satisfies and `recording.open_recording`
returns. The readers import these types from here, and `recording` imports the readers, so the
three modules form a line, not a circle.

Times are seconds from the recording's start (the header start time). A recording consists of one
or more `Segment`s of contiguous signal: plain EDF, EDF+C and WFDB files have exactly one, starting
at 0; discontinuous EDF+D files have one per stretch between gaps, so that 30-s windows can be cut
inside a segment and never straddle a gap.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Protocol, runtime_checkable

import numpy as np


@dataclasses.dataclass(frozen=True)
class ChannelInfo:
  """Header facts about one signal channel.

  Attributes:
    label: the channel label exactly as in the file (whitespace-trimmed).
    fs: sampling rate in Hz.
    unit: physical unit as written in the file ("uV", "mV", "%", or "").
    n_samples: samples in the whole recording (all segments together).
  """

  label: str
  fs: float
  unit: str
  n_samples: int


@dataclasses.dataclass(frozen=True)
class Segment:
  """A contiguous stretch of signal, in seconds from the recording start."""

  start: float
  duration: float

  @property
  def end(self) -> float:
    return self.start + self.duration


@runtime_checkable
class RawRecording(Protocol):
  """What every reader returns; see `EdfRecording` and `WfdbRecording`.

  Attributes:
    path: the file that was opened (the `.edf` or the `.hea`).
    format: "edf", "edf+c", "edf+d" or "wfdb".
    start_datetime: the header start date and time, or None when the header has none (anonymised).
    duration: seconds from the recording start to the end of the last segment.
    channels: the signal channels (EDF+ annotation signals excluded), in file order.
    segments: contiguous stretches of signal, in time order.
    embedded_annotations: (onset, duration, text) annotations stored in the signal file itself
      (EDF+ only; duration 0.0 when the file gives none).
    warnings: harmless oddities found while opening (e.g. trailing bytes), for reports.
  """

  path: str
  format: str
  start_datetime: datetime.datetime | None
  duration: float
  channels: list[ChannelInfo]
  segments: list[Segment]
  warnings: list[str]

  @property
  def embedded_annotations(self) -> list[tuple[float, float, str]]: ...

  def read(self, label: str, segment: int = 0) -> np.ndarray:
    """Returns one channel of one segment in physical units (float64, NaN where invalid)."""
    ...

  def digital_scale(self, label: str) -> tuple[float, float]:
    """(gain, offset) with digital = physical * gain + offset: the header's calibration."""
    ...
