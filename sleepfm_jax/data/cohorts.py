"""Cohort presets: channel aliases, expected sampling rates and units, folder layouts, subject ids.

A preset (`PRESETS[name]`, selected with `PreprocessConfig.cohort`) states, per canonical channel of
`channels.CANONICAL`, the labels a cohort's files use for it, the sampling rates its montage
documentation gives, and the physical unit recordings are expected in. Preprocessing adds the
preset's labels to the user's aliases (the user's win) and writes a report note for every channel
whose rate or unit differs from the preset. Units are data only: nothing is converted here.

Sources: the NSRR `*-documentation` repositories' "montage and sampling rate information" pages
(SHHS visits 1 and 2, MESA, MrOS visit 1, CFS, CHAT, CCSHS), the CinC-2018 record headers and the
original SleepFM release's channel list (rthapa84/sleepfm-codebase `config.py`), and the Sleep-EDF
and MIT-BIH slpdb files of this project's real-data folder. Where a cohort records electrodes
against a common reference (Fpz) rather than as the derivation a slot needs (e.g. MrOS `C3` and
`A2`), the label is *not* aliased: the slot would need re-referencing, which preprocessing does not
do; such labels are listed under `needs_rereference` and reported.

Layouts: NSRR cohorts keep signals and annotations in parallel trees,
`polysomnography/edfs/<visit>/<id>.edf` with `polysomnography/annotations-events-nsrr/<visit>/
<id>-nsrr.xml` and `.../annotations-events-profusion/<visit>/<id>-profusion.xml`;
`layout_annotations` finds those (NSRR first). Subject ids: the visits of one participant share
one subject (`shhs1-200001`, `shhs2-200001` → `shhs-200001`; MrOS and CHAT likewise).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
from collections.abc import Mapping, Sequence

from sleepfm_jax.data.channels import CANONICAL, ChannelMap, normalise_label


@dataclasses.dataclass(frozen=True)
class ChannelSpec:
  """One canonical channel in a cohort.

  Attributes:
    labels: labels the cohort's files use for it (matched like all aliases, see
      `channels.normalise_label`); empty when the built-in table already knows them.
    rates: sampling rates (Hz) the documentation gives, any of which is expected.
    min_rate: a documented minimum rate instead of fixed rates.
    unit: expected physical unit (None where the documentation does not fix it).
    note: what the preset assumes about this channel (e.g. its reference).
  """

  labels: tuple[str, ...] = ()
  rates: tuple[float, ...] = ()
  min_rate: float | None = None
  unit: str | None = None
  note: str = ""


@dataclasses.dataclass(frozen=True)
class CohortPreset:
  """What preprocessing should expect of one cohort's recordings."""

  name: str
  description: str
  channels: Mapping[str, ChannelSpec]
  montage: str = "standard"
  needs_rereference: Mapping[str, str] = dataclasses.field(default_factory=dict)
  source: str = ""

  def __post_init__(self):
    unknown = set(self.channels) - set(CANONICAL)
    if unknown:
      raise ValueError(f"preset {self.name}: not canonical channel names: {sorted(unknown)}")

  def aliases(self) -> dict[str, str]:
    """Raw label → canonical name for the labels this preset adds."""
    return {label: name for name, spec in self.channels.items() for label in spec.labels}


_UV, _MV, _PCT = "uV", "mV", "%"


def _c(labels=(), rates=(), unit=None, note="", min_rate=None) -> ChannelSpec:
  return ChannelSpec(tuple(labels), tuple(float(r) for r in rates), min_rate, unit, note)


