"""Find PSG recordings in folders, pair signal files with annotation files, derive subject ids.

Pairing rules (same folder only), in order of preference:

* WFDB `rec.hea` ↔ `rec.st`, else `rec.arousal` (CinC-2018), `rec.csv` / `rec.tsv`.
* Sleep-EDF `SC4ssNE0-PSG.edf` ↔ `SC4ssNE?-Hypnogram.edf` (the hypnogram's 8th character names the
  scorer and differs from the PSG's); the same for the telemetry study `ST7ssNJ0-PSG.edf`.
* Any EDF `stem.edf` ↔ `stem-annotations.edf`, `stem_annotations.edf`, `stem-Hypnogram.edf`,
  `stem.csv`, `stem.tsv`, `stem-nsrr.xml`, `stem-profusion.xml`, `stem.xml` (a `-PSG` suffix is
  dropped from the stem first).
* NSRR cohort layout (across folders, see `cohorts.layout_annotations`):
  `.../edfs/<visit>/<id>.edf` ↔ `.../annotations-events-nsrr/<visit>/<id>-nsrr.xml`, else
  `.../annotations-events-profusion/<visit>/<id>-profusion.xml`; the unused Profusion file is
  reported ("NSRR XML is preferred over Profusion XML").

Subject ids: Sleep-EDF `SC4ssN…` → `SCss` and `ST7ssN…` → `STss` (the two studies have different
subjects with overlapping numbers); SHHS `shhs1-200001`/`shhs2-200001` → `shhs-200001` (MrOS,
CHAT visits likewise, `cohorts.subject_id`); slpdb `slp01a`/`slp01b` → `slp01`; BIDS-like
`sub-003_night-1` → `sub-003`; anything else → its recording id (one recording per subject).

A manifest CSV (`signal_path,annotation_path,subject_id[,recording_id]`, paths relative to the
manifest) replaces the rules entirely.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import re
from collections.abc import Iterable

from sleepfm_jax.data import cohorts
from sleepfm_jax.data.annotations import ANNOTATION_EXTENSIONS
from sleepfm_jax.data.errors import PSGError

# Reason given for an annotation file left unused because another file of the same recording (e.g.
# the EDF+ copy of a CSV) was preferred: reported, but not a pairing failure.
ALTERNATE = "alternate annotation file not used:"


@dataclasses.dataclass(frozen=True)
class RecordingSpec:
  """One recording to process: a signal file, its annotation file (or None) and its subject."""

  recording_id: str
  subject_id: str
  signal_path: str
  annotation_path: str | None


_ANNOTATION_EDF = re.compile(r"[-_](hypnogram|annotations?)$", re.I)
_SLEEPEDF = re.compile(r"^(S[CT])(\d)(\d{2})(\d)([A-Z])(\d)-PSG$", re.I)
_SLPDB = re.compile(r"^(slp\d+)[a-z]?$", re.I)
_BIDS = re.compile(r"^(sub-[A-Za-z0-9]+)(?:[_-].*)?$")
_UNSUPPORTED = {
    ".bdf": "unsupported signal format (BDF)",
    ".rec": "unsupported signal file extension .rec (rename EDF files to .edf)",
}


def recording_id_for(signal_path: str | os.PathLike) -> str:
  """Recording id of a signal file: its stem without a `-PSG`/`_PSG` suffix."""
  stem = pathlib.Path(signal_path).stem
  return re.sub(r"[-_]PSG$", "", stem, flags=re.I)


def subject_id_for(recording_id: str) -> str:
  """Subject id by the naming rules in the module docstring."""
  cohort_subject = cohorts.subject_id(recording_id)
  if cohort_subject:
    return cohort_subject
  m = re.match(r"^(S[CT])\d(\d{2})\d", recording_id, re.I)
  if m:
    return f"{m.group(1).upper()}{m.group(2)}"
  m = _SLPDB.match(recording_id)
  if m:
    return m.group(1).lower()
  m = _BIDS.match(recording_id)
  if m:
    return m.group(1)
  return recording_id


def _is_annotation_only_edf(path: pathlib.Path) -> bool:
  from sleepfm_jax.data.edf import read_edf_header  # pylint: disable=import-outside-toplevel

  try:
    return not read_edf_header(path).ordinary_signals
  except PSGError:
    return False  # unreadable: treat as a signal file; opening it will report why.


def _collect(
    paths_or_folder: str | os.PathLike | Iterable[str | os.PathLike],
) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
  """(files found, other files in the folders of files named one by one)."""
  if isinstance(paths_or_folder, (str, os.PathLike)):
    paths_or_folder = [paths_or_folder]
  files: list[pathlib.Path] = []
  folders: set[pathlib.Path] = set()
  for p in map(pathlib.Path, paths_or_folder):
    if p.is_dir():
      files.extend(sorted(q for q in p.rglob("*") if q.is_file()))
      continue
    if not p.is_file() and not p.suffix and p.with_suffix(".hea").is_file():
      p = p.with_suffix(".hea")  # a WFDB record named without extension
    if not p.is_file():
      raise FileNotFoundError(f"{p}: no such file or folder")
    files.append(p)
    folders.add(p.parent)
  seen, unique = set(), []
  for f in files:
    key = f.resolve()
    if key not in seen:
      seen.add(key)
      unique.append(f)
  siblings = [q for d in sorted(folders) for q in sorted(d.iterdir())
              if q.is_file() and q.resolve() not in seen]
  return unique, siblings


def _classify(f: pathlib.Path) -> str | None:
  """"signal", "annotation", a reason the file cannot be used, or None (not a PSG file)."""
  ext = f.suffix.lower()
  if ext == ".hea":
    return "signal"
  if ext == ".edf":
    if _ANNOTATION_EDF.search(f.stem) or _is_annotation_only_edf(f):
      return "annotation"
    return "signal"
  if ext in ANNOTATION_EXTENSIONS:
    return "annotation"
  return _UNSUPPORTED.get(ext)


def _annotation_candidates(signal: pathlib.Path, pool: dict[pathlib.Path, str]) -> list[str]:
  """Annotation files in `pool` (path -> lower-cased name) that pair with `signal`, best first."""
  folder = signal.parent
  names = {p.name.lower(): str(p) for p in pool if p.parent == folder}
  stem = signal.stem
  ext = signal.suffix.lower()
  wanted: list[str] = []
  if ext == ".hea":
    wanted += [f"{stem}.st", f"{stem}.arousal", f"{stem}.csv", f"{stem}.tsv"]
  else:
    base = recording_id_for(signal)
    m = _SLEEPEDF.match(stem)
    if m:
      prefix = stem[:7].lower()
      wanted += sorted(
          n for n in names if n.startswith(prefix) and n.endswith("-hypnogram.edf")
          and len(n) == len(prefix) + 1 + len("-hypnogram.edf")
      )
    for s in dict.fromkeys([stem, base]):
      wanted += [f"{s}-annotations.edf", f"{s}_annotations.edf", f"{s}-hypnogram.edf",
                 f"{s}.csv", f"{s}.tsv", f"{s}-nsrr.xml", f"{s}-profusion.xml", f"{s}.xml"]
  out = []
  for w in wanted:
    path = names.get(w.lower())
    if path and path not in out:
      out.append(path)
  return out + [str(p) for p in cohorts.layout_annotations(signal) if str(p) not in out]


def _from_manifest(manifest: str) -> tuple[list[RecordingSpec], list[tuple[str, str]]]:
  base = pathlib.Path(manifest).parent
  specs, problems, ids = [], [], {}
  with open(manifest, newline="", encoding="utf-8-sig") as f:
    rows = [r for r in csv.reader(f) if r and not r[0].lstrip().startswith("#")]
  if not rows:
    raise PSGError(manifest, "empty manifest")
  header = [c.strip().lower() for c in rows[0]]
  for col in ("signal_path", "annotation_path", "subject_id"):
    if col not in header:
      raise PSGError(manifest, f"manifest header lacks column '{col}' (got {rows[0]})")
  for lineno, row in enumerate(rows[1:], 2):
    rec = dict(zip(header, (c.strip() for c in row), strict=False))
    sig = rec.get("signal_path", "")
    if not sig:
      problems.append((manifest, f"line {lineno}: empty signal_path"))
      continue
    sig_path = str(base / sig)
    if not os.path.isfile(sig_path):
      problems.append((sig_path, f"signal file not found (manifest line {lineno})"))
      continue
    ann = rec.get("annotation_path") or None
    ann_path = str(base / ann) if ann else None
    if ann_path and not os.path.isfile(ann_path):
      problems.append((ann_path, f"annotation file not found (manifest line {lineno})"))
      continue
    rid = rec.get("recording_id") or recording_id_for(sig_path)
    if rid in ids:
      problems.append((sig_path, f"duplicate recording id {rid!r} (manifest line {lineno})"))
      continue
    ids[rid] = sig_path
    specs.append(RecordingSpec(rid, rec.get("subject_id") or subject_id_for(rid), sig_path,
                               ann_path))
  return specs, problems


def discover(
    paths_or_folder: str | os.PathLike | Iterable[str | os.PathLike] | None,
    manifest: str | None = None,
    require_annotations: bool = False,
) -> tuple[list[RecordingSpec], list[tuple[str, str]]]:
  """Finds recordings and pairs signal files with annotation files.

  Args:
    paths_or_folder: a folder (searched recursively), a file, or several; ignored with a manifest.
    manifest: optional CSV `signal_path,annotation_path,subject_id[,recording_id]` that replaces
      the pairing and subject rules (relative paths are relative to the manifest's folder).
    require_annotations: if True, signal files without an annotation file are reported as unpaired
      instead of returned with `annotation_path=None`.

  Returns:
    (recordings sorted by id, [(path, reason)] for files that were not used).
  """
  if manifest is not None:
    return _from_manifest(os.fspath(manifest))
  if paths_or_folder is None:
    raise ValueError("give a folder, files, or a manifest")
  signals: list[pathlib.Path] = []
  annotations: dict[pathlib.Path, str] = {}
  unpaired: list[tuple[str, str]] = []
  files, siblings = _collect(paths_or_folder)
  for f in files:
    kind = _classify(f)
    if kind == "signal":
      signals.append(f)
    elif kind == "annotation":
      annotations[f] = f.name.lower()
    elif kind:
      unpaired.append((str(f), kind))
  # Signal files named one by one still pair with annotation files beside them; those are not
  # reported when they pair with nothing (they were not asked for).
  explicit = set(annotations)
  for f in siblings:
    if f not in annotations and _classify(f) == "annotation":
      annotations[f] = f.name.lower()
  used: dict[str, str] = {}
  specs: dict[str, RecordingSpec] = {}
  # Signals with an annotation file first, so that a duplicate id keeps the annotated recording.
  pairs = {sig: _annotation_candidates(sig, annotations) for sig in signals}
  for sig in sorted(signals, key=lambda p: (not pairs[p], str(p))):
    rid = recording_id_for(sig)
    if rid in specs:
      unpaired.append((str(sig), f"duplicate recording id {rid!r} (also {specs[rid].signal_path})"))
      continue
    candidates = [c for c in pairs[sig] if c not in used]
    ann = candidates[0] if candidates else None
    for other in candidates[1:]:
      used[other] = (f"{ALTERNATE} {ann} was preferred for {sig}"
                     + cohorts.preference_note(ann, other))
    if ann is None and require_annotations:
      unpaired.append((str(sig), "no annotation file found"))
      continue
    if ann is not None:
      used[ann] = ""
    specs[rid] = RecordingSpec(rid, subject_id_for(rid), str(sig), ann)
  # Alternates found through a cohort layout are reported even outside the folders searched.
  for path in sorted(set(map(str, explicit)) | {p for p, why in used.items() if why}):
    reason = used.get(path)
    if reason is None:
      unpaired.append((path, "annotation file without a matching signal file"))
    elif reason:
      unpaired.append((path, reason))
  return sorted(specs.values(), key=lambda s: s.recording_id), sorted(unpaired)
