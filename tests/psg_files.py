"""Small EDF files for tests: valid ones written with edfio, and byte-level edits of them.

Kept beside the tests (not in the package): the edits deliberately produce broken files.
"""

from __future__ import annotations

import pathlib

import edfio
import numpy as np

# Byte offsets of fixed EDF header fields.
HEADER_FIELDS = {
    "version": (0, 8), "header_bytes": (184, 8), "reserved": (192, 44),
    "num_records": (236, 8), "record_duration": (244, 8), "num_signals": (252, 4),
}
# Per-signal header fields: (offset of the block within the signal headers, width).
SIGNAL_FIELDS = {
    "label": (0, 16), "physical_min": (104, 8), "physical_max": (112, 8),
    "digital_min": (120, 8), "digital_max": (128, 8), "samples_per_record": (216, 8),
}


def write_edf(
    path: pathlib.Path,
    channels: dict[str, tuple[float, np.ndarray]],
    record_duration: float = 1.0,
    annotations: list[tuple[float, float | None, str]] | None = None,
) -> pathlib.Path:
  """Writes `channels` (label -> (fs, physical data)) as EDF (EDF+C if annotations are given)."""
  signals = [
      edfio.EdfSignal(data, sampling_frequency=fs, label=label, physical_dimension="uV")
      for label, (fs, data) in channels.items()
  ]
  anns = None
  if annotations is not None:
    anns = [edfio.EdfAnnotation(o, d, t) for o, d, t in annotations]
  edfio.Edf(signals, data_record_duration=record_duration, annotations=anns).write(path)
  return path


def set_field(path: pathlib.Path, field: str, value: str | bytes, signal: int | None = None,
              num_signals: int | None = None) -> None:
  """Overwrites one header field (a fixed field, or a per-signal field of signal `signal`)."""
  raw = bytearray(path.read_bytes())
  if signal is None:
    offset, width = HEADER_FIELDS[field]
  else:
    block, width = SIGNAL_FIELDS[field]
    offset = 256 + block * num_signals + width * signal
  value = value.encode() if isinstance(value, str) else value
  raw[offset : offset + width] = value.ljust(width)[:width]
  path.write_bytes(bytes(raw))


def header_info(path: pathlib.Path) -> tuple[int, int, int]:
  """(header bytes, number of signals, bytes per data record)."""
  raw = path.read_bytes()
  ns = int(raw[252:256])
  spr = [int(raw[256 + 216 * ns + 8 * i : 256 + 216 * ns + 8 * (i + 1)]) for i in range(ns)]
  return 256 * (ns + 1), ns, 2 * sum(spr)


def make_discontinuous(path: pathlib.Path, onsets: list[float],
                       annotations: list[tuple[float, str]] = ()) -> None:
  """Turns an EDF+C file into EDF+D whose data records start at `onsets` (seconds).

  Each record's "EDF Annotations" bytes are rewritten: the timekeeping TAL with the new onset,
  then any `annotations` (onset, text) that fall into that record.
  """
  header_bytes, ns, record_bytes = header_info(path)
  raw = bytearray(path.read_bytes())
  labels = [raw[256 + 16 * i : 256 + 16 * (i + 1)].decode().strip() for i in range(ns)]
  spr = [int(raw[256 + 216 * ns + 8 * i : 256 + 216 * ns + 8 * (i + 1)]) for i in range(ns)]
  ann = labels.index("EDF Annotations")
  start = 2 * sum(spr[:ann])
  width = 2 * spr[ann]
  num_records = (len(raw) - header_bytes) // record_bytes
  assert num_records == len(onsets), (num_records, onsets)
  for i, onset in enumerate(onsets):
    tal = f"+{onset:g}\x14\x14\x00".encode()
    for t, text in annotations:
      if onset <= t < onset + 1e-9 + (onsets[i + 1] - onset if i + 1 < len(onsets) else 1e9):
        tal += f"+{t:g}\x14{text}\x14\x00".encode()
    assert len(tal) <= width, "annotation signal too narrow for the new TALs"
    pos = header_bytes + i * record_bytes + start
    raw[pos : pos + width] = tal.ljust(width, b"\x00")
  raw[192:236] = b"EDF+D".ljust(44)
  path.write_bytes(bytes(raw))
