"""PhysioNet/CinC Challenge 2018 `.arousal` files (WFDB annotations beside the record's `.hea`).

Aux notes are of two kinds:

* stage changes `W N1 N2 N3 R`, points that each hold until the next one; the last holds until
  the record ends (read from the `.hea`; a trailing part shorter than an epoch is not an epoch);
* events as `(name` ... `name)` pairs: `resp_obstructiveapnea`, `resp_centralapnea`,
  `resp_mixedapnea`, `resp_hypopnea`, `resp_partialobstructive` (partial obstruction, counted as a
  hypopnea), `resp_hypoventilation`, `resp_cheynestokesbreath`, `arousal_rera`,
  `arousal_spontaneous`, `arousal_plm`, `arousal_bruxism`, `arousal_noise`, `arousal_snore`.

Stage runs must last a whole number of epochs; a `(` without its `)` (or the reverse) is an error
naming the annotation. Other notes are counted in `Annotations.unknown`.
"""

from __future__ import annotations

import collections
import os

from sleepfm_jax.data.annotations import _wfdb_notes, core
from sleepfm_jax.data.errors import PSGError

FORMAT = "cinc-arousal"
EXTENSIONS = (".arousal",)
STAGE_NOTES = ("W", "N1", "N2", "N3", "R")
EVENT_NAMES = {
    "resp_obstructiveapnea": "obstructive_apnea", "resp_centralapnea": "central_apnea",
    "resp_mixedapnea": "mixed_apnea", "resp_hypopnea": "hypopnea",
    "resp_partialobstructive": "hypopnea", "resp_hypoventilation": "other",
    "resp_cheynestokesbreath": "other",
    **{f"arousal_{a}": "arousal" for a in ("rera", "spontaneous", "plm", "bruxism", "noise",
                                           "snore")},
}


def _events(path, samples, notes, fs, unknown) -> tuple[list[core.Event], list[int]]:
  """(events from the `(name` ... `name)` pairs, indices of the stage notes)."""
  open_at: dict[str, list[int]] = collections.defaultdict(list)
  events, stage_idx = [], []
  where = lambda i: f"annotation {i + 1} (sample {samples[i]}, {samples[i] / fs:g} s)"
  for i, raw in enumerate(notes):
    note = raw.strip()
    if note in STAGE_NOTES:
      stage_idx.append(i)
    elif note.startswith("("):
      open_at[note[1:]].append(i)
    elif note.endswith(")"):
      name = note[:-1]
      if not open_at[name]:
        raise PSGError(path, f"{where(i)}: '{note}' closes an event that was never opened")
      j = open_at[name].pop()
      kind = EVENT_NAMES.get(name)
      if kind is None:
        unknown[name] += 1
      events.append(core.Event(samples[j] / fs, (samples[i] - samples[j]) / fs, kind or "other",
                               name))
    else:
      unknown[note] += 1
  for name, idx in open_at.items():
    if idx:
      raise PSGError(path, f"{where(idx[0])}: '({name}' is never closed (no '{name})')")
  return events, stage_idx


def read(path: str, epoch_len: float) -> core.Annotations:
  samples, notes, fs = _wfdb_notes.read_notes(path)
  samples = [int(s) for s in samples]
  unknown: collections.Counter = collections.Counter()
  events, stage_idx = _events(path, samples, notes, fs, unknown)
  if not stage_idx:
    raise PSGError(path, f"no sleep-stage annotations (aux notes {' '.join(STAGE_NOTES)})")
  end = _wfdb_notes.record_seconds(os.path.splitext(path)[0])
  if end is None:
    raise PSGError(path, "no .hea beside the file: the last stage holds until the record ends, "
                   "and the record's length is in its header")
  issues, runs = [], []
  for n, i in enumerate(stage_idx):
    onset = samples[i] / fs
    where = f"annotation {i + 1} (sample {samples[i]})"
    if n + 1 < len(stage_idx):
      duration = samples[stage_idx[n + 1]] / fs - onset
    else:  # the last stage: whole epochs up to the record's end
      duration = (end - onset) // epoch_len * epoch_len
      if end - onset - duration > 1e-6:
        issues.append(f"{where}: the last stage '{notes[i].strip()}' ends with the record at "
                      f"{end:g} s; its trailing {end - onset - duration:g} s are not an epoch")
      if duration <= 0:
        continue
    runs.append(core.StageRun(onset, duration, core.stage_code(notes[i]), notes[i].strip(),
                              where))
  return core.assemble(runs, events, path, epoch_len=epoch_len, strict=True, unknown=unknown,
                       issues=issues)
