"""WFDB annotation files → (sample, aux note) pairs, for the `.st` and `.arousal` readers.

`wfdb.rdann` drops every note annotation at sample 0, taking them all for file-level definitions
(`## time resolution: 250`); a sleep stage scored from the first sample is one of them. This reads
the file with wfdb's own byte decoder instead and drops only the definition notes. Aux notes come
back with NUL bytes turned into spaces (slpdb pads some notes with NULs).
"""

from __future__ import annotations

import os
import re

import numpy as np

from sleepfm_jax.data.errors import PSGError

_FS = re.compile(r"## time resolution: (\d+\.?\d*)")
_NOTE = 22  # WFDB annotation code of a comment ("NOTE") annotation
_NOT_AN_ANNOTATION = 0


def read_notes(path: str) -> tuple[np.ndarray, list[str], float]:
  """(sample of each annotation, its aux note, sampling rate) of a WFDB annotation file.

  The rate comes from the file's `## time resolution` note, else from the record's `.hea`.

  Raises:
    PSGError: missing or undecodable file, or no sampling rate anywhere.
  """
  from wfdb.io import annotation as wfdb_ann  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.data.wfdb_io import quiet_wfdb  # pylint: disable=import-outside-toplevel

  record, ext = os.path.splitext(path)
  if not os.path.isfile(path):
    raise PSGError(path, "file not found")
  try:
    with quiet_wfdb():
      data = wfdb_ann.load_byte_pairs(record, ext.lstrip("."), None)
      sample, label, _, _, _, aux = wfdb_ann.proc_ann_bytes(data, None)
  except Exception as e:  # wfdb raises several types for malformed files
    raise PSGError(path, f"cannot read WFDB annotations: {e}") from e
  fs, samples, notes = None, [], []
  for s, code, note in zip(sample, label, aux, strict=True):
    note = (note or "").replace("\x00", " ")
    if s == 0 and code == _NOTE and note.startswith("## "):
      m = _FS.match(note)
      fs = fs or (float(m.group(1)) if m else None)
      continue
    if code != _NOT_AN_ANNOTATION:
      samples.append(int(s))
      notes.append(note)
  fs = fs or _header_fs(record)
  if not fs:
    raise PSGError(path, "sampling frequency unknown (no time resolution in the file and no .hea "
                   "header beside it)")
  return np.asarray(samples, np.int64), notes, float(fs)


def _header_fs(record: str) -> float | None:
  if not os.path.isfile(record + ".hea"):
    return None
  import wfdb  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.data.wfdb_io import quiet_wfdb  # pylint: disable=import-outside-toplevel

  with quiet_wfdb():
    return wfdb.rdheader(record).fs


def record_seconds(record: str) -> float | None:
  """Length in seconds of the WFDB record beside an annotation file (None without a `.hea`)."""
  if not os.path.isfile(record + ".hea"):
    return None
  import wfdb  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.data.wfdb_io import quiet_wfdb  # pylint: disable=import-outside-toplevel

  with quiet_wfdb():
    h = wfdb.rdheader(record)
  return float(h.sig_len) / float(h.fs) if h.sig_len and h.fs else None
