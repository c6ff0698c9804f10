"""Constants of the SYNTHETIC generator: stages, channels, EDF labels, rates, units, ranges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

STAGES = ("W", "N1", "N2", "N3", "REM")
W, N1, N2, N3, REM = range(5)
EPOCH_SECONDS = 30.0
GENERATOR_VERSION = 2  # 2: one shared latent physiology per night, `coupling`
CR = 4.0  # control rate (Hz) of the slow envelopes that drive the signals

STAGE_LABELS = ("Sleep stage W", "Sleep stage N1", "Sleep stage N2", "Sleep stage N3",
                "Sleep stage R")
EVENT_LABELS = {
    "obstructive_apnea": "Obstructive apnea",
    "central_apnea": "Central apnea",
    "hypopnea": "Hypopnea",
    "arousal": "Arousal",
    "desaturation": "SpO2 desaturation",
}
RESPIRATORY_KINDS = ("obstructive_apnea", "central_apnea", "hypopnea")

# Canonical channel -> (rate group, EDF label variants). The variants are what real systems write;
# the project's alias table maps each of them back to the canonical name.
CHANNELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "C3-M2": ("eeg", ("C3-M2", "EEG C3-A2", "C3:M2")),
    "C4-M1": ("eeg", ("C4-M1", "EEG C4-A1", "C4-A1")),
    "O1-M2": ("eeg", ("O1-M2", "EEG O1-A2")),
    "O2-M1": ("eeg", ("O2-M1", "EEG O2-A1")),
    "E1-M2": ("eog", ("E1-M2", "EOG E1-A2", "LOC")),
    "E2-M1": ("eog", ("E2-M1", "EOG E2-A1", "ROC")),
    "Chin": ("emg", ("Chin1-Chin2", "EMG Chin", "EMG submental")),
    "ECG": ("ecg", ("ECG", "EKG", "ECG II")),
    "Airflow": ("resp", ("Airflow", "Resp oro-nasal", "Flow Therm")),
    "Thorax": ("resp", ("THOR RES", "Chest", "Effort THO")),
    "Abdomen": ("resp", ("ABDO RES", "ABD", "Effort ABD")),
    "SpO2": ("spo2", ("SpO2", "SaO2")),
}
MODALITY = {"eeg": "bas", "eog": "bas", "emg": "bas", "ecg": "ecg", "resp": "resp", "spo2": "resp"}
CHANNEL_SETS: dict[str, tuple[str, ...]] = {
    # docs/architecture.md `standard` montage, in its order (bas, ecg, resp).
    "standard": ("C3-M2", "C4-M1", "O1-M2", "O2-M1", "E1-M2", "E2-M1", "Chin", "ECG", "Airflow",
                 "Thorax", "Abdomen", "SpO2"),
    # The released SleepFM configuration's channels.
    "paper": ("C3-M2", "C4-M1", "O1-M2", "O2-M1", "E1-M2", "ECG", "Thorax", "SpO2", "Abdomen"),
}
DEFAULT_RATES = {"eeg": 256.0, "eog": 256.0, "emg": 256.0, "ecg": 512.0, "resp": 32.0,
                 "spo2": 1.0}
_MIN_RATES = {"eeg": 64.0, "eog": 64.0, "emg": 64.0, "ecg": 64.0, "resp": 4.0, "spo2": 0.5}
UNITS = {"eeg": "uV", "eog": "uV", "emg": "uV", "ecg": "mV", "resp": "a.u.", "spo2": "%"}
# Physical ranges written to the EDF header; generated signals stay well inside them (the digital
# resolution is range / 65535, e.g. 0.046 uV for EEG), and anything outside is clipped and counted.
PHYSICAL_RANGES = {"eeg": (-1500.0, 1500.0), "eog": (-1500.0, 1500.0), "emg": (-1000.0, 1000.0),
                   "ecg": (-6.0, 6.0), "resp": (-2500.0, 2500.0), "spo2": (0.0, 100.0)}
PREFILTERING = {"eeg": "HP:0.3Hz", "eog": "HP:0.3Hz", "emg": "HP:10Hz", "ecg": "HP:0.3Hz",
                "resp": "", "spo2": ""}
# Channels a subject may lack (at most one group per subject).
MISSING_GROUPS = {
    "ecg": ("ECG",),
    "effort": ("Thorax", "Abdomen"),
    "resp": ("Airflow", "Thorax", "Abdomen", "SpO2"),
    "occipital": ("O1-M2", "O2-M1"),
}
MISSING_PROBS = (("ecg", 0.10), ("effort", 0.08), ("resp", 0.04), ("occipital", 0.05))
# A channel the harmoniser must ignore (not a PSG signal the project uses): a body-position sensor.
DISTRACTORS = ("Position",)

DIGITAL = (-32768, 32767)
COUPLINGS = ("physiological", "none")

def rnd(x: float) -> float:
  """Rounds a parameter for JSON (keeps manifests short and stable)."""
  return float(round(float(x), 6))


def resolve_channel_set(channel_set: str | Sequence[str]) -> tuple[str, ...]:
  """Returns canonical channel names for a set name or a comma-separated / sequence of names."""
  if isinstance(channel_set, str):
    if channel_set in CHANNEL_SETS:
      return CHANNEL_SETS[channel_set]
    names = tuple(s.strip() for s in channel_set.split(",") if s.strip())
  else:
    names = tuple(channel_set)
  unknown = [n for n in names if n not in CHANNELS]
  if unknown or not names:
    raise ValueError(f"unknown channel(s) {unknown} in channel set {channel_set!r}; known sets "
                     f"{sorted(CHANNEL_SETS)}, channels {list(CHANNELS)}")
  if len(set(names)) != len(names):
    raise ValueError(f"duplicate channels in channel set {channel_set!r}")
  return names


def parse_rates(text: str | Mapping[str, float] | None) -> dict[str, float]:
  """Parses `eeg=256,ecg=512,...` (any subset of groups) over `DEFAULT_RATES`."""
  rates = dict(DEFAULT_RATES)
  if text is None:
    return rates
  items = text.items() if isinstance(text, Mapping) else (
      item.split("=", 1) for item in text.split(",") if item.strip())
  for item in items:
    if len(item) != 2:
      raise ValueError(f"bad rate item {item!r}; expected group=Hz")
    key, value = item[0].strip(), float(item[1])
    if key not in rates:
      raise ValueError(f"unknown rate group {key!r}; groups are {list(DEFAULT_RATES)}")
    if value < _MIN_RATES[key] or value * EPOCH_SECONDS != round(value * EPOCH_SECONDS):
      raise ValueError(f"rate {key}={value}: must be >= {_MIN_RATES[key]} Hz and give a whole "
                       f"number of samples per 30 s")
    rates[key] = value
  return rates
