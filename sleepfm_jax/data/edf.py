"""EDF, EDF+C and EDF+D signal files, validated up front and read lazily one channel at a time.

The header is parsed and checked here, byte by byte, before anything else touches the file:
real-world EDFs are often truncated (a recorder that crashed), carry a record count of -1 (never
finalised), or have stray trailing bytes, and a clear `PSGError` is more useful than a reader that
silently "fixes" the header. Samples are then read through edfio's lazy loader (a memory map of the
data records), so opening costs a few kilobytes and `read(label)` touches only that channel's
bytes.

EDF+D (discontinuous) files say in their first "EDF Annotations" signal, for every data record, when
that record starts (the timekeeping annotation). edfio only reports whether a file is continuous, so
the record onsets are parsed here from those raw bytes and grouped into `Segment`s.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import warnings

import edfio
import numpy as np

from sleepfm_jax.data.errors import PSGError
from sleepfm_jax.data.types import ChannelInfo, Segment

ANNOTATION_LABEL = "EDF Annotations"

_FIXED_FIELDS = (
    ("version", 8), ("patient", 80), ("recording", 80), ("startdate", 8), ("starttime", 8),
    ("header_bytes", 8), ("reserved", 44), ("num_records", 8), ("record_duration", 8),
    ("num_signals", 4),
)
_SIGNAL_FIELDS = (
    ("label", 16), ("transducer", 80), ("physical_dimension", 8), ("physical_min", 8),
    ("physical_max", 8), ("digital_min", 8), ("digital_max", 8), ("prefiltering", 80),
    ("samples_per_record", 8), ("reserved", 32),
)
# Onset of a time-stamped annotation list (TAL): "+123.5" or "-0.2", then \x15 (duration) or \x14.
_TAL_ONSET = re.compile(rb"([+-]\d+(?:\.\d*)?)[\x14\x15]")


@dataclasses.dataclass(frozen=True)
class EdfSignalHeader:
  """One signal's header fields, plus where its samples sit inside a data record."""

  label: str
  physical_dimension: str
  physical_min: float
  physical_max: float
  digital_min: int
  digital_max: int
  samples_per_record: int
  offset: int  # in 2-byte samples from the start of a data record

  @property
  def is_annotation(self) -> bool:
    return self.label == ANNOTATION_LABEL


@dataclasses.dataclass(frozen=True)
class EdfHeader:
  """A validated EDF header.

  Attributes:
    format: "edf", "edf+c" or "edf+d".
    num_records: data records in the file (inferred from the file size when the header says -1).
    record_duration: seconds per data record (0 for annotation-only files such as hypnograms).
    header_bytes: bytes before the first data record.
    record_samples: 2-byte samples per data record (all signals).
    signals: every signal, annotation signals included, in file order.
    warnings: harmless oddities found while validating (trailing bytes, inferred record count).
  """

  format: str
  num_records: int
  record_duration: float
  header_bytes: int
  record_samples: int
  signals: tuple[EdfSignalHeader, ...]
  warnings: tuple[str, ...]
  startdate: str = ""  # "dd.mm.yy" as written
  starttime: str = ""  # "hh.mm.ss" as written
  recording_field: str = ""  # local recording identification (EDF+: "Startdate dd-MMM-yyyy ...")

  @property
  def ordinary_signals(self) -> tuple[EdfSignalHeader, ...]:
    return tuple(s for s in self.signals if not s.is_annotation)

  @property
  def annotation_signals(self) -> tuple[EdfSignalHeader, ...]:
    return tuple(s for s in self.signals if s.is_annotation)


def _text(raw: bytes) -> str:
  # EDF demands ASCII; real files sometimes carry Latin-1 in free-text fields. Never fail on those.
  return raw.decode("latin-1").strip()


def _number(path: str, raw: bytes, field: str, kind: type, channel: str | None = None):
  text = _text(raw)
  try:
    value = float(text)
    if kind is int:
      if not value.is_integer():
        raise ValueError(text)
      value = int(value)
    return value
  except ValueError:
    raise PSGError(path, f"header field '{field}' is not a number: {text!r}", channel) from None


