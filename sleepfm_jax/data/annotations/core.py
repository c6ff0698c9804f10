"""The format-independent half of annotation reading: vocabularies, `Annotations`, SDB labels.

Format readers (one module each in this package) turn a file into stage runs and events; this
module expands stage runs into `epoch_len` epochs, classifies free-text labels, and computes
per-epoch SDB labels and crops.

Stages map to the 5 AASM classes `STAGES` (R&K 3 and 4 → N3); unscored epochs (`?`), movement
time and gaps between stage runs get -1 and are counted by reason in `Annotations.excluded`. The
SDB label of an epoch is 1 when any apnea/hypopnea overlaps it, 0 when respiratory events were
scored and none does, and -1 when the source does not score respiratory events at all (never an
invented 0).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence

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

# --- stage labels -----------------------------------------------------------------------------

_STAGE_TOKENS = {
    "w": 0, "wake": 0, "awake": 0,
    "1": 1, "n1": 1, "s1": 1,
    "2": 2, "n2": 2, "s2": 2,
    "3": 3, "4": 3, "n3": 3, "n4": 3, "s3": 3, "s4": 3, "sws": 3,
    "r": 4, "rem": 4, "sr": 4,
    # NSRR XML ontology terms: the SDO vocabulary of older translator output (e.g. SHHS) and SRO.
    "sdowakestate": 0, "sdononrapideyemovementsleepn1": 1, "sdononrapideyemovementsleepn2": 2,
    "sdononrapideyemovementsleepn3": 3, "sdononrapideyemovementsleepn4": 3,
    "sdorapideyemovementsleep": 4,
    "srowake": 0, "srostage1sleep": 1, "srostage2sleep": 2, "srostage3sleep": 3,
    "srostage4sleep": 3, "srorapideyemovement": 4,
}
_EXCLUDED_TOKENS = {
    "?": "unscored '?'",
    "unscored": "unscored", "unknown": "unscored", "notscored": "unscored", "ns": "unscored",
    "srounscoredepoch": "unscored",
    "movementtime": "movement time", "movement": "movement time", "mt": "movement time",
    "sromovementtime": "movement time",
}
# Reasons for stage labels that readers place with an explicit code -1 (never read as stages from
# free text, where "Artifact" is an event).
_READER_REASONS = {"artifact": "artifact", "sroartifactepoch": "artifact"}
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
  key = _stage_key(raw)
  return _EXCLUDED_TOKENS.get(key) or _READER_REASONS.get(key, "unscored")


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
    unknown: label → count of annotations whose label the format's vocabulary does not know; they
      are kept as events of kind "other" (never mapped to a stage or an event kind by guessing).
    issues: problems found while reading that did not stop it (overlapping stage runs, a record
      with no respiratory scoring, ...), each naming its position; copied into reports.
  """

  epoch_onset: float
  stages: np.ndarray
  stage_raw: list[str]
  excluded: dict[str, int]
  events: list[Event]
  respiratory_scored: bool
  source: str
  unknown: dict[str, int] = dataclasses.field(default_factory=dict)
  issues: list[str] = dataclasses.field(default_factory=list)

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
        "unknown": dict(self.unknown),
        "issues": list(self.issues),
    }


def _count_excluded(stages: np.ndarray, stage_raw: Sequence[str]) -> dict[str, int]:
  counts = collections.Counter(
      exclusion_reason(stage_raw[i], -1) for i in np.flatnonzero(stages < 0)
  )
  return dict(sorted(counts.items()))


@dataclasses.dataclass(frozen=True)
class StageRun:
  """A stage annotation: `code` (0..4, or -1 for an excluded stage such as movement time) holds
  from `onset` for `duration` seconds; `raw` is its label in the file; `where` says where in the
  file it is (e.g. "line 812"), for messages."""

  onset: float
  duration: float
  code: int
  raw: str
  where: str = ""


# A stage run of a format that scores whole epochs (XML, CinC) may be off a whole number of epochs
# by this fraction of an epoch (rounding of written times); more is an error.
STRICT_TOLERANCE = 1e-3


def from_records(
    records: Iterable[tuple],
    source: str,
    respiratory_scored: bool | None = None,
    epoch_len: float = EPOCH_SECONDS,
) -> Annotations:
  """Builds `Annotations` from (onset, duration, label[, where]) records (stages and events mixed).

  Free-text labels are classified with `stage_code` and `event_kind`; a label of kind "other" is
  also counted in `unknown`. See `assemble` for how stage runs become epochs. A stage run with no
  duration, or shorter than an epoch, labels one epoch. `respiratory_scored=None` means: scored iff
  any respiratory event exists.
  """
  runs, events = [], []
  unknown: collections.Counter = collections.Counter()
  for onset, duration, label, *where in records:
    label = label.strip()
    if not label:
      continue
    dur = float(duration) if duration else 0.0
    code = stage_code(label)
    if code is not None:
      runs.append(StageRun(float(onset), dur, code, label, where[0] if where else ""))
    else:
      events.append(Event(float(onset), dur, event_kind(label), label))
      if events[-1].kind == "other":
        unknown[label] += 1
  return assemble(runs, events, source, respiratory_scored=respiratory_scored,
                  epoch_len=epoch_len, unknown=unknown)


