"""WFDB records (PhysioNet `.hea` header + `.dat` signal files), read lazily one channel at a time.

Opening parses the header with `wfdb.rdheader` (no samples) and checks that every signal file the
header names exists and is long enough. `read(label)` then reads that channel in blocks of samples
(`wfdb.rdrecord(..., sampfrom, sampto, channels=[i])`), so memory stays bounded by one block of all
channels interleaved in the `.dat` file plus the one channel being returned.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import warnings

import numpy as np

with warnings.catch_warnings():  # wfdb 4.3 warns about pandas deprecations on import.
  warnings.filterwarnings("ignore", message="The inplace keyword")
  import wfdb
  from wfdb.io import _signal as wfdb_signal

from sleepfm_jax.data.errors import PSGError
from sleepfm_jax.data.types import ChannelInfo, Segment

# Frames read per `rdrecord` call: bounds peak memory to this many frames of every channel.
_BLOCK_FRAMES = 1 << 20


@contextlib.contextmanager
def quiet_wfdb():
  """Silences wfdb 4.3's pandas deprecation warnings (its own code, nothing we can act on)."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="The inplace keyword")
    yield


def _record_name(path: str) -> str:
  return path[:-4] if path.lower().endswith(".hea") else path


class WfdbRecording:
  """A single-segment WFDB record opened lazily; satisfies `RawRecording`.

  `path` is the `.hea` file. Invalid samples (WFDB's "missing value" codes) read as NaN.
  """

  format = "wfdb"

  def __init__(self, path: str | os.PathLike):
    path = os.fspath(path)
    self.record_name = _record_name(path)
    self.path = self.record_name + ".hea"
    if not os.path.isfile(self.path):
      raise PSGError(self.path, "file not found")
    if os.path.getsize(self.path) == 0:
      raise PSGError(self.path, "empty file (0 bytes)")
    try:
      with quiet_wfdb():
        header = wfdb.rdheader(self.record_name)
    except Exception as e:  # wfdb raises several types for malformed headers.
      raise PSGError(self.path, f"cannot parse WFDB header: {e}") from e
    if isinstance(header, wfdb.MultiRecord) or getattr(header, "seg_name", None):
      raise PSGError(self.path, "multi-segment WFDB records are not supported")
    if not header.n_sig or not header.sig_name:
      raise PSGError(self.path, "WFDB header lists no signals")
    if not header.sig_len:
      raise PSGError(self.path, "WFDB header gives no signal length (0 samples)")
    self._header = header
    self.warnings: list[str] = []
    spf = [int(s or 1) for s in (header.samps_per_frame or [1] * header.n_sig)]
    self._spf = spf
    units = header.units or [""] * header.n_sig
    self.channels = [
        ChannelInfo(
            label=name.strip(), fs=float(header.fs) * k, unit=(u or "").strip(),
            n_samples=int(header.sig_len) * k,
        )
        for name, k, u in zip(header.sig_name, spf, units, strict=True)
    ]
    self.duration = float(header.sig_len) / float(header.fs)
    self.segments = [Segment(0.0, self.duration)]
    self.start_datetime: datetime.datetime | None = None
    if header.base_date is not None and header.base_time is not None:
      self.start_datetime = datetime.datetime.combine(header.base_date, header.base_time)
    self._check_signal_files()

  def __repr__(self) -> str:
    return (
        f"WfdbRecording({self.path!r}, channels={len(self.channels)}, "
        f"duration={self.duration:g} s)"
    )

  @property
  def embedded_annotations(self) -> list[tuple[float, float, str]]:
    """WFDB keeps annotations in separate files (e.g. `.st`); none are embedded."""
    return []

  def _check_signal_files(self) -> None:
    """Every `.dat` the header names must exist and hold `sig_len` frames of its signals."""
    h = self._header
    directory = os.path.dirname(self.path)
    offsets = h.byte_offset or [None] * h.n_sig
    per_file: dict[str, list[int]] = {}
    for i, name in enumerate(h.file_name):
      per_file.setdefault(name, []).append(i)
    for name, idx in per_file.items():
      fpath = os.path.join(directory, name)
      labels = ", ".join(self.channels[i].label for i in idx)
      if not os.path.isfile(fpath):
        raise PSGError(
            self.path, f"signal file {fpath} is missing (needed for channels {labels})"
        )
      bits = [wfdb_signal.BIT_RES.get(str(h.fmt[i])) for i in idx]
      if any(b is None for b in bits) or any(str(h.fmt[i]) in ("508", "516", "524") for i in idx):
        continue  # compressed or unknown format: its size cannot be predicted from the header.
      frame_bits = sum(b * self._spf[i] for b, i in zip(bits, idx, strict=True))
      need = int(offsets[idx[0]] or 0) + math.ceil(int(h.sig_len) * frame_bits / 8)
      have = os.path.getsize(fpath)
      if have < need:
        raise PSGError(
            self.path,
            f"truncated signal file {fpath}: {have} bytes, the header needs {need} "
            f"({h.sig_len} frames of channels {labels})",
        )

  def read(self, label: str, segment: int = 0) -> np.ndarray:
    """Reads one channel in physical units (float64; NaN for WFDB invalid samples).

    Raises:
      PSGError: unknown label, segment other than 0, a zero gain, or a signal file wfdb cannot read.
    """
    labels = [c.label for c in self.channels]
    if label not in labels:
      raise PSGError(self.path, f"no such channel; the record has {labels}", label)
    if segment != 0:
      raise PSGError(self.path, f"segment {segment} out of range (WFDB records have 1)", label)
    i = labels.index(label)
    gain = (self._header.adc_gain or [None] * len(labels))[i]
    if gain is not None and float(gain) == 0.0:
      raise PSGError(self.path, "ADC gain is 0: samples cannot be scaled", label)
    n = int(self._header.sig_len)
    k = self._spf[i]
    multi = any(s != 1 for s in self._spf)
    out = np.empty(n * k, dtype=np.float64)
    for start in range(0, n, _BLOCK_FRAMES):
      stop = min(n, start + _BLOCK_FRAMES)
      try:
        with quiet_wfdb():
          rec = wfdb.rdrecord(
              self.record_name, sampfrom=start, sampto=stop, channels=[i], physical=True,
              smooth_frames=not multi,
          )
      except Exception as e:
        raise PSGError(self.path, f"wfdb cannot read samples {start}..{stop}: {e}", label) from e
      block = rec.e_p_signal[0] if multi else rec.p_signal[:, 0]
      out[start * k : stop * k] = block
    return out

  def digital_scale(self, label: str) -> tuple[float, float]:
    """(gain, offset) with digital = physical * gain + offset: the header's ADC gain and
    baseline."""
    labels = [c.label for c in self.channels]
    if label not in labels:
      raise PSGError(self.path, f"no such channel; the record has {labels}", label)
    i = labels.index(label)
    gain = float((self._header.adc_gain or [0.0] * len(labels))[i] or 0.0)
    if gain == 0.0:
      raise PSGError(self.path, "ADC gain is 0: samples cannot be scaled", label)
    return gain, float((self._header.baseline or [0] * len(labels))[i] or 0)
