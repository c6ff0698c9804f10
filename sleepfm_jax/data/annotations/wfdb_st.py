"""WFDB `.st` annotation files of the MIT-BIH polysomnographic database (PhysioNet slpdb).

One annotation per 30-s epoch whose aux note is a stage token (`W 1 2 3 4 R`, `MT`/`M`) followed by
event codes (`H HA OA X CA CAA` are respiratory, `L LA A` are movements/arousals); each code becomes
an `Event` covering that epoch. The epoch grid is fitted to the annotation times (slpdb puts the
first one at sample 1, then every 7,500 samples).
"""

from __future__ import annotations

import os
import re

import numpy as np

from sleepfm_jax.data.annotations import core
from sleepfm_jax.data.errors import PSGError

FORMAT = "wfdb"
EXTENSIONS = (".st",)

# MIT-BIH polysomnographic database (.st) event codes.
SLPDB_EVENT_CODES = {
    "H": "hypopnea", "HA": "hypopnea",
    "OA": "obstructive_apnea", "X": "obstructive_apnea",
    "CA": "central_apnea", "CAA": "central_apnea",
    "L": "leg_movement", "LA": "leg_movement",
    "A": "arousal",
}
_SLPDB_STAGES = {"W", "1", "2", "3", "4", "R", "MT", "M"}


def read(path: str, epoch_len: float) -> core.Annotations:
  import wfdb  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.data.wfdb_io import quiet_wfdb  # pylint: disable=import-outside-toplevel

  record, ext = os.path.splitext(path)
  if not os.path.isfile(path):
    raise PSGError(path, "file not found")
  try:
    with quiet_wfdb():
      ann = wfdb.rdann(record, ext.lstrip("."))
  except Exception as e:
    raise PSGError(path, f"cannot read WFDB annotations: {e}") from e
  fs = ann.fs
  if not fs and os.path.isfile(record + ".hea"):
    with quiet_wfdb():
      fs = wfdb.rdheader(record).fs
  if not fs:
    raise PSGError(path, "sampling frequency unknown (no fs in the file and no .hea header)")
  times = np.asarray(ann.sample, dtype=np.float64) / float(fs)
  notes = [(n or "").split() for n in (ann.aux_note or [""] * len(times))]
  keep = [i for i, toks in enumerate(notes) if toks and toks[0] in _SLPDB_STAGES]
  if not keep:
    raise PSGError(path, "no sleep-stage annotations (aux notes starting with W 1 2 3 4 R MT)")
  t = times[keep]
  idx = np.round((t - t[0]) / epoch_len).astype(np.int64)
  # The annotations sit on a 30-s grid up to a sample (e.g. samples 1, 7500, 15000, ...).
  epoch_onset = float(np.median(t - idx * epoch_len))
  records = []
  for i, k in zip(keep, idx, strict=True):
    onset = epoch_onset + float(k) * epoch_len
    stage, *codes = notes[i]
    records.append((onset, epoch_len, "MT" if stage == "M" else stage))
    for code in codes:
      # A few notes run codes together ("LLL"); split a repeated known code.
      parts = [code] if code in SLPDB_EVENT_CODES or not re.fullmatch(r"L+", code) else list(code)
      for part in parts:
        records.append((onset, epoch_len, part))
  ann_obj = core.from_records(
      ((o, d, lab) for o, d, lab in records if core.stage_code(lab) is not None),
      path, respiratory_scored=True, epoch_len=epoch_len,
  )
  ann_obj.events = [
      core.Event(o, d, SLPDB_EVENT_CODES.get(lab, "other"), lab)
      for o, d, lab in records
      if core.stage_code(lab) is None
  ]
  return ann_obj
