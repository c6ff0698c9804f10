"""WFDB `.st` annotation files of the MIT-BIH polysomnographic database (PhysioNet slpdb).

One annotation per 30-s epoch whose aux note is a stage token (`W 1 2 3 4 R`, `MT`/`M`) followed by
event codes (`H HA OA X CA CAA` are respiratory, `L LA A` are movements/arousals); each code becomes
an `Event` covering that epoch. The epoch grid is fitted to the annotation times (slpdb puts the
first one at sample 1, then every 7,500 samples). Notes padded with NUL bytes parse.

Respiratory events count as scored when any note of the record has a respiratory code; a record
with stages only gets SDB labels -1 and an issue line saying so (preprocessing's `sdb_scored_for`
overrides it per recording or folder). Notes that do not start with a stage and event codes the
database does not define are counted in `Annotations.unknown`.
"""

from __future__ import annotations

import collections
import re

import numpy as np

from sleepfm_jax.data.annotations import core
from sleepfm_jax.data.annotations._wfdb_notes import read_notes
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


def _codes(token: str) -> list[str]:
  # A few notes run codes together ("LLL"); split a repeated known code.
  return list(token) if token not in SLPDB_EVENT_CODES and re.fullmatch(r"L+", token) else [token]


def read(path: str, epoch_len: float) -> core.Annotations:
  samples, notes, fs = read_notes(path)
  tokens = [note.split() for note in notes]
  keep = [i for i, toks in enumerate(tokens) if toks and toks[0] in _SLPDB_STAGES]
  if not keep:
    raise PSGError(path, "no sleep-stage annotations (aux notes starting with W 1 2 3 4 R MT)")
  kept = set(keep)
  unknown: collections.Counter = collections.Counter(
      f"note '{notes[i].strip()}'" for i in range(len(notes)) if i not in kept)
  t = samples[keep] / fs
  idx = np.round((t - t[0]) / epoch_len).astype(np.int64)
  # The annotations sit on a 30-s grid up to a sample (e.g. samples 1, 7500, 15000, ...).
  epoch_onset = float(np.median(t - idx * epoch_len))
  runs, events = [], []
  for i, k in zip(keep, idx, strict=True):
    onset = epoch_onset + float(k) * epoch_len
    stage, *codes = tokens[i]
    stage = "MT" if stage == "M" else stage
    runs.append(core.StageRun(onset, epoch_len, core.stage_code(stage), stage,
                              f"annotation {i + 1} (sample {samples[i]})"))
    for code in (c for token in codes for c in _codes(token)):
      kind = SLPDB_EVENT_CODES.get(code)
      if kind is None:
        unknown[code] += 1
      events.append(core.Event(onset, epoch_len, kind or "other", code))
  scored = any(e.kind in core.RESPIRATORY_KINDS for e in events)
  issues = [] if scored else [
      "stages but no respiratory event code (H HA OA X CA CAA) in any note: "
      "respiratory events count as not scored (SDB labels -1); set sdb_scored_for to override"]
  return core.assemble(runs, events, path, respiratory_scored=scored, epoch_len=epoch_len,
                       unknown=unknown, issues=issues)