_FPZ = "recorded against Fpz: {}; not aliased (needs re-referencing)"
PRESETS: dict[str, CohortPreset] = {p.name: p for p in [
    CohortPreset(
        "shhs", "Sleep Heart Health Study, visits 1 (shhs1) and 2 (shhs2)", {
            "C4-M1": _c(["EEG"], [125, 128], _UV, "'EEG' is C4/A1"),
            "C3-M2": _c(["EEG(sec)", "EEG 2", "EEG2", "EEG sec"], [125, 128], _UV,
                        "'EEG(sec)' is C3/A2"),
            "E1-M2": _c([], [50, 64], _UV, "EOG(L) is referenced to PG1, not M2"),
            "E2-M1": _c([], [50, 64], _UV, "EOG(R) is referenced to PG1, not M1"),
            "Chin": _c([], [125, 128], _UV),
            "ECG": _c([], [125, 250, 256], _MV),
            "Thorax": _c([], [10, 8]), "Abdomen": _c([], [10, 8]),
            "Airflow": _c(["NEW AIR", "new A/F"], [10, 8], None, "thermistor"),
            "SpO2": _c([], [1], _PCT),
        }, source="nsrr/shhs-documentation: montage pages of SHHS1 and SHHS2 (v3, v4)"),
    CohortPreset(
        "mesa", "Multi-Ethnic Study of Atherosclerosis, sleep exam", {
            "C4-M1": _c(["EEG3"], [256], _UV, "'EEG3' is C4/M1 (EEG1 Fz/Cz, EEG2 Cz/Oz: no slot)"),
            "E1-M2": _c(["E1"], [256], _UV, "left EOG, referenced to Fpz"),
            "E2-M1": _c(["E2"], [256], _UV, "right EOG, referenced to Fpz"),
            "Chin": _c([], [256], _UV), "ECG": _c([], [256], _MV),
            "NasalPressure": _c(["Flow"], [32], None, "nasal cannula"),
            "Airflow": _c(["Aux_AC"], [32], None, "oronasal thermal sensor"),
            "Thorax": _c([], [32]), "Abdomen": _c([], [32]), "SpO2": _c([], [1], _PCT),
        }, source="nsrr/mesa-documentation: montage and sampling rate information"),
    CohortPreset(
        "mros", "Osteoporotic Fractures in Men Study, sleep visits", {
            "E1-M2": _c([], [256], _UV, "LOC, referenced to Fpz"),
            "E2-M1": _c([], [256], _UV, "ROC, referenced to Fpz"),
            "Airflow": _c([], [16], None, "thermistor"),
            "NasalPressure": _c([], [64]), "Thorax": _c([], [16]), "Abdomen": _c([], [16]),
            "SpO2": _c([], [1], _PCT),
        }, needs_rereference={
            "C3": _FPZ.format("C3-M2 = C3 - A2"), "C4": _FPZ.format("C4-M1 = C4 - A1"),
            "ECG L": _FPZ.format("ECG = ECG L - ECG R"),
            "L Chin": _FPZ.format("Chin = L Chin - R Chin")},
        source="nsrr/mros-documentation: equipment-mros1 (montage and sampling rates)"),
    CohortPreset(
        "cfs", "Cleveland Family Study", {
            "C3-M2": _c(["C3"], [128], _UV, "documented derivation C3/A2"),
            "C4-M1": _c(["C4"], [128], _UV, "documented derivation C4/A1"),
            "E1-M2": _c([], [128], _UV), "E2-M1": _c([], [128], _UV),
            "ECG": _c(["ECG1"], [256, 512], _MV, "documented derivation ECG1/ECG2"),
            "Chin": _c(["EMG1"], [256], _UV, "documented derivation EMG1/EMG2"),
            "Airflow": _c([], [32]), "Thorax": _c([], [32]), "Abdomen": _c([], [32]),
            "NasalPressure": _c(["Nasal Pres"], [64, 128]), "SpO2": _c([], [1], _PCT),
        }, source="nsrr/cfs-documentation: montage and sampling rate information (v1, v2)"),
    CohortPreset(
        "chat", "Childhood Adenotonsillectomy Trial", {
            **{f"{e}-M{m}": _c([e], [], _UV, f"documented derivation {e}/M{m}", 200)
               for e, m in (("F3", 2), ("F4", 1), ("C3", 2), ("C4", 1), ("O1", 2), ("O2", 1))},
            "E1-M2": _c(["E1"], [], _UV, "left EOG, referenced to Fpz", 200),
            "E2-M1": _c(["E2"], [], _UV, "right EOG, referenced to Fpz", 200),
            "Chin": _c(["Lchin"], [], _UV, "documented derivation Lchin/Cchin", 200),
            "ECG": _c(["ECG1"], [], _MV, "documented derivation ECG1/ECG3", 200),
            "Airflow": _c([], [], None, "", 32), "NasalPressure": _c([], [], None, "", 128),
            "Thorax": _c([], [], None, "", 32), "Abdomen": _c([], [], None, "", 32),
            "SpO2": _c([], [], _PCT, "", 10),
        }, source="nsrr/chat-documentation: montage and sampling rate information (minimum "
        "rates, may be exceeded)"),
    CohortPreset(
        "ccshs", "Cleveland Children's Sleep and Health Study", {
            "E1-M2": _c([], [128], _UV, "LOC, referenced to Fpz"),
            "E2-M1": _c([], [128], _UV, "ROC, referenced to Fpz"),
            "Airflow": _c([], [32]), "NasalPressure": _c(["NASAL PRES"], [64]),
            "Thorax": _c([], [32]), "Abdomen": _c([], [32]), "SpO2": _c([], [1], _PCT),
        }, needs_rereference={
            "C3": _FPZ.format("C3-M2 = C3 - A2"), "C4": _FPZ.format("C4-M1 = C4 - A1"),
            "ECG1": _FPZ.format("ECG = ECG1 - ECG2"), "EMG1": _FPZ.format("Chin = EMG2 - EMG1")},
        source="nsrr/ccshs-documentation: montage and sampling rate information"),
    CohortPreset(
        "cinc2018", "PhysioNet/CinC Challenge 2018 (the released SleepFM's data), 200 Hz", {
            **{d: _c([], [200], _UV) for d in ("F3-M2", "F4-M1", "C3-M2", "C4-M1", "O1-M2",
                                               "O2-M1", "E1-M2", "Chin")},
            "Thorax": _c(["CHEST"], [200], _UV), "Abdomen": _c(["ABD"], [200], _UV),
            "Airflow": _c(["AIRFLOW"], [200], _UV), "SpO2": _c(["SaO2"], [200], _PCT),
            "ECG": _c([], [200], _MV),
        }, montage="paper",
        source="CinC-2018 .hea headers (13 signals at 200 Hz); rthapa84/sleepfm-codebase config"),
    CohortPreset(
        "sleepedf", "Sleep-EDF Expanded, sleep cassette study", {
            "Fpz-Cz": _c([], [100], _UV), "Pz-Oz": _c([], [100], _UV), "EOG": _c([], [100], _UV),
            "Chin": _c([], [1, 100], _UV, "cassette: 1-Hz RMS envelope of the chin EMG"),
            "Airflow": _c([], [1], None, "oro-nasal thermistor, 1 Hz"),
        }, montage="sleepedf", source="Sleep-EDF SC4001E0 header (this project's real data)"),
    CohortPreset(
        "slpdb", "MIT-BIH Polysomnographic Database", {
            "ECG": _c([], [250], _MV), "Airflow": _c([], [250], "l", "'Resp (nasal)'"),
            "Thorax": _c([], [250], "l"), "EOG": _c([], [250], _MV), "Chin": _c([], [250], _MV),
            "C4-M1": _c([], [250], _MV), "O2-M1": _c([], [250], _MV),
        }, source="slpdb .hea headers (this project's real data): 250 Hz, EEG in mV"),
]}


