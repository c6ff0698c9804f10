"""The common, format-independent view of one PSG signal file.

`open_recording` picks the reader by file extension (EDF/EDF+ or WFDB) and returns an object that
satisfies `RawRecording` (`data.types`). Opening reads the header only; `read(label)` then reads
the samples of one channel. Everything downstream (channel harmonisation, windowing, the store
writer) works against this protocol and never sees edfio or wfdb objects.
"""

from __future__ import annotations

import os

from sleepfm_jax.data.edf import EdfRecording
from sleepfm_jax.data.errors import PSGError
from sleepfm_jax.data.types import ChannelInfo, RawRecording, Segment

__all__ = ["ChannelInfo", "RawRecording", "SIGNAL_EXTENSIONS", "Segment", "open_recording"]

SIGNAL_EXTENSIONS = (".edf", ".hea")


def open_recording(path: str | os.PathLike) -> RawRecording:
  """Opens a PSG signal file by extension: `.edf` (EDF, EDF+C, EDF+D) or `.hea` (WFDB header).

  A WFDB record may also be named without extension (`/data/slp01a`) when `/data/slp01a.hea` exists.
  Only the header is read here.

  Raises:
    PSGError: unknown extension, missing file, or a header that fails validation.
  """
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  if ext == ".edf":
    return EdfRecording(path)
  if ext == ".hea" or (ext == "" and os.path.exists(path + ".hea")):
    # Imported on first use: wfdb pulls in pandas, which EDF-only users never need.
    from sleepfm_jax.data.wfdb_io import WfdbRecording  # pylint: disable=import-outside-toplevel

    return WfdbRecording(path)
  if ext == ".bdf":
    raise PSGError(path, "BDF (24-bit) files are not supported; convert them to EDF")
  raise PSGError(
      path, f"unknown signal file extension {ext!r}; supported: {', '.join(SIGNAL_EXTENSIONS)}"
  )
