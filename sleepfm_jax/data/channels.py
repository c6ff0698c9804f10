"""Channel harmonisation: raw channel labels → canonical names → slots of a `Montage`.

PSG systems label the same derivation in many ways ("C4-M1", "EEG C4-A1", "C4:M1", "EEG (C4-A1)").
`normalise_label` turns a label into a comparison key that ignores case, whitespace, punctuation and
a leading modality word ("EEG ", "EOG ", "EMG ", "ECG ", "Resp "), and treats the earlobe references
A1/A2 as the mastoid references M1/M2 (AASM allows either). The built-in alias table `CANONICAL`
maps keys to canonical names; user aliases (raw label → canonical name) take precedence.

`harmonise(labels, montage)` assigns each raw channel of a recording to a slot of the montage (the
store's fixed channel layout) and returns a `ChannelMap` whose `to_dict()` is the JSON report: which
channel went where, which were ignored and why (unknown name, auxiliary channel, not in the
montage, duplicate for a filled slot, ignored by the user), and which montage channels and which
modalities are missing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from sleepfm_jax.modalities import MODALITIES  # re-exported: the data path's modality names

# canonical name -> (modality, aliases). Aliases are matched through `normalise_label`, so case,
# spacing, punctuation, "EEG "/"EOG "/... prefixes and A1/A2 vs M1/M2 variants need not be listed.
CANONICAL: dict[str, tuple[str, tuple[str, ...]]] = {
    # Brain activity: EEG (referential to the contralateral mastoid), EOG, chin EMG.
    "C3-M2": ("bas", ("C3-M2", "C3-A2", "EEG C3-A2", "C3:M2")),
    "C4-M1": ("bas", ("C4-M1", "C4-A1", "EEG C4-A1", "EEG C4-M1", "EEG (C4-A1)", "C4:M1")),
    "O1-M2": ("bas", ("O1-M2", "O1-A2", "EEG O1-A2", "EEG (O1-A2)", "O1:M2")),
    "O2-M1": ("bas", ("O2-M1", "O2-A1", "EEG O2-A1", "EEG (O2-A1)", "O2:M1")),
    "F3-M2": ("bas", ("F3-M2", "F3-A2", "EEG F3-A2", "F3:M2")),
    "F4-M1": ("bas", ("F4-M1", "F4-A1", "EEG F4-A1", "F4:M1")),
    "Fpz-Cz": ("bas", ("Fpz-Cz", "EEG Fpz-Cz")),
    "Pz-Oz": ("bas", ("Pz-Oz", "EEG Pz-Oz")),
    "E1-M2": ("bas", (
        "E1-M2", "E1-A2", "EOG E1-A2", "E1:M2", "LOC", "LOC-A2", "EOG (left)", "EOG L",
        "Left EOG",
    )),
    "E2-M1": ("bas", (
        "E2-M1", "E2-A1", "EOG E2-A1", "E2:M1", "ROC", "ROC-A1", "EOG (right)", "EOG R",
        "Right EOG",
    )),
    "EOG": ("bas", ("EOG", "EOG horizontal", "Horizontal EOG", "HEOG", "E1-E2", "LOC-ROC")),
    "Chin": ("bas", (
        "Chin", "Chin1-Chin2", "Chin2-Chin1", "Chin1-Chin3", "Chin EMG", "EMG Chin",
        "EMG submental", "Submental EMG", "EMG",
    )),
    # ECG.
    "ECG": ("ecg", ("ECG", "EKG", "ECG II", "ECG I", "ECG lead II", "ECG1-ECG2", "EKG1-EKG2")),
    # Respiratory: airflow (thermistor), nasal pressure, effort belts, oximetry.
    "Airflow": ("resp", (
        "Airflow", "Air flow", "Resp oro-nasal", "Oro-nasal", "Flow Therm", "Thermistor",
        "Therm", "Nasal thermistor", "Oronasal thermistor", "Resp (nasal)", "Resp airflow",
    )),
    "NasalPressure": ("resp", (
        "NasalPressure", "Nasal Pressure", "Nasal Press", "PFlow", "NPRE", "Pressure", "PTAF",
        "Cannula", "Nasal cannula", "Cannula flow", "Pressure flow",
    )),
    "Thorax": ("resp", (
        "Thorax", "THOR RES", "THOR", "Thoracic", "THO", "Chest", "Effort THO", "Effort thorax",
        "Resp chest", "Resp (chest)", "Chest effort", "Thor effort", "RIP Thorax",
    )),
    "Abdomen": ("resp", (
        "Abdomen", "ABDO RES", "ABDO", "ABD", "Abdominal", "Effort ABD", "Effort abdomen",
        "Resp abdomen", "Resp (abdomen)", "Abdo effort", "ABD effort", "RIP Abdomen",
    )),
    "SpO2": ("resp", ("SpO2", "SaO2", "SpO2 %", "SO2", "O2 sat", "Oxygen saturation", "OSAT")),
}

# Recognised channels that have no slot in any montage: reported as ignored with this reason.
AUXILIARY: dict[str, str] = {
    "Temp rectal": "temperature", "Temp": "temperature", "Temperature": "temperature",
    "Body temp": "temperature",
    "Event marker": "event marker", "Marker": "event marker", "Events": "event marker",
    "Light": "light sensor", "Lights": "light sensor", "Lux": "light sensor",
    "Position": "body position", "Body position": "body position", "Pos": "body position",
    "BP": "blood pressure", "ABP": "blood pressure",
    "Pleth": "plethysmogram", "PPG": "plethysmogram", "Plethysmogram": "plethysmogram",
    "HR": "heart/pulse rate", "Pulse": "heart/pulse rate", "Pulse rate": "heart/pulse rate",
    "Heart rate": "heart/pulse rate",
    "Snore": "snore/sound", "Snoring": "snore/sound", "Sound": "snore/sound", "Mic": "snore/sound",
    "Resp (sum)": "effort sum (RIP sum)", "RIP Sum": "effort sum (RIP sum)",
    "Effort sum": "effort sum (RIP sum)",
    "Leg": "leg EMG", "EMG Leg": "leg EMG", "Leg L": "leg EMG", "Leg R": "leg EMG",
    "Left leg": "leg EMG", "Right leg": "leg EMG", "LAT": "leg EMG", "RAT": "leg EMG",
    "CPAP": "PAP device signal", "CPAP pressure": "PAP device signal",
    "CFlow": "PAP device signal",
    "EtCO2": "CO2", "CO2": "CO2", "TcCO2": "CO2",
    "SV": "stroke volume",
    "Activity": "actigraphy", "Actigraphy": "actigraphy",
    "C3-O1": "EEG derivation without a canonical slot",
    "EEG (C3-O1)": "EEG derivation without a canonical slot",
}

REASON_UNKNOWN = "unknown channel name"
REASON_USER = "ignored by user alias"

_PUNCT = re.compile(r"[()\[\]{}%.,;'\"*#]")
_PREFIX = re.compile(r"^(eeg|eog|emg|ecg|ekg|resp|respiration|respiratory)\b[\s\-_:]*(?=\S)")
_EAR_REF = re.compile(r"\ba([12])\b")


def normalise_label(label: str) -> str:
  """A comparison key for a channel label: "EEG C4-A1", "C4:M1" and "c4 - m1" all give "c4m1".

  Lower-cases; drops punctuation, whitespace and separators (- : / _); strips one leading modality
  word (EEG, EOG, EMG, ECG, EKG, Resp) when something follows it; maps earlobe references A1/A2 to
  M1/M2.
  """
  s = _PUNCT.sub(" ", label.strip().lower()).strip()
  s = _PREFIX.sub("", s)
  s = _EAR_REF.sub(r"m\1", s)
  return re.sub(r"[^a-z0-9+?]", "", s)


def _build_index(table: Mapping[str, tuple[str, tuple[str, ...]]]) -> dict[str, str]:
  index: dict[str, str] = {}
  for name, (modality, aliases) in table.items():
    if modality not in MODALITIES:
      raise ValueError(f"canonical channel {name}: unknown modality {modality!r}")
    for alias in (name, *aliases):
      key = normalise_label(alias)
      if index.get(key, name) != name:
        raise ValueError(f"alias {alias!r} maps to both {index[key]} and {name}")
      index[key] = name
  return index


_ALIAS_INDEX = _build_index(CANONICAL)
_AUX_INDEX = {normalise_label(k): v for k, v in AUXILIARY.items()}
_clash = sorted(set(_AUX_INDEX) & set(_ALIAS_INDEX))
if _clash:
  raise ValueError(f"labels both auxiliary and canonical: {_clash}")


def modality_of(name: str) -> str:
  """Modality ("bas", "ecg", "resp") of a canonical channel name."""
  return CANONICAL[name][0]


def _check_user_aliases(aliases: Mapping[str, str | None] | None) -> dict[str, str | None]:
  out: dict[str, str | None] = {}
  for raw, name in (aliases or {}).items():
    if name and name not in CANONICAL:
      raise ValueError(f"user alias {raw!r} -> {name!r}: not a canonical name {sorted(CANONICAL)}")
    out[raw] = name or None
  return out


def _lookup(label: str, user: Mapping[str, str | None]) -> tuple[bool, str | None]:
  """(found in user aliases, canonical name or None)."""
  if label in user:
    return True, user[label]
  key = normalise_label(label)
  for raw, name in user.items():
    if normalise_label(raw) == key:
      return True, name
  return False, _ALIAS_INDEX.get(key)


def canonical_name(label: str, aliases: Mapping[str, str | None] | None = None) -> str | None:
  """Canonical name of a raw label, or None when it is unknown, auxiliary or user-ignored.

  `aliases` maps raw labels to canonical names and takes precedence over the built-in table (a
  value of None or "" ignores that channel).
  """
  return _lookup(label, _check_user_aliases(aliases))[1]


@dataclasses.dataclass(frozen=True)
class Montage:
  """The store's channel layout: canonical channel names per modality, in slot order."""

  bas: tuple[str, ...]
  ecg: tuple[str, ...]
  resp: tuple[str, ...]

  def __post_init__(self):
    seen = set()
    for modality in MODALITIES:
      for name in self.channels(modality):
        if name not in CANONICAL:
          raise ValueError(f"montage channel {name!r} is not a canonical name")
        if modality_of(name) != modality:
          raise ValueError(
              f"montage channel {name!r} belongs to {modality_of(name)}, not {modality}"
          )
        if name in seen:
          raise ValueError(f"montage channel {name!r} appears twice")
        seen.add(name)

  def channels(self, modality: str) -> tuple[str, ...]:
    if modality not in MODALITIES:
      raise ValueError(f"unknown modality {modality!r}; one of {MODALITIES}")
    return getattr(self, modality)

  def to_dict(self) -> dict[str, list[str]]:
    return {m: list(self.channels(m)) for m in MODALITIES}

  @classmethod
  def from_dict(cls, d: Mapping[str, Sequence[str]]) -> Montage:
    return cls(**{m: tuple(d.get(m, ())) for m in MODALITIES})