def get(name: str) -> CohortPreset:
  if name not in PRESETS:
    raise ValueError(f"unknown cohort preset {name!r}; one of {sorted(PRESETS)}")
  return PRESETS[name]


def merged_aliases(name: str, user: Mapping[str, str | None] | None) -> dict[str, str | None]:
  """The preset's aliases overridden by the user's (no preset: the user's)."""
  out: dict[str, str | None] = dict(get(name).aliases()) if name else {}
  out.update(user or {})
  return out


def _unit_key(unit: str) -> str:
  return unit.strip().replace("µ", "u").replace("μ", "u").lower()


def check(name: str, channels: Sequence, cmap: ChannelMap) -> list[str]:
  """Report notes for the assigned channels whose rate or unit differs from preset `name`, and for
  labels the preset knows need re-referencing. `channels` are `recording.ChannelInfo`s."""
  if not name:
    return []
  preset = get(name)
  notes = []
  for info in channels:
    canonical = cmap.canonical.get(info.label)
    spec = preset.channels.get(canonical) if canonical else None
    if spec is None:
      reason = next((r for lab, r in preset.needs_rereference.items()
                     if normalise_label(lab) == normalise_label(info.label)), None)
      if reason:
        notes.append(f"{info.label}: {reason}")
      continue
    if spec.rates and not any(math.isclose(info.fs, r, rel_tol=1e-6) for r in spec.rates):
      notes.append(f"{info.label} ({canonical}): {info.fs:g} Hz; the {name} preset expects "
                   + " or ".join(f"{r:g}" for r in spec.rates) + " Hz")
    if spec.min_rate and info.fs < spec.min_rate - 1e-9:
      notes.append(f"{info.label} ({canonical}): {info.fs:g} Hz, below the {name} minimum of "
                   f"{spec.min_rate:g} Hz")
    if spec.unit and _unit_key(info.unit) != _unit_key(spec.unit):
      notes.append(f"{info.label} ({canonical}): unit '{info.unit}'; the {name} preset expects "
                   f"'{spec.unit}' (not converted)")
  return notes


