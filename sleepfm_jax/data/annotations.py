"""Sleep-stage hypnograms and scored events → per-epoch stage and SDB labels.

Three sources are read into one `Annotations` object:

* EDF+ annotation files (TAL), e.g. Sleep-EDF `*-Hypnogram.edf` (R&K: `Sleep stage W|1|2|3|4|R|?`,
  `Movement time`) or AASM exports (`Sleep stage N1`, `N2`, `REM`, `Wake`, ...), with events such as
  `Obstructive apnea`, `Hypopnea`, `Arousal`, `SpO2 desaturation`. Stage annotations are runs
  (onset, duration, label) and are expanded into 30-s epochs.
* WFDB `.st` annotation files (MIT-BIH polysomnographic database): one annotation per 30-s epoch
  whose aux note is a stage token (`W 1 2 3 4 R`, `MT`/`M`) followed by event codes (`H HA OA X CA
  CAA` are respiratory, `L LA A` are movements/arousals); each code becomes an `Event` covering that
  epoch.
* CSV/TSV files with a `onset,duration,label` header and optional
  `# respiratory_scored: true|false`.

Stages map to the 5 AASM classes `STAGES` (R&K 3 and 4 → N3); unscored epochs (`?`), movement
time and gaps between stage runs get -1 and are counted by reason in `Annotations.excluded`. The
SDB label of an epoch is 1 when any apnea/hypopnea overlaps it, 0 when respiratory events were
scored and none does, and -1 when the source does not score respiratory events at all (never an
invented 0).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from sleepfm_jax.data.errors import PSGError

EPOCH_SECONDS = 30.0
STAGES = ("W", "N1", "N2", "N3", "REM")
EVENT_KINDS = (
    "obstructive_apnea", "central_apnea", "mixed_apnea", "apnea", "hypopnea", "arousal",
    "desaturation", "leg_movement", "other",
)
# "apnea" is an apnea whose type the source does not say; it still counts for SDB.
RESPIRATORY_KINDS = frozenset(
    {"obstructive_apnea", "central_apnea", "mixed_apnea", "apnea", "hypopnea"}
)
ANNOTATION_FORMATS = ("edf", "wfdb", "csv")

# --- stage labels -----------------------------------------------------------------------------

_STAGE_TOKENS = {
    "w": 0, "wake": 0, "awake": 0,
    "1": 1, "n1": 1, "s1": 1,
    "2": 2, "n2": 2, "s2": 2,
    "3": 3, "4": 3, "n3": 3, "n4": 3, "s3": 3, "s4": 3, "sws": 3,
    "r": 4, "rem": 4, "sr": 4,
}
_EXCLUDED_TOKENS = {
    "?": "unscored '?'",
    "unscored": "unscored", "unknown": "unscored", "notscored": "unscored", "ns": "unscored",
    "movementtime": "movement time", "movement": "movement time", "mt": "movement time",
}
GAP_REASON = "unscored (gap)"
CONFLICT_REASON = "conflicting stage annotations"


def _stage_key(label: str) -> str:
  s = label.strip().lower().replace("_", " ")
  s = s.split("|", 1)[0]  # NSRR style "Stage 2 sleep|2"
  s = re.sub(r"\b(sleep|stage)\b", " ", s)
  return re.sub(r"[\s_\-:]+", "", s)


def stage_code(label: str) -> int | None:
  """AASM class index 0..4 of a stage label, -1 for an excluded stage label, None if not a stage.

  Case, whitespace and the prefixes "Sleep stage"/"Stage" are ignored: "Sleep stage 3" → 3 (N3),
  "Sleep stage R" → 4, "N1" → 1, "Wake" → 0, "Sleep stage ?" → -1, "Movement time" → -1,
  "Obstructive apnea" → None.
  """
  key = _stage_key(label)
  if key in _STAGE_TOKENS:
    return _STAGE_TOKENS[key]
  if key in _EXCLUDED_TOKENS:
    return -1
  return None


def exclusion_reason(raw: str, stage: int = -1) -> str:
  """Why an epoch with raw label `raw` and final code `stage` (-1) is excluded."""
  if raw == "":
    return GAP_REASON
  code = stage_code(raw)
  if code is not None and code >= 0:
    return CONFLICT_REASON if stage < 0 else ""
  return _EXCLUDED_TOKENS.get(_stage_key(raw), "unscored")


# --- events -----------------------------------------------------------------------------------

_EVENT_EXACT = {
    "osa": "obstructive_apnea", "oa": "obstructive_apnea", "obs": "obstructive_apnea",
    "csa": "central_apnea", "ca": "central_apnea",
    "msa": "mixed_apnea", "ma": "mixed_apnea",
    "h": "hypopnea", "hyp": "hypopnea", "oh": "hypopnea", "ch": "hypopnea",
    "rera": "arousal", "ar": "arousal",
    "lm": "leg_movement", "plm": "leg_movement", "lms": "leg_movement",
    "desat": "desaturation",
}


def event_kind(label: str) -> str:
  """Event kind of a non-stage annotation label (one of `EVENT_KINDS`).

  Case/punctuation tolerant: "Obstructive apnea", "Obstructive Apnea", "Apnea Obstructive",
  "OSA" → obstructive_apnea; "Hypopnea", "Obstructive hypopnea" → hypopnea; "Apnea" (type not
  given) → apnea; "Arousal", "EEG arousal", "RERA" → arousal; "SpO2 desaturation", "Desaturation"
  → desaturation; "Limb movement", "PLM" → leg_movement; anything else → other.
  """
  s = re.sub(r"[^a-z0-9]+", " ", label.lower()).strip()
  if s.replace(" ", "") in _EVENT_EXACT:
    return _EVENT_EXACT[s.replace(" ", "")]
  if "hypopn" in s:
    return "hypopnea"
  if "apn" in s:
    if "obstruct" in s:
      return "obstructive_apnea"
    if "central" in s:
      return "central_apnea"
    if "mixed" in s:
      return "mixed_apnea"
    return "apnea"
  if "desat" in s:
    return "desaturation"
  if "arous" in s or "rera" in s.split():
    return "arousal"
  if "movement" in s and re.search(r"\b(leg|limb|plm|lm)\b", s):
    return "leg_movement"
  return "other"


@dataclasses.dataclass(frozen=True)
class Event:
  """A scored event: seconds from the recording start, a kind from `EVENT_KINDS`, the raw label."""

  onset: float
  duration: float
  kind: str
  raw: str


# --- the annotations object --------------------------------------------------------------------


@dataclasses.dataclass
class Annotations:
  """One recording's hypnogram and events.

  Attributes:
    epoch_onset: seconds from the recording start to the onset of epoch 0.
    stages: int8 [n_epochs], 0..4 (`STAGES`) or -1 (excluded).
    stage_raw: the raw stage label of each epoch ("" where no stage annotation covers it).
    excluded: reason → number of epochs with stage -1 (e.g. {"unscored '?'": 230}).
    events: scored events, onset-sorted.
    respiratory_scored: whether the source scores respiratory events (False: SDB labels are -1).
    source: the annotation file.
  """

  epoch_onset: float
  stages: np.ndarray
  stage_raw: list[str]
  excluded: dict[str, int]
  events: list[Event]
  respiratory_scored: bool
  source: str

  @property
  def n_epochs(self) -> int:
    return int(len(self.stages))

  def stage_counts(self) -> dict[str, int]:
    """Epochs per AASM class name (`STAGES`), excluded epochs not included."""
    counts = np.bincount(self.stages[self.stages >= 0], minlength=len(STAGES))
    return {name: int(c) for name, c in zip(STAGES, counts, strict=True)}

  def sdb(self, epoch_len: float = EPOCH_SECONDS) -> np.ndarray:
    """Per-epoch SDB labels (see `sdb_labels`)."""
    return sdb_labels(
        self.events, self.epoch_onset, self.n_epochs, epoch_len, scored=self.respiratory_scored
    )

  def summary(self) -> dict:
    """JSON-ready summary for preprocessing reports."""
    kinds = collections.Counter(e.kind for e in self.events)
    return {
        "source": self.source,
        "epoch_onset": self.epoch_onset,
        "n_epochs": self.n_epochs,
        "stages": self.stage_counts(),
        "excluded": dict(self.excluded),
        "events": dict(sorted(kinds.items())),
        "respiratory_scored": self.respiratory_scored,
    }


def _count_excluded(stages: np.ndarray, stage_raw: Sequence[str]) -> dict[str, int]:
  counts = collections.Counter(
      exclusion_reason(stage_raw[i], -1) for i in np.flatnonzero(stages < 0)
  )
  return dict(sorted(counts.items()))


def from_records(
    records: Iterable[tuple[float, float | None, str]],
    source: str,
    respiratory_scored: bool | None = None,
    epoch_len: float = EPOCH_SECONDS,
) -> Annotations:
  """Builds `Annotations` from (onset, duration, label) records (stage runs and events mixed).

  Stage runs are expanded into `epoch_len` epochs on the grid that starts at the first stage
  onset; a run with no duration, or shorter than an epoch, labels one epoch. Epochs no stage run covers are -1 ("unscored (gap)");
  epochs covered by runs with different stages are -1 ("conflicting stage annotations"). Other
  labels become `Event`s. `respiratory_scored=None` means: scored iff any respiratory event exists.

  Raises:
    PSGError: a stage run not on the epoch grid, or no stage annotation at all.
  """
  runs, events = [], []
  for onset, duration, label in records:
    label = label.strip()
    if not label:
      continue
    dur = float(duration) if duration else 0.0
    if stage_code(label) is not None:
      runs.append((float(onset), dur, label))
    else:
      events.append(Event(float(onset), dur, event_kind(label), label))
  if not runs:
    raise PSGError(source, "no sleep-stage annotations found")
  runs.sort(key=lambda r: r[0])
  epoch_onset = runs[0][0]
  placed = []
  for onset, dur, label in runs:
    pos = (onset - epoch_onset) / epoch_len
    first = int(round(pos))
    if abs(pos - first) * epoch_len > 1.0:
      raise PSGError(
          source,
          f"stage annotation '{label}' at {onset:g} s is not on the {epoch_len:g}-s epoch grid "
          f"that starts at {epoch_onset:g} s",
      )
    n = dur / epoch_len
    count = int(round(n)) if abs(n - round(n)) * epoch_len <= 1.0 else int(math.floor(n))
    # A stage annotation shorter than an epoch (no duration, or a 1-s marker) labels one epoch.
    placed.append((first, max(count, 1), label))
  n_epochs = max(first + count for first, count, _ in placed)
  stages = np.full(n_epochs, -1, dtype=np.int8)
  stage_raw = [""] * n_epochs
  conflict = np.zeros(n_epochs, dtype=bool)
  for first, count, label in placed:
    code = stage_code(label)
    for k in range(first, first + count):
      if stage_raw[k] and stage_code(stage_raw[k]) != code:
        conflict[k] = True
      stage_raw[k] = label
      stages[k] = code
  stages[conflict] = -1
  events.sort(key=lambda e: (e.onset, e.duration, e.raw))
  if respiratory_scored is None:
    respiratory_scored = any(e.kind in RESPIRATORY_KINDS for e in events)
  return Annotations(
      epoch_onset=epoch_onset,
      stages=stages,
      stage_raw=stage_raw,
      excluded=_count_excluded(stages, stage_raw),
      events=events,
      respiratory_scored=bool(respiratory_scored),
      source=source,
  )


# --- readers ----------------------------------------------------------------------------------


def _read_edf(path: str) -> Annotations:
  import edfio  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.data.edf import ANNOTATION_LABEL, read_edf_header  # pylint: disable=C0415

  header = read_edf_header(path)
  if not header.annotation_signals:
    raise PSGError(path, f"no '{ANNOTATION_LABEL}' signal: not an EDF+ annotation file")
  try:
    anns = edfio.read_edf(path, header_encoding="latin-1").annotations
  except Exception as e:
    raise PSGError(path, f"malformed EDF+ annotations: {e}", ANNOTATION_LABEL) from e
  return from_records(((a.onset, a.duration, a.text) for a in anns), path)


# MIT-BIH polysomnographic database (.st) event codes.
SLPDB_EVENT_CODES = {
    "H": "hypopnea", "HA": "hypopnea",
    "OA": "obstructive_apnea", "X": "obstructive_apnea",
    "CA": "central_apnea", "CAA": "central_apnea",
    "L": "leg_movement", "LA": "leg_movement",
    "A": "arousal",
}
_SLPDB_STAGES = {"W", "1", "2", "3", "4", "R", "MT", "M"}


def _read_wfdb(path: str, epoch_len: float) -> Annotations:
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
  ann_obj = from_records(
      ((o, d, lab) for o, d, lab in records if stage_code(lab) is not None),
      path, respiratory_scored=True, epoch_len=epoch_len,
  )
  ann_obj.events = [
      Event(o, d, SLPDB_EVENT_CODES.get(lab, "other"), lab)
      for o, d, lab in records
      if stage_code(lab) is None
  ]
  return ann_obj


_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


def _read_csv(path: str, epoch_len: float) -> Annotations:
  if not os.path.isfile(path):
    raise PSGError(path, "file not found")
  with open(path, newline="", encoding="utf-8-sig") as f:
    lines = f.read().splitlines()
  scored = None
  body = []
  for lineno, line in enumerate(lines, 1):
    stripped = line.strip()
    if not stripped:
      continue
    if stripped.startswith("#"):
      m = re.match(r"#\s*respiratory_scored\s*[:=]\s*(\S+)", stripped, re.I)
      if m:
        value = m.group(1).lower()
        if value not in _TRUE | _FALSE:
          raise PSGError(path, f"line {lineno}: respiratory_scored must be true or false")
        scored = value in _TRUE
      continue
    body.append((lineno, line))
  if not body:
    raise PSGError(path, "empty annotation file (no header row)")
  delimiter = "\t" if "\t" in body[0][1] else ","
  rows = list(csv.reader([line for _, line in body], delimiter=delimiter))
  header = [c.strip().lower() for c in rows[0]]
  if not {"onset", "duration", "label"} <= set(header):
    raise PSGError(
        path, f"line {body[0][0]}: expected a header with onset, duration, label; got {rows[0]}"
    )
  col = {name: header.index(name) for name in ("onset", "duration", "label")}
  records = []
  for (lineno, _), row in zip(body[1:], rows[1:], strict=True):
    try:
      onset = float(row[col["onset"]])
      dur_text = row[col["duration"]].strip()
      duration = float(dur_text) if dur_text else 0.0
      label = row[col["label"]]
    except (IndexError, ValueError):
      raise PSGError(path, f"line {lineno}: cannot parse {row}") from None
    if duration < 0:
      raise PSGError(path, f"line {lineno}: negative duration {duration}")
    records.append((onset, duration, label))
  return from_records(records, path, respiratory_scored=scored, epoch_len=epoch_len)


def annotation_format(path: str | os.PathLike) -> str | None:
  """"edf", "wfdb" or "csv" by file name, or None when the extension is not an annotation format."""
  ext = os.path.splitext(os.fspath(path))[1].lower()
  return {".edf": "edf", ".st": "wfdb", ".csv": "csv", ".tsv": "csv"}.get(ext)


def read_annotations(
    path: str | os.PathLike, fmt: str = "auto", epoch_len: float = EPOCH_SECONDS
) -> Annotations:
  """Reads an annotation file: EDF+ TAL (`.edf`), WFDB (`.st`) or CSV/TSV (`.csv`, `.tsv`).

  Args:
    path: the annotation file.
    fmt: "auto" (by extension), "edf", "wfdb" or "csv" (CSV or TSV, detected from the header).
    epoch_len: epoch length in seconds.

  Raises:
    PSGError: unknown format, unreadable file, or no stage annotations.
  """
  path = os.fspath(path)
  if fmt == "auto":
    fmt = annotation_format(path)
    if fmt is None:
      raise PSGError(
          path, "unknown annotation file extension; supported: .edf (EDF+), .st (WFDB), .csv, .tsv"
      )
  if fmt == "edf":
    return _read_edf(path)
  if fmt == "wfdb":
    return _read_wfdb(path, epoch_len)
  if fmt in ("csv", "tsv"):
    return _read_csv(path, epoch_len)
  raise PSGError(path, f"unknown annotation format {fmt!r}; one of {ANNOTATION_FORMATS}")


# --- labels per epoch -------------------------------------------------------------------------


def sdb_labels(
    events: Iterable[Event],
    epoch_onset: float,
    n_epochs: int,
    epoch_len: float = EPOCH_SECONDS,
    scored: bool = True,
) -> np.ndarray:
  """SDB label per epoch (int8): 1 if any respiratory event overlaps it, 0 if none, -1 if unscored.

  Epoch k covers [epoch_onset + k·epoch_len, epoch_onset + (k+1)·epoch_len). An event [s, s+d)
  overlaps it when the two intervals intersect; a zero-duration event overlaps the epoch that
  contains its onset.
  """
  if not scored:
    return np.full(n_epochs, -1, dtype=np.int8)
  out = np.zeros(n_epochs, dtype=np.int8)
  for e in events:
    if e.kind not in RESPIRATORY_KINDS:
      continue
    start = (e.onset - epoch_onset) / epoch_len
    first = int(math.floor(start))
    last = first if e.duration <= 0 else int(math.ceil(start + e.duration / epoch_len - 1e-9)) - 1
    first, last = max(first, 0), min(last, n_epochs - 1)
    if first <= last:
      out[first : last + 1] = 1
  return out


def crop_to_duration(
    ann: Annotations, duration_s: float, epoch_len: float = EPOCH_SECONDS
) -> tuple[Annotations, dict[str, int]]:
  """Keeps the epochs that lie entirely inside [0, duration_s] (e.g. the signal's length).

  Hypnograms often run past the end of the signal (Sleep-EDF: a trailing `?` run). Events that
  start at or after `duration_s` (or end before 0) are dropped; events crossing an edge are clipped.

  Returns:
    (cropped annotations, counts): counts maps each cropped epoch's raw stage label to its number
    of epochs ("" for gap epochs), and "event: <raw label>" to the number of dropped events.
  """
  tol = 1e-6
  k = np.arange(ann.n_epochs)
  starts = ann.epoch_onset + k * epoch_len
  inside = (starts >= -tol) & (starts + epoch_len <= duration_s + tol)
  kept = np.flatnonzero(inside)
  counts = collections.Counter(ann.stage_raw[i] for i in np.flatnonzero(~inside))
  if len(kept):
    k0, k1 = int(kept[0]), int(kept[-1]) + 1
  else:
    k0 = k1 = 0
  events = []
  for e in ann.events:
    end = e.onset + e.duration
    if e.onset >= duration_s or end < 0 or (e.duration > 0 and end <= 0):
      counts[f"event: {e.raw}"] += 1
      continue
    onset = max(e.onset, 0.0)
    events.append(dataclasses.replace(e, onset=onset, duration=min(end, duration_s) - onset))
  stages = ann.stages[k0:k1].copy()
  stage_raw = ann.stage_raw[k0:k1]
  cropped = Annotations(
      epoch_onset=float(ann.epoch_onset + k0 * epoch_len),
      stages=stages,
      stage_raw=stage_raw,
      excluded=_count_excluded(stages, stage_raw),
      events=events,
      respiratory_scored=ann.respiratory_scored,
      source=ann.source,
  )
  return cropped, dict(sorted(counts.items()))