MONTAGES: dict[str, Montage] = {
    # The released SleepFM configuration (CinC-2018 channels).
    "paper": Montage(
        bas=("C3-M2", "C4-M1", "O1-M2", "O2-M1", "E1-M2"), ecg=("ECG",),
        resp=("Thorax", "SpO2", "Abdomen"),
    ),
    # What Sleep-EDF cassette recordings offer.
    "sleepedf": Montage(bas=("Fpz-Cz", "Pz-Oz", "EOG", "Chin"), ecg=(), resp=("Airflow",)),
    # A full clinical AASM montage; what the synthetic generator writes.
    "standard": Montage(
        bas=("C3-M2", "C4-M1", "O1-M2", "O2-M1", "E1-M2", "E2-M1", "Chin"), ecg=("ECG",),
        resp=("Airflow", "Thorax", "Abdomen", "SpO2"),
    ),
}


@dataclasses.dataclass
class ChannelMap:
  """Harmonisation result for one recording.

  Attributes:
    assignments: modality -> raw label per montage slot (None where missing).
    ignored: (raw label, reason) for every channel not assigned.
    missing: modality -> montage channel names with no source channel.
    missing_modalities: modalities with no assigned channel at all (including modalities the
      montage has no slots for).
    canonical: raw label -> canonical name, for the assigned channels.
  """

  assignments: dict[str, list[str | None]]
  ignored: list[tuple[str, str]]
  missing: dict[str, list[str]]
  missing_modalities: list[str]
  canonical: dict[str, str] = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    """JSON-ready report."""
    return {
        "assignments": {m: list(v) for m, v in self.assignments.items()},
        "mapped": [
            {"label": raw, "canonical": name, "modality": modality_of(name)}
            for raw, name in self.canonical.items()
        ],
        "ignored": [{"label": raw, "reason": reason} for raw, reason in self.ignored],
        "missing": {m: list(v) for m, v in self.missing.items()},
        "missing_modalities": list(self.missing_modalities),
    }

  @classmethod
  def from_dict(cls, d: Mapping) -> ChannelMap:
    return cls(
        assignments={m: list(v) for m, v in d["assignments"].items()},
        ignored=[(x["label"], x["reason"]) for x in d["ignored"]],
        missing={m: list(v) for m, v in d["missing"].items()},
        missing_modalities=list(d["missing_modalities"]),
        canonical={x["label"]: x["canonical"] for x in d.get("mapped", [])},
    )