# --- folder layouts and subject ids -------------------------------------------------------------

NSRR_SIGNALS = "edfs"
NSRR_ANNOTATIONS = (("annotations-events-nsrr", "-nsrr.xml"),
                    ("annotations-events-profusion", "-profusion.xml"))


def layout_annotations(signal: str | pathlib.Path) -> list[pathlib.Path]:
  """Annotation files of an NSRR-layout signal file that exist, NSRR XML before Profusion XML."""
  p = pathlib.Path(signal)
  parts = p.parts
  if NSRR_SIGNALS not in parts[:-1]:
    return []
  i = len(parts) - 2 - parts[:-1][::-1].index(NSRR_SIGNALS)  # the last "edfs" folder
  base, rel = pathlib.Path(*parts[:i]), pathlib.Path(*parts[i + 1:-1])
  found = [base / folder / rel / f"{p.stem}{suffix}" for folder, suffix in NSRR_ANNOTATIONS]
  return [f for f in found if f.is_file()]


def preference_note(chosen: str, other: str) -> str:
  """Why `chosen` beat `other` when that is the NSRR-over-Profusion rule, else ""."""
  if chosen.lower().endswith("-nsrr.xml") and other.lower().endswith("-profusion.xml"):
    return " (NSRR XML is preferred over Profusion XML)"
  return ""


_SUBJECT_RULES = (
    (re.compile(r"^shhs[12]-(\d+)$", re.I), "shhs-{}"),
    (re.compile(r"^mros-visit[12]-([a-z]{2}\d+)$", re.I), "mros-{}"),
    (re.compile(r"^chat-(?:baseline|followup)-(\d+)$", re.I), "chat-{}"),
)


def subject_id(recording_id: str) -> str | None:
  """The subject of a cohort recording id with several visits per participant, else None."""
  for pattern, template in _SUBJECT_RULES:
    m = pattern.match(recording_id)
    if m:
      return template.format(m.group(1).lower())
  return None