def _place(run: StageRun, epoch_onset: float, epoch_len: float, strict: bool,
           source: str) -> tuple[int, int, str | None]:
  """(first epoch, number of epochs, issue or None) of a stage run on the grid that starts at
  `epoch_onset`."""
  at = f"{run.where}: " if run.where else ""
  pos = (run.onset - epoch_onset) / epoch_len
  first = int(round(pos))
  if abs(pos - first) * epoch_len > 1.0:
    raise PSGError(source, f"{at}stage annotation '{run.raw}' at {run.onset:g} s is not on the "
                   f"{epoch_len:g}-s epoch grid that starts at {epoch_onset:g} s")
  n = run.duration / epoch_len
  if strict:
    if run.duration <= 0 or abs(n - round(n)) > STRICT_TOLERANCE:
      raise PSGError(source, f"{at}stage annotation '{run.raw}' at {run.onset:g} s lasts "
                     f"{run.duration:g} s, not a whole number of {epoch_len:g}-s epochs")
    return first, int(round(n)), None
  if abs(n - round(n)) * epoch_len <= 1.0:
    count, issue = int(round(n)), None
  else:
    count = int(math.floor(n))
    issue = (f"{at}stage annotation '{run.raw}' at {run.onset:g} s lasts {run.duration:g} s, not a "
             f"whole number of {epoch_len:g}-s epochs: {max(count, 1)} epoch(s) labelled"
             if count >= 1 else None)
  # A stage annotation shorter than an epoch (no duration, or a 1-s marker) labels one epoch.
  return first, max(count, 1), issue


def _overlap_issue(a: StageRun, b: StageRun, epochs: list[int], epoch_onset: float,
                   epoch_len: float) -> str:
  where = lambda r: f" ({r.where})" if r.where else ""
  t = epoch_onset + epochs[0] * epoch_len
  what = ("conflicting stages: those epochs are excluded" if a.code != b.code
          else "same stage: kept")
  return (f"stage annotations '{a.raw}'{where(a)} and '{b.raw}'{where(b)} overlap on "
          f"{len(epochs)} epoch(s) from {t:g} s ({what})")


def assemble(
    runs: Sequence[StageRun],
    events: Sequence[Event],
    source: str,
    *,
    respiratory_scored: bool | None = None,
    epoch_len: float = EPOCH_SECONDS,
    strict: bool = False,
    unknown: Mapping[str, int] | None = None,
    issues: Sequence[str] = (),
) -> Annotations:
  """Builds `Annotations` from stage runs and events a format reader has classified.

  Stage runs are expanded into `epoch_len` epochs on the grid that starts at the first stage onset.
  Epochs no stage run covers are -1 ("unscored (gap)"); epochs covered by runs with different
  stages are -1 ("conflicting stage annotations"). Every overlap of two runs is listed in
  `issues`, naming both. With `strict` (formats that score whole epochs), a run must last a whole
  number of epochs. `respiratory_scored=None` means: scored iff any respiratory event exists.

  Raises:
    PSGError: no stage run at all, a run off the epoch grid, or (strict) not a whole number of
      epochs; the message names the run's position when the reader gave it.
  """
  if not runs:
    raise PSGError(source, "no sleep-stage annotations found")
  runs = sorted(runs, key=lambda r: r.onset)
  epoch_onset = runs[0].onset
  placed, issues = [], list(issues)
  for r in runs:
    first, count, issue = _place(r, epoch_onset, epoch_len, strict, source)
    placed.append((first, count, r))
    issues += [issue] if issue else []
  n_epochs = max(first + count for first, count, _ in placed)
  stages = np.full(n_epochs, -1, dtype=np.int8)
  stage_raw = [""] * n_epochs
  owner: list[int | None] = [None] * n_epochs
  conflict = np.zeros(n_epochs, dtype=bool)
  shared: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
  for i, (first, count, run) in enumerate(placed):
    for k in range(first, first + count):
      j = owner[k]
      if j is not None:
        shared[(j, i)].append(k)
        if placed[j][2].code != run.code:
          conflict[k] = True
      owner[k], stage_raw[k], stages[k] = i, run.raw, run.code
  stages[conflict] = -1
  issues += [_overlap_issue(placed[j][2], placed[i][2], ks, epoch_onset, epoch_len)
                           for (j, i), ks in shared.items()]
  events = sorted(events, key=lambda e: (e.onset, e.duration, e.raw))
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
      unknown=dict(sorted((unknown or {}).items())),
      issues=issues,
  )


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
  cropped = dataclasses.replace(
      ann,
      epoch_onset=float(ann.epoch_onset + k0 * epoch_len),
      stages=stages,
      stage_raw=stage_raw,
      excluded=_count_excluded(stages, stage_raw),
      events=events,
  )
  return cropped, dict(sorted(counts.items()))