def harmonise(
    labels: Sequence[str],
    montage: Montage,
    aliases: Mapping[str, str | None] | None = None,
) -> ChannelMap:
  """Assigns raw channel labels to the slots of `montage`.

  Each label is looked up in `aliases` first (raw label → canonical name; None/"" ignores it),
  then in the built-in table. The first channel to claim a slot gets it; later ones are reported
  as duplicates.
  """
  user = _check_user_aliases(aliases)
  slots = {name: (m, i) for m in MODALITIES for i, name in enumerate(montage.channels(m))}
  assignments: dict[str, list[str | None]] = {
      m: [None] * len(montage.channels(m)) for m in MODALITIES
  }
  ignored: list[tuple[str, str]] = []
  canonical: dict[str, str] = {}
  for label in labels:
    by_user, name = _lookup(label, user)
    if name is None:
      if by_user:
        reason = REASON_USER
      else:
        aux = _AUX_INDEX.get(normalise_label(label))
        reason = f"auxiliary channel ({aux}), not used" if aux else REASON_UNKNOWN
      ignored.append((label, reason))
    elif name not in slots:
      ignored.append((label, f"{name} ({modality_of(name)}) is not in the montage"))
    else:
      m, i = slots[name]
      if assignments[m][i] is not None:
        ignored.append((label, f"duplicate: {name} is already filled by '{assignments[m][i]}'"))
      else:
        assignments[m][i] = label
        canonical[label] = name
  missing = {
      m: [n for n, raw in zip(montage.channels(m), assignments[m], strict=True) if raw is None]
      for m in MODALITIES
  }
  missing_modalities = [m for m in MODALITIES if not any(assignments[m])]
  return ChannelMap(assignments, ignored, missing, missing_modalities, canonical)


def alias_table_markdown() -> str:
  """The alias and auxiliary tables of `docs/data.md`, generated from `CANONICAL`/`AUXILIARY`."""
  lines = ["| canonical | modality | recognised labels (examples; matching is normalised) |",
           "|---|---|---|"]
  for name, (modality, aliases) in CANONICAL.items():
    shown = ", ".join(f"`{a}`" for a in aliases)
    lines.append(f"| `{name}` | {modality} | {shown} |")
  lines += ["", "| auxiliary channel (ignored) | reason |", "|---|---|"]
  by_reason: dict[str, list[str]] = {}
  for raw, reason in AUXILIARY.items():
    by_reason.setdefault(reason, []).append(raw)
  for reason, raws in by_reason.items():
    lines.append(f"| {', '.join(f'`{r}`' for r in raws)} | {reason} |")
  return "\n".join(lines) + "\n"