def read_edf_header(path: str | os.PathLike) -> EdfHeader:
  """Reads and validates an EDF/EDF+ header against the file size (reads no samples).

  Raises:
    PSGError: missing or empty file, not an EDF file (incl. BDF), malformed header fields, a
      truncated file, a record count that disagrees with the file size, or an EDF+ file without an
      "EDF Annotations" signal.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise PSGError(path, "file not found")
  size = os.path.getsize(path)
  if size == 0:
    raise PSGError(path, "empty file (0 bytes)")
  with open(path, "rb") as f:
    fixed = f.read(256)
    if fixed.startswith(b"\xffBIOSEMI"):
      raise PSGError(path, "BDF (24-bit) files are not supported; convert them to EDF")
    if fixed[:8] != b"0       ":
      raise PSGError(path, f"not an EDF file (version field {fixed[:8]!r}, expected b'0       ')")
    if len(fixed) < 256:
      raise PSGError(path, f"truncated header: {size} bytes, an EDF header needs at least 256")
    fields, pos = {}, 0
    for name, width in _FIXED_FIELDS:
      fields[name] = fixed[pos : pos + width]
      pos += width
    num_signals = _number(path, fields["num_signals"], "number of signals", int)
    header_bytes = _number(path, fields["header_bytes"], "number of bytes in header", int)
    if num_signals <= 0:
      raise PSGError(path, f"header declares {num_signals} signals")
    if header_bytes != 256 * (num_signals + 1):
      raise PSGError(
          path,
          f"header size field says {header_bytes} bytes but {num_signals} signals need "
          f"{256 * (num_signals + 1)}",
      )
    if size < header_bytes:
      raise PSGError(path, f"truncated header: {size} bytes, the header alone needs {header_bytes}")
    raw_signals = f.read(256 * num_signals)

  columns = {}
  pos = 0
  for name, width in _SIGNAL_FIELDS:
    columns[name] = [
        raw_signals[pos + i * width : pos + (i + 1) * width] for i in range(num_signals)
    ]
    pos += width * num_signals
  signals, offset = [], 0
  for i in range(num_signals):
    label = _text(columns["label"][i])
    spr = _number(path, columns["samples_per_record"][i], "samples per record", int, label)
    if spr < 0:
      raise PSGError(path, f"negative samples per data record ({spr})", label)
    is_ann = label == ANNOTATION_LABEL
    signals.append(
        EdfSignalHeader(
            label=label,
            physical_dimension=_text(columns["physical_dimension"][i]),
            physical_min=0.0 if is_ann else _number(
                path, columns["physical_min"][i], "physical minimum", float, label),
            physical_max=0.0 if is_ann else _number(
                path, columns["physical_max"][i], "physical maximum", float, label),
            digital_min=0 if is_ann else _number(
                path, columns["digital_min"][i], "digital minimum", int, label),
            digital_max=0 if is_ann else _number(
                path, columns["digital_max"][i], "digital maximum", int, label),
            samples_per_record=spr,
            offset=offset,
        )
    )
    offset += spr

  reserved = _text(fields["reserved"])
  fmt = "edf"
  if reserved.startswith("EDF+"):
    fmt = "edf+d" if reserved.startswith("EDF+D") else "edf+c"
  if fmt != "edf" and not any(s.is_annotation for s in signals):
    raise PSGError(path, f"{fmt.upper()} file without an '{ANNOTATION_LABEL}' signal")

  record_duration = _number(path, fields["record_duration"], "data record duration", float)
  if record_duration < 0 or not np.isfinite(record_duration):
    raise PSGError(path, f"invalid data record duration {record_duration}")
  if record_duration == 0 and any(s.samples_per_record for s in signals if not s.is_annotation):
    raise PSGError(path, "data record duration is 0 but the file has signal samples")
  record_bytes = 2 * offset
  if record_bytes == 0:
    raise PSGError(path, "data records are empty (0 samples per record in every signal)")

  notes = []
  data_bytes = size - header_bytes
  num_records = _number(path, fields["num_records"], "number of data records", int)
  whole, extra = divmod(data_bytes, record_bytes)
  if num_records == -1:
    if extra or whole == 0:
      raise PSGError(
          path,
          f"header record count is -1 (recording never finalised) and the {data_bytes} data bytes "
          f"are not a whole number of {record_bytes}-byte records",
      )
    num_records = whole
    notes.append(f"header record count is -1; inferred {whole} records from the file size")
  elif num_records <= 0:
    raise PSGError(path, f"header declares {num_records} data records")
  else:
    expected = num_records * record_bytes
    if data_bytes < expected:
      raise PSGError(
          path,
          f"truncated file: header declares {num_records} data records ({expected} bytes) but "
          f"only {data_bytes} data bytes are present ({whole} complete records)",
      )
    if whole > num_records:
      raise PSGError(
          path,
          f"header declares {num_records} data records but the file holds {whole} "
          f"({record_bytes} bytes each)",
      )
    if extra:
      notes.append(f"ignored {extra} trailing byte(s) after the last data record")
  return EdfHeader(
      format=fmt,
      num_records=num_records,
      record_duration=record_duration,
      header_bytes=header_bytes,
      record_samples=offset,
      signals=tuple(signals),
      warnings=tuple(notes),
      startdate=_text(fields["startdate"]),
      starttime=_text(fields["starttime"]),
      recording_field=_text(fields["recording"]),
  )


def _open_edfio(path: str) -> edfio.Edf:
  with warnings.catch_warnings():
    # The header was validated above; edfio would only repeat the trailing-bytes note.
    warnings.simplefilter("ignore")
    try:
      return edfio.read_edf(path, lazy_load_data=True, header_encoding="latin-1")
    except Exception as e:  # edfio raises several types for malformed headers.
      raise PSGError(path, f"edfio cannot read the header: {e}") from e


def record_onsets(
    path: str | os.PathLike, header: EdfHeader, num_records: int | None = None
) -> np.ndarray:
  """Start of each data record in seconds, from the EDF+ timekeeping annotations.

  The first TAL of each record of the first "EDF Annotations" signal holds that record's onset
  relative to the header start time. Only that signal's bytes of the first `num_records` records
  (default: all) are read.
  """
  path = os.fspath(path)
  tk = header.annotation_signals[0]
  n = header.num_records if num_records is None else min(num_records, header.num_records)
  data = np.memmap(
      path, dtype=np.uint8, mode="r", offset=header.header_bytes,
      shape=(n, 2 * header.record_samples),
  )
  chunk = np.array(data[:, 2 * tk.offset : 2 * (tk.offset + tk.samples_per_record)])
  del data
  onsets = np.empty(n)
  for i, raw in enumerate(chunk):
    m = _TAL_ONSET.match(raw.tobytes())
    if m is None:
      raise PSGError(path, f"data record {i} has no timekeeping annotation", ANNOTATION_LABEL)
    onsets[i] = float(m.group(1))
  return onsets


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def start_datetime(header: EdfHeader, first_onset: float = 0.0) -> datetime.datetime | None:
  """The recording start from the header (None if anonymised or malformed).

  EDF writes a 2-digit year (85-99 → 19xx, 00-84 → 20xx); EDF+ also writes the 4-digit year in
  the recording field ("Startdate 24-APR-1989"), which wins when present. EDF+ files may start a
  fraction of a second after the header time: that offset is the first record's onset, and times in
  the file are relative to the header time plus it.
  """
  try:
    day, month, yy = (int(x) for x in header.startdate.split("."))
    hh, mm, ss = (int(x) for x in header.starttime.split("."))
    year = 1900 + yy if yy >= 85 else 2000 + yy
    parts = header.recording_field.split()
    if len(parts) > 1 and parts[0] == "Startdate":
      d, mon, y = parts[1].split("-")
      if mon.upper() in _MONTHS and int(d) == day and _MONTHS.index(mon.upper()) + 1 == month:
        year = int(y)
    start = datetime.datetime(year, month, day, hh, mm, ss)
  except ValueError:
    return None
  return start + datetime.timedelta(seconds=first_onset)


def segments_from_onsets(
    path: str, onsets: np.ndarray, record_duration: float
) -> tuple[list[Segment], list[tuple[int, int]]]:
  """Groups data records into contiguous segments.

  Returns:
    (segments, record ranges): times relative to the first record's onset, and for each segment
    the half-open range of data-record indices it spans.
  """
  rel = onsets - onsets[0]
  tol = 1e-6 * max(1.0, record_duration)
  segments, ranges, first = [], [], 0
  for i in range(1, len(rel) + 1):
    if i < len(rel):
      step = rel[i] - rel[i - 1]
      if step < record_duration - tol:
        raise PSGError(
            path,
            f"data record {i} starts at {rel[i]:.6f} s, before record {i - 1} ends "
            f"({rel[i - 1] + record_duration:.6f} s)",
            ANNOTATION_LABEL,
        )
      if step <= record_duration + tol:
        continue
    segments.append(Segment(float(rel[first]), (i - first) * record_duration))
    ranges.append((first, i))
    first = i
  return segments, ranges


class EdfRecording:
  """An EDF/EDF+ file opened lazily; satisfies `RawRecording`.

  Construction reads and validates the header (and, for EDF+D, the timekeeping annotations).
  Samples are read per channel and segment by `read`, through a memory map that lives only for
  that call. Holds no open file, so it is cheap to pickle.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    self.header = read_edf_header(self.path)
    self.format = self.header.format
    self.warnings = list(self.header.warnings)
    h = self.header
    self._ordinary = h.ordinary_signals
    self.channels = [
        ChannelInfo(
            label=s.label,
            fs=s.samples_per_record / h.record_duration if h.record_duration else 0.0,
            unit=s.physical_dimension,
            n_samples=s.samples_per_record * h.num_records,
        )
        for s in self._ordinary
    ]
    first_onset = 0.0
    if self.format == "edf+d":
      onsets = record_onsets(self.path, h)
      self.segments, self._record_ranges = segments_from_onsets(
          self.path, onsets, h.record_duration
      )
      first_onset = float(onsets[0])
    else:
      self.segments = [Segment(0.0, h.num_records * h.record_duration)]
      self._record_ranges = [(0, h.num_records)]
      if h.annotation_signals:
        try:  # only the sub-second start offset depends on it: tolerate a malformed first TAL.
          first_onset = float(record_onsets(self.path, h, num_records=1)[0])
        except PSGError as e:
          self.warnings.append(f"start offset unknown, using 0: {e.message}")
    self.duration = self.segments[-1].end
    self.start_datetime = start_datetime(h, first_onset)
    self._embedded: list[tuple[float, float, str]] | None = None

  def __repr__(self) -> str:
    return (
        f"EdfRecording({self.path!r}, format={self.format!r}, channels={len(self.channels)}, "
        f"duration={self.duration:g} s, segments={len(self.segments)})"
    )

  @property
  def embedded_annotations(self) -> list[tuple[float, float, str]]:
    """EDF+ annotations stored in this file (timekeeping excluded), onset-sorted; [] for EDF."""
    if self._embedded is None:
      if not self.header.annotation_signals:
        self._embedded = []
      else:
        try:
          anns = _open_edfio(self.path).annotations
        except ValueError as e:
          raise PSGError(self.path, f"malformed annotations: {e}", ANNOTATION_LABEL) from e
        self._embedded = [(a.onset, a.duration or 0.0, a.text) for a in anns]
    return self._embedded

  def _signal_index(self, label: str) -> int:
    for i, s in enumerate(self._ordinary):
      if s.label == label:
        return i
    raise PSGError(
        self.path, f"no such channel; the file has {[s.label for s in self._ordinary]}", label
    )

  def read(self, label: str, segment: int = 0) -> np.ndarray:
    """Reads one channel of one segment in physical units (float64).

    Raises:
      PSGError: unknown label or segment, or a channel whose physical or digital range is empty
        (minimum == maximum, so samples cannot be scaled).
    """
    i = self._signal_index(label)
    s = self._ordinary[i]
    if s.samples_per_record == 0:
      raise PSGError(self.path, "channel has 0 samples per data record", label)
    if s.physical_min == s.physical_max:
      raise PSGError(self.path, f"physical minimum == maximum ({s.physical_min:g})", label)
    if s.digital_min >= s.digital_max:
      raise PSGError(
          self.path, f"digital minimum {s.digital_min} >= maximum {s.digital_max}", label
      )
    if not 0 <= segment < len(self.segments):
      raise PSGError(
          self.path, f"segment {segment} out of range (file has {len(self.segments)})", label
      )
    r0, r1 = self._record_ranges[segment]
    dur = self.header.record_duration
    # A fresh edfio object per read: its memory map (and the page-cache pages mapped while reading
    # this channel) is released when the read returns, so reading channel after channel does not
    # accumulate mapped pages. Re-parsing the header costs about a millisecond.
    signal = _open_edfio(self.path).signals[i]
    digital = signal.get_digital_slice(r0 * dur, r1 * dur)
    del signal
    gain = (s.physical_max - s.physical_min) / (s.digital_max - s.digital_min)
    out = digital.astype(np.float64)
    out -= s.digital_min
    out *= gain
    out += s.physical_min
    return out

  def digital_scale(self, label: str) -> tuple[float, float]:
    """(gain, offset) with digital = physical * gain + offset, from the physical and digital
    ranges of the header (the inverse of `read`'s scaling)."""
    s = self._ordinary[self._signal_index(label)]
    if s.physical_min == s.physical_max or s.digital_min >= s.digital_max:
      raise PSGError(self.path, "empty physical or digital range: no calibration", label)
    gain = (s.digital_max - s.digital_min) / (s.physical_max - s.physical_min)
    return gain, s.digital_min - s.physical_min * gain
