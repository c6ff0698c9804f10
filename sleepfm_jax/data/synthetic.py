"""SYNTHETIC three-modality polysomnography (PSG) generator: the project's zero-download data set.

Nothing produced here is real physiology. The generator draws a plausible hypnogram and then renders
signals whose *statistics* depend on the (continuous-time, ramped) sleep stage and on scored events,
so that a model has to learn spectral / temporal structure to do well:

* brain activity (BAS): EEG C3-M2, C4-M1, O1-M2, O2-M1 (1/f background, stage-dependent delta,
  theta, alpha and beta rhythms, spindles, K-complexes, vertex waves, REM sawtooth waves), EOG E1-M2
  and E2-M1 (anti-correlated saccades, blinks, slow rolling eye movements, frontal EEG leakage) and
  chin EMG (tone by stage, REM atonia with twitches);
* ECG: PQRST beats whose timing follows a heart-rate model with stage effects, respiratory sinus
  arrhythmia, arousal surges and apnea-related bradycardia;
* respiration: thermistor airflow, thoracic and abdominal effort and SpO2, with obstructive apneas
  (paradoxical effort), central apneas, hypopneas and delayed desaturations.

Per subject, parameters vary (age-like factor, AHI, heart rate, gains, channel labels, missing
modalities); per night, everything is re-drawn from a seed. Every random choice comes from a
`numpy.random.SeedSequence`, so the output is a pure function of `(seed, subject, night)`.

The package rule holds: numpy/scipy only, never jax. See docs/synthetic.md for what is modelled,
what is not, the file formats and timing figures.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import fractions
import json
import math
import multiprocessing
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal

# --------------------------------------------------------------------------------------------------
# Constants: stages, channels, labels, units.
# --------------------------------------------------------------------------------------------------

STAGES = ("W", "N1", "N2", "N3", "REM")
W, N1, N2, N3, REM = range(5)
EPOCH_SECONDS = 30.0
GENERATOR_VERSION = 1
_CR = 4.0  # control rate (Hz) of the slow envelopes that drive the signals

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
_MISSING_PROBS = (("ecg", 0.10), ("effort", 0.08), ("resp", 0.04), ("occipital", 0.05))
# A channel the harmoniser must ignore (not a PSG signal the project uses).
DISTRACTORS = ("Position",)

_DIGITAL = (-32768, 32767)


def _f(x: float) -> float:
  """Rounds a parameter for JSON (keeps manifests short and stable)."""
  return float(round(float(x), 6))


# --------------------------------------------------------------------------------------------------
# Parameters.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SubjectParams:
  """Per-subject parameters. All values are illustrative, not fitted to any population."""

  subject_id: str
  index: int
  seed: int
  age_factor: float            # 0 = young adult, 1 = elderly (drives delta, N3, SE, arousals)
  sleep_efficiency: float      # target total sleep time / recording time
  sleep_onset_min: float       # median sleep-onset latency (minutes)
  n3_propensity: float
  rem_propensity: float
  ahi: float                   # target apnea-hypopnea index (events / hour of sleep)
  obstructive_fraction: float
  central_fraction: float
  hypopnea_fraction: float
  rem_sdb_factor: float        # how much more frequent events are in REM than in N1/N2
  desat_sensitivity: float     # desaturation depth scale (obesity-like)
  circulation_delay: float     # seconds from ventilation change to finger SpO2 change
  arousal_rate: float          # spontaneous arousals per hour of sleep
  hr_base: float               # bpm
  resp_rate: float             # breaths per minute
  spo2_baseline: float         # %
  alpha_freq: float
  alpha_amp: float             # uV RMS (occipital, eyes closed)
  spindle_freq: float
  spindle_density: float
  delta_scale: float
  bg_slope: float              # EEG background power-law exponent
  eyes_open_fraction: float    # fraction of wake spent with eyes open
  emg_scale: float
  artefact_level: float
  ecg_inverted: bool
  mains_hz: float              # 0 = no mains interference
  gains: dict[str, float]      # canonical channel -> multiplicative gain
  labels: dict[str, str]       # canonical channel -> EDF label
  channels: tuple[str, ...]    # canonical channels recorded (channel set minus missing)
  missing: tuple[str, ...]     # missing channel groups (keys of MISSING_GROUPS)
  distractors: tuple[str, ...]

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    for k, v in d.items():
      if isinstance(v, float):
        d[k] = _f(v)
    d["gains"] = {k: _f(v) for k, v in self.gains.items()}
    d["channels"] = list(self.channels)
    d["missing"] = list(self.missing)
    d["distractors"] = list(self.distractors)
    return d


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


def sample_subject(index: int, seed: int = 0, channel_set: str | Sequence[str] = "standard", *,
                   missing: Sequence[str] | None = None, missing_prob: float = 1.0,
                   distractor_prob: float = 0.3) -> SubjectParams:
  """Draws the parameters of subject `index` (0-based; id `sub-{index+1:03d}`).

  The draw depends only on `(seed, index)`, not on how many subjects a data set has.

  Args:
    index: subject index.
    seed: data-set seed.
    channel_set: set name (`standard`, `paper`) or canonical channel names.
    missing: force these missing groups (keys of `MISSING_GROUPS`); None = draw at random.
    missing_prob: scales the probability of each missing group (0 disables).
    distractor_prob: probability of an extra channel (`Position`) the harmoniser must ignore.
  """
  ss = np.random.SeedSequence([int(seed), int(index), 0x5B1EC7])
  rng = np.random.default_rng(ss)
  age = float(rng.beta(1.6, 1.6))
  se = float(np.clip(0.95 - 0.2 * age + rng.normal(0, 0.03), 0.6, 0.98))
  sol = float(np.clip((8.0 + 10.0 * age) * rng.lognormal(0, 0.3), 3.0, 45.0))
  n3p = float(np.clip(1.25 - 0.95 * age + rng.normal(0, 0.12), 0.1, 1.5))
  remp = float(np.clip(rng.normal(1.0, 0.15), 0.6, 1.4))
  band = rng.choice(4, p=[0.3, 0.3, 0.2, 0.2])
  lo, hi = ((0.0, 5.0), (5.0, 15.0), (15.0, 30.0), (30.0, 40.0))[band]
  ahi = float(rng.uniform(lo, hi))
  if rng.random() < 0.1:  # central-predominant subject
    central = float(rng.uniform(0.5, 0.8))
  else:
    central = float(rng.beta(1.0, 10.0))
  hyp = float((1 - central) * rng.uniform(0.3, 0.6))
  obstr = 1.0 - central - hyp
  names = resolve_channel_set(channel_set)
  gains = {}
  for name in CHANNELS:  # fixed order: the draw does not depend on the channel set
    group = CHANNELS[name][0]
    sd = {"eeg": 0.1, "eog": 0.2, "emg": 0.0, "ecg": 0.25, "resp": 0.4, "spo2": 0.0}[group]
    gains[name] = float(rng.lognormal(0, sd)) if sd else 1.0
  labels = {name: str(rng.choice(CHANNELS[name][1])) for name in CHANNELS}
  u = rng.random()
  if missing is None:
    missing_groups, acc = [], 0.0
    for group, p in _MISSING_PROBS:
      acc += p * missing_prob
      if u < acc:
        missing_groups = [group]
        break
  else:
    missing_groups = list(missing)
  for g in missing_groups:
    if g not in MISSING_GROUPS:
      raise ValueError(f"unknown missing group {g!r}; groups are {list(MISSING_GROUPS)}")
  # A group only counts as missing if the channel set had those channels.
  missing_groups = [g for g in missing_groups if set(MISSING_GROUPS[g]) & set(names)]
  dropped = {c for g in missing_groups for c in MISSING_GROUPS[g]}
  channels = tuple(n for n in names if n not in dropped)
  if not channels:
    raise ValueError(f"subject {index}: no channels left after dropping {missing_groups}")
  distractors = ("Position",) if rng.random() < distractor_prob else ()
  return SubjectParams(
      subject_id=f"sub-{index + 1:03d}",
      index=int(index),
      seed=int(seed),
      age_factor=age,
      sleep_efficiency=se,
      sleep_onset_min=sol,
      n3_propensity=n3p,
      rem_propensity=remp,
      ahi=ahi,
      obstructive_fraction=obstr,
      central_fraction=central,
      hypopnea_fraction=hyp,
      rem_sdb_factor=float(rng.uniform(1.0, 2.5)),
      desat_sensitivity=float(rng.lognormal(0, 0.3)),
      circulation_delay=float(rng.uniform(18.0, 32.0)),
      arousal_rate=float(np.clip(5.0 + 12.0 * age + rng.normal(0, 2.0), 2.0, 25.0)),
      hr_base=float(np.clip(rng.normal(62.0, 7.0), 45.0, 85.0)),
      resp_rate=float(np.clip(rng.normal(14.0, 2.0), 10.0, 20.0)),
      spo2_baseline=float(np.clip(97.0 - 1.5 * age + rng.normal(0, 0.7), 92.0, 99.0)),
      alpha_freq=float(np.clip(rng.normal(10.0, 0.6) - 0.6 * age, 8.0, 11.5)),
      alpha_amp=float(18.0 * rng.lognormal(0, 0.45)),
      spindle_freq=float(np.clip(rng.normal(13.0, 0.7), 11.5, 15.0)),
      spindle_density=float(rng.lognormal(0, 0.25) * (1.0 - 0.4 * age)),
      delta_scale=float((1.25 - 0.6 * age) * rng.lognormal(0, 0.15)),
      bg_slope=float(rng.uniform(0.9, 1.5)),
      eyes_open_fraction=float(rng.uniform(0.1, 0.6)),
      emg_scale=float(rng.lognormal(0, 0.45)),
      artefact_level=float(rng.lognormal(0, 0.6) * 0.5),
      ecg_inverted=bool(rng.random() < 0.08),
      mains_hz=float(rng.choice([50.0, 60.0])) if rng.random() < 0.3 else 0.0,
      gains=gains,
      labels=labels,
      channels=channels,
      missing=tuple(missing_groups),
      distractors=distractors,
  )


def night_seed(seed: int, index: int, night: int) -> int:
  """The 63-bit seed of one night, derived from (data-set seed, subject index, night)."""
  state = np.random.SeedSequence([int(seed), int(index), int(night), 0x419E7]).generate_state(2)
  return int((int(state[0]) << 32 | int(state[1])) & (2**63 - 1))


# --------------------------------------------------------------------------------------------------
# Night container.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SyntheticNight:
  """One generated night, in memory: what an EDF + annotation file pair would hold.

  `signals` and `rates` are keyed by EDF label (as a reader of the file would see them);
  `canonical` maps each label to its canonical channel name (`Position` for the distractor).
  Events are `(onset_s, duration_s, kind)` with kind in `EVENT_LABELS`.
  """

  subject: SubjectParams
  night: int
  seed: int
  start: datetime.datetime
  duration: float
  signals: dict[str, np.ndarray]
  rates: dict[str, float]
  units: dict[str, str]
  physical_ranges: dict[str, tuple[float, float]]
  canonical: dict[str, str]
  stages: np.ndarray                       # int8 [n_epochs], 0..4
  events: list[tuple[float, float, str]]
  info: dict[str, Any]                     # realised night-level figures (AHI, TST, ...)

  @property
  def recording_id(self) -> str:
    return f"{self.subject.subject_id}_night-{self.night}"

  @property
  def n_epochs(self) -> int:
    return int(self.stages.size)

  def label_of(self, canonical: str) -> str | None:
    for label, name in self.canonical.items():
      if name == canonical:
        return label
    return None

  def channel(self, canonical: str) -> tuple[np.ndarray, float]:
    """Returns (signal, fs) of a canonical channel; KeyError if the subject lacks it."""
    label = self.label_of(canonical)
    if label is None:
      raise KeyError(f"{self.recording_id}: no channel {canonical!r}")
    return self.signals[label], self.rates[label]

  def annotation_rows(self) -> list[tuple[float, float, str]]:
    """Stage runs and events as (onset, duration, label), sorted by onset (stages first)."""
    rows = []
    change = np.flatnonzero(np.diff(self.stages)) + 1
    starts = np.r_[0, change]
    ends = np.r_[change, self.stages.size]
    for s, e in zip(starts, ends, strict=True):
      rows.append((float(s * EPOCH_SECONDS), float((e - s) * EPOCH_SECONDS),
                   STAGE_LABELS[int(self.stages[s])], 0))
    for onset, dur, kind in self.events:
      rows.append((onset, dur, EVENT_LABELS[kind], 1))
    rows.sort(key=lambda r: (r[0], r[3], r[2]))
    return [(o, d, lab) for o, d, lab, _ in rows]

  def sdb_epochs(self) -> np.ndarray:
    """Per-epoch SDB label: 1 if an apnea/hypopnea overlaps the epoch, else 0 (int8)."""
    return _overlap_epochs(self.events, RESPIRATORY_KINDS, self.n_epochs)


def _overlap_epochs(events, kinds, n_epochs: int) -> np.ndarray:
  out = np.zeros(n_epochs, np.int8)
  for onset, dur, kind in events:
    if kind in kinds:
      a = int(onset // EPOCH_SECONDS)
      b = int(math.ceil((onset + dur) / EPOCH_SECONDS))
      out[max(a, 0):min(b, n_epochs)] = 1
  return out


# --------------------------------------------------------------------------------------------------
# Small numerical helpers.
# --------------------------------------------------------------------------------------------------


def _band(f: np.ndarray, lo: float, hi: float, order: int = 2) -> np.ndarray:
  """Butterworth-like band-pass magnitude (lo=0: low-pass only)."""
  with np.errstate(divide="ignore"):
    g = 1.0 / np.sqrt(1.0 + (f / hi) ** (2 * order))
    if lo > 0:
      g = g / np.sqrt(1.0 + (lo / np.maximum(f, 1e-12)) ** (2 * order))
  return g


def _gauss(f0: float, sd: float) -> Callable[[np.ndarray], np.ndarray]:
  return lambda f: np.exp(-0.5 * ((f - f0) / sd) ** 2)


class _Shaper:
  """Draws Gaussian noise with a fixed amplitude spectrum `amp(f)` (unit RMS, float32 [n]).

  The spectrum is computed once per (length, rate, shape) and reused for every draw.
  """

  def __init__(self, n: int, fs: float, amp: Callable[[np.ndarray], np.ndarray]):
    self.n = n
    self.nfft = scipy.fft.next_fast_len(max(n, 2), real=True)
    f = np.fft.rfftfreq(self.nfft, 1.0 / fs)
    f[0] = f[1] if f.size > 1 else 1.0
    mag = np.asarray(amp(f), dtype=np.float32)
    mag[0] = 0.0
    self.mag = mag

  def __call__(self, rng: np.random.Generator) -> np.ndarray:
    z = rng.standard_normal(2 * self.mag.size, dtype=np.float32).view(np.complex64)
    z *= self.mag
    x = scipy.fft.irfft(z, self.nfft)[:self.n]
    rms = math.sqrt(float(np.dot(x, x)) / max(self.n, 1))
    x *= np.float32(1.0 / max(rms, 1e-12))
    return x


def _spectral_noise(rng: np.random.Generator, n: int, fs: float,
                    amp: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
  """One draw of Gaussian noise with amplitude spectrum `amp(f)`, unit RMS, float32 [n]."""
  return _Shaper(n, fs, amp)(rng)


def _add_movements(rng: np.random.Generator, x: np.ndarray, fs: float,
                   moves: Sequence[tuple[float, float]], lf_amp: tuple[float, float],
                   hf_amp: tuple[float, float], hf_lo: float = 15.0) -> None:
  """Adds body-movement artefacts in place: a slow swing plus a muscle burst under a Hann window."""
  hf_hi = min(100.0, 0.42 * fs)
  for t0, d in moves:
    m = int(d * fs)
    if m < 8:
      continue
    win = np.hanning(m).astype(np.float32)
    w = rng.uniform(*lf_amp) * _spectral_noise(rng, m, fs, lambda f: _band(f, 0.3, min(4.0, hf_hi)))
    if hf_amp[1] > 0 and hf_hi > hf_lo:
      w = w + rng.uniform(*hf_amp) * _spectral_noise(rng, m, fs,
                                                     lambda f: _band(f, hf_lo, hf_hi))
    _add_at(x, fs, t0, win * w)


def _ou(rng: np.random.Generator, n: int, tau: float, dt: float = 1.0 / _CR) -> np.ndarray:
  """Stationary Ornstein-Uhlenbeck process with unit variance and time constant `tau` (s)."""
  a = math.exp(-dt / tau)
  w = rng.standard_normal(n)
  y = scipy.signal.lfilter([math.sqrt(1 - a * a)], [1, -a], w, zi=[a * rng.standard_normal()])[0]
  return y


def _lognormal_mod(rng: np.random.Generator, n: int, tau: float, sigma) -> np.ndarray:
  """Slow multiplicative fluctuation exp(sigma * OU - sigma^2 / 2) (mean about 1)."""
  s = np.asarray(sigma, dtype=np.float64)
  return np.exp(s * _ou(rng, n, tau) - 0.5 * s * s)


def _to_rate(track: np.ndarray, n: int, fs: float) -> np.ndarray:
  """Linearly interpolates a control-rate track onto `n` samples at `fs` (float32)."""
  t_ct = np.arange(track.size) / _CR
  return np.interp(np.arange(n) / fs, t_ct, track).astype(np.float32)


def _poisson_times(rng: np.random.Generator, rate_ct: np.ndarray) -> np.ndarray:
  """Event times (s) of an inhomogeneous Poisson process with rate `rate_ct` (1/s, control rate)."""
  p = np.clip(rate_ct / _CR, 0.0, 0.9)
  idx = np.flatnonzero(rng.random(p.size) < p)
  return (idx + rng.random(idx.size)) / _CR


def _intervals_to_track(intervals, n_ct: int, ramp_s: float = 1.0, values=None) -> np.ndarray:
  """0/1 (or `values`) indicator of [onset, end) intervals at control rate, ramped."""
  x = np.zeros(n_ct)
  for i, (on, end) in enumerate(intervals):
    a, b = int(round(on * _CR)), int(round(end * _CR))
    v = 1.0 if values is None else values[i]
    x[max(a, 0):max(min(b, n_ct), 0)] = np.maximum(x[max(a, 0):max(min(b, n_ct), 0)], v)
  width = max(int(round(ramp_s * _CR)), 1)
  return scipy.ndimage.uniform_filter1d(x, width, mode="nearest") if width > 1 else x


def _renewal_gate(rng: np.random.Generator, n_ct: int, mean_on: float, mean_off: float,
                  ramp_s: float = 1.0) -> np.ndarray:
  """An alternating on/off process (exponential durations) at control rate, ramped."""
  total = n_ct / _CR
  k = int(total / (mean_on + mean_off) * 2 + 20)
  dur = np.empty(2 * k)
  dur[0::2] = rng.exponential(mean_on, k) + 1.0
  dur[1::2] = rng.exponential(mean_off, k) + 1.0
  edges = np.cumsum(dur) - rng.uniform(0, dur[0] + dur[1])
  starts, ends = edges[0::2], edges[1::2]
  return _intervals_to_track(list(zip(starts, ends, strict=True)), n_ct, ramp_s)


def _add_at(track: np.ndarray, fs: float, onset: float, wave: np.ndarray) -> None:
  """Adds `wave` into `track` starting at `onset` seconds (clipped at the edges)."""
  i = int(round(onset * fs))
  a, b = max(i, 0), min(i + wave.size, track.size)
  if b > a:
    track[a:b] += wave[a - i:b - i]


def _highpass(x: np.ndarray, fs: float, fc: float) -> np.ndarray:
  """First-order high-pass (AC coupling of a PSG amplifier)."""
  a = math.exp(-2 * math.pi * fc / fs)
  return scipy.signal.lfilter([(1 + a) / 2, -(1 + a) / 2], [1, -a], x).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Hypnogram and continuous-time stage weights.
# --------------------------------------------------------------------------------------------------


def _hypnogram(rng: np.random.Generator, p: SubjectParams, n_epochs: int,
               se_target: float) -> np.ndarray:
  """A plausible AASM hypnogram: onset latency, ~90-min cycles, N3 early, REM later, awakenings."""
  seq: list[int] = []
  sol = int(round(np.clip(p.sleep_onset_min * rng.lognormal(0, 0.35), 2, 60) * 2))
  seq += [W] * max(sol, 1)
  # Sleep onset: N1, sometimes interrupted by a return to wake.
  for _ in range(rng.integers(0, 3)):
    seq += [N1] * int(rng.integers(1, 4)) + [W] * int(rng.integers(1, 3))
  seq += [N1] * int(rng.integers(2, 10))
  n3_min = (30.0, 18.0, 7.0, 2.0)
  rem_min = (10.0, 20.0, 26.0, 30.0)
  skip_first_rem = rng.random() < 0.12
  cycle = 0
  while len(seq) < n_epochs + 4:
    length = float(np.clip(rng.normal(92, 12), 70, 120))
    n3 = p.n3_propensity * (n3_min[cycle] if cycle < 4 else 0.0) * rng.uniform(0.6, 1.4)
    rem = p.rem_propensity * rem_min[min(cycle, 3)] * rng.uniform(0.6, 1.4)
    if cycle == 0 and skip_first_rem:
      rem = 0.0
    n1 = 0.0 if cycle == 0 else float(rng.integers(0, 3)) / 2
    n2 = max(length - n3 - rem - n1, 10.0)
    split = rng.uniform(0.45, 0.75) if n3 >= 1 else 1.0
    parts = [(N1, n1), (N2, n2 * split), (N3, n3), (N2, n2 * (1 - split)), (REM, rem)]
    for stage, minutes in parts:
      seq += [stage] * int(round(minutes * 2))
    cycle += 1
  st = np.asarray(seq[:n_epochs], dtype=np.int8)
  onset = min(sol, n_epochs)
  # Micro-structure: brief lightening within runs.
  u = rng.random(n_epochs)
  body = np.arange(n_epochs) >= onset
  st[body & (st == N3) & (u < 0.07)] = N2
  st[body & (st == N2) & (u < 0.025)] = N1
  st[body & (st == REM) & (u < 0.02)] = N1
  # Wake after sleep onset: brief awakenings (more later in the night) until the target is met.
  sleep_span = n_epochs - onset
  target_waso = int(max((1.0 - se_target) * n_epochs - onset, 0))
  waso, tries = 0, 0
  weight = np.linspace(1.0, 2.0, max(sleep_span, 1))
  while waso < target_waso and sleep_span > 4 and tries < 1000:
    tries += 1
    dur = int(min(rng.geometric(1.0 / (2.0 + 4.0 * p.age_factor)), 30))
    pos = onset + 1 + int(rng.choice(sleep_span - 1, p=weight[1:] / weight[1:].sum()))
    end = min(pos + dur, n_epochs)
    new = int((st[pos:end] != W).sum())
    st[pos:end] = W
    if end < n_epochs and rng.random() < 0.7:
      st[end:min(end + int(rng.integers(1, 3)), n_epochs)] = N1  # re-entry through N1
    waso += new
  return st


# Brief intrusions of a neighbouring state into an epoch (the epoch keeps its majority stage):
# drowsy theta in wake, alpha or spindles in N1, deeper or lighter stretches in N2/N3, etc.
_INTRUSION_PROB = (0.3, 0.6, 0.3, 0.4, 0.25)
_INTRUDERS = ((N1,), (W, N2), (N1, N3), (N2,), (N1, W))


def _stage_weights(rng: np.random.Generator, stages: np.ndarray,
                   ramp_s: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
  """Soft stage weights P [n_ct, 5] and the run index of each control sample.

  The physiological state changes at each scored boundary shifted by up to ±7 s and ramps over
  `ramp_s` seconds; some epochs carry a 4–13 s intrusion of a neighbouring state. Both keep every
  epoch at least 16 s in its scored stage, so the label stays the majority state (AASM rule).
  """
  n_ct = int(stages.size * EPOCH_SECONDS * _CR)
  change = np.flatnonzero(np.diff(stages)) + 1
  t_b = change * EPOCH_SECONDS + rng.uniform(-7.0, 7.0, change.size)
  run_stage = stages[np.r_[0, change]]
  t = np.arange(n_ct) / _CR
  run_ct = np.searchsorted(t_b, t, side="right")
  stage_ct = run_stage[run_ct]
  hit = rng.random(stages.size) < np.asarray(_INTRUSION_PROB)[stages]
  for ep in np.flatnonzero(hit):
    d = rng.uniform(4.0, 13.0)
    lo = ep * EPOCH_SECONDS + 7.0  # stay clear of the jittered boundaries
    hi = (ep + 1) * EPOCH_SECONDS - 7.0 - d
    if hi <= lo:
      continue
    a = int((lo + rng.uniform(0, hi - lo)) * _CR)
    choices = _INTRUDERS[stages[ep]]
    stage_ct[a:a + int(d * _CR)] = choices[int(rng.integers(len(choices)))]
  onehot = np.eye(5, dtype=np.float64)[stage_ct]
  P = scipy.ndimage.uniform_filter1d(onehot, int(ramp_s * _CR), axis=0, mode="nearest")
  return P, run_ct


# --------------------------------------------------------------------------------------------------
# Scored events: respiratory events, desaturations and arousals.
# --------------------------------------------------------------------------------------------------


def _respiratory_events(rng: np.random.Generator, p: SubjectParams, stages: np.ndarray,
                        ahi: float) -> list[dict[str, Any]]:
  """Schedules apneas/hypopneas in sleep (more in N1/N2/REM, rare in N3, none in W)."""
  n = stages.size
  sleep = stages != W
  if ahi <= 0 or not sleep.any():
    return []
  w = np.array([0.0, 1.0, 1.0, 0.12, p.rem_sdb_factor])[stages]
  mean_w = w[sleep].mean()
  lam = ahi / 3600.0
  dead = 40.0  # typical event + recovery: compensates the rate lost to the refractory time
  lam = lam / max(1.0 - lam * dead, 0.3)
  rate = lam * w / max(mean_w, 1e-9) + 1e-12
  h_edges = np.r_[0.0, np.cumsum(rate * EPOCH_SECONDS)]
  t_edges = np.arange(n + 1) * EPOCH_SECONDS
  fr = np.array([p.obstructive_fraction, p.central_fraction, p.hypopnea_fraction])
  events = []
  pos = 0.0
  while True:
    h = np.interp(pos, t_edges, h_edges) + rng.exponential(1.0)
    if h >= h_edges[-1]:
      break
    onset = float(np.interp(h, h_edges, t_edges))
    kind = RESPIRATORY_KINDS[int(rng.choice(3, p=fr / fr.sum()))]
    ep = int(onset // EPOCH_SECONDS)
    in_rem = stages[min(ep, n - 1)] == REM
    if kind == "central_apnea":
      dur = 10.0 + rng.gamma(2.0, 5.0)
    else:
      dur = 10.0 + rng.gamma(2.0, 7.0)
    dur = float(min(dur * (1.25 if in_rem else 1.0), 90.0))
    onset, dur = round(onset, 1), round(dur, 1)
    end = onset + dur
    a, b = int(onset // EPOCH_SECONDS), int(math.ceil(end / EPOCH_SECONDS))
    recovery = float(rng.uniform(8.0, 25.0))
    if b > n or not sleep[a:b].all():
      pos = onset + 5.0
      continue
    if kind == "hypopnea":
      depth = float(np.clip(rng.uniform(3.3, 6.0) * math.sqrt(p.desat_sensitivity), 3.3, 12.0))
    else:
      depth = p.desat_sensitivity * (1.5 + 0.16 * dur) * rng.lognormal(0, 0.25)
      depth *= (0.8 if kind == "central_apnea" else 1.0) * (1.25 if in_rem else 1.0)
      depth = float(np.clip(depth, 1.0, 30.0))
    arousal_p = {"obstructive_apnea": 0.8, "hypopnea": 0.6, "central_apnea": 0.35}[kind]
    events.append({
        "onset": onset, "duration": dur, "kind": kind, "depth": round(depth, 2),
        "lag": round(p.circulation_delay + rng.normal(0, 3.0), 1),
        "arousal": bool(rng.random() < arousal_p), "recovery": recovery,
        "flow": float(rng.uniform(0.3, 0.6) if kind == "hypopnea" else rng.uniform(0.0, 0.03)),
        "effort": float(rng.uniform(0.55, 0.9)) if kind == "hypopnea" else (
            float(rng.uniform(0.0, 0.06)) if kind == "central_apnea" else 1.0),
        "paradox": float(rng.uniform(2.2, 2.9)) if kind == "obstructive_apnea" else (
            float(rng.uniform(0.3, 1.0)) if kind == "hypopnea" and rng.random() < 0.5 else 0.0),
    })
    pos = end + recovery
  return events


def _arousals(rng: np.random.Generator, p: SubjectParams, stages: np.ndarray,
              resp_events: list[dict[str, Any]]) -> list[tuple[float, float]]:
  """Spontaneous and respiratory-terminating arousals (3–15 s, in sleep, non-overlapping)."""
  n = stages.size
  sleep = stages != W
  w = np.array([0.0, 1.3, 1.0, 0.35, 0.8])[stages]
  mean_w = w[sleep].mean() if sleep.any() else 1.0
  rate_ep = p.arousal_rate / 3600.0 * w / max(mean_w, 1e-9)
  count = rng.poisson(rate_ep * EPOCH_SECONDS)
  cand = []
  for ep in np.flatnonzero(count):
    for _ in range(int(count[ep])):
      cand.append((ep * EPOCH_SECONDS + rng.uniform(0, EPOCH_SECONDS),
                   float(np.clip(3.0 + rng.gamma(1.5, 3.0), 3.0, 15.0))))
  for ev in resp_events:
    if ev["arousal"]:
      cand.append((ev["onset"] + ev["duration"] + rng.uniform(-1.5, 1.5),
                   float(rng.uniform(3.0, 12.0))))
  cand.sort()
  out: list[tuple[float, float]] = []
  for onset, dur in cand:
    onset = round(onset, 1)
    ep = int(onset // EPOCH_SECONDS)
    if ep >= n or not sleep[ep]:
      continue
    # Clip at the end of the sleep stretch (an arousal is scored within sleep).
    end = onset + dur
    stop = ep
    while stop + 1 < n and sleep[stop + 1] and (stop + 1) * EPOCH_SECONDS < end:
      stop += 1
    end = min(end, (stop + 1) * EPOCH_SECONDS)
    dur = round(end - onset, 1)
    if dur < 3.0 or (out and onset < out[-1][0] + out[-1][1] + 10.0):
      continue
    out.append((onset, dur))
  return out


# --------------------------------------------------------------------------------------------------
# Signal generators.
# --------------------------------------------------------------------------------------------------

_EEG_RMS = {  # uV RMS by stage (W, N1, N2, N3, REM), at topography 1
    "bg": (8.0, 10.0, 12.0, 13.0, 8.5),
    "theta": (3.0, 10.0, 7.0, 6.0, 8.0),
    "beta": (4.0, 2.5, 2.0, 1.5, 3.0),
    "alpha": (1.0, 0.25, 0.08, 0.06, 0.2),   # x alpha_amp; wake value for eyes closed
}
_DEPTH = (0.0, 0.08, 0.35, 1.0, 0.05)        # slow-wave "depth" target by stage
_EEG_TOPO = {  # (C3, C4, O1, O2)
    "bg": (1.0, 1.0, 0.9, 0.9), "delta": (1.0, 1.0, 0.7, 0.7), "theta": (1.0, 1.0, 0.8, 0.8),
    "alpha": (0.45, 0.45, 1.0, 1.0), "beta": (1.0, 1.0, 0.8, 0.8),
    "spindle": (1.0, 1.0, 0.45, 0.45), "kcomplex": (1.0, 1.0, 0.6, 0.6),
    "vertex": (1.0, 1.0, 0.3, 0.3), "sawtooth": (1.0, 1.0, 0.5, 0.5),
}
_EEG_NAMES = ("C3-M2", "C4-M1", "O1-M2", "O2-M1")
_EVENT_RATES = {  # per minute by stage
    "spindle": (0.0, 0.3, 5.0, 2.0, 0.0),
    "kcomplex": (0.0, 0.2, 1.5, 0.4, 0.0),
    "vertex": (0.0, 2.0, 0.3, 0.0, 0.0),
    "sawtooth": (0.0, 0.0, 0.0, 0.0, 0.6),
}


def _signature(p: SubjectParams) -> dict[str, np.ndarray]:
  """A subject's individual stage tables: the population tables with per-entry jitter.

  Drawn from the subject's own seed, so they are the same every night of that subject. Individual
  differences like these are why a stager trained on some people is less sure on others.
  """
  rng = np.random.default_rng(np.random.SeedSequence([p.seed, p.index, 0x7AB1E]))
  sig = {k: np.asarray(v) * rng.lognormal(0, 0.25, 5) for k, v in _EEG_RMS.items()}
  sig["sem"] = np.array([0.0, 60.0, 8.0, 0.0, 5.0]) * rng.lognormal(0, 0.4, 5)
  sig["emg"] = np.array([14.0, 8.0, 6.0, 5.5, 1.3]) * rng.lognormal(0, 0.2, 5)
  # REM atonia: the lowest tone of the night, by a subject-specific margin.
  sig["emg"][REM] = sig["emg"][1:4].min() * rng.uniform(0.12, 0.5)
  sig["phasic"] = float(rng.lognormal(0, 0.5))     # REM eye-movement density
  sig["eeg_scale"] = float(rng.lognormal(0, 0.25))  # overall EEG amplitude (skull, age, ...)
  return sig


def _transients(rng: np.random.Generator, p: SubjectParams, P: np.ndarray, phasic: np.ndarray,
                arousal_onsets: np.ndarray, n: int, fs: float) -> dict[str, np.ndarray]:
  """Spindle, K-complex, vertex-wave and sawtooth tracks (uV, topography 1)."""
  out = {}
  for name, per_min in _EVENT_RATES.items():
    rate = P @ (np.asarray(per_min) / 60.0)
    if name == "spindle":
      rate = rate * p.spindle_density
    if name == "sawtooth":
      rate = rate * (1.0 + 2.0 * phasic)
    times = list(_poisson_times(rng, rate))
    if name == "kcomplex":  # K-complexes also follow some arousals
      times += list(arousal_onsets[rng.random(arousal_onsets.size) < 0.3])
    track = np.zeros(n, np.float32)
    for t0 in times:
      if name == "spindle":
        d = rng.uniform(0.5, 2.0)
        t = np.arange(int(d * fs)) / fs
        f0 = p.spindle_freq + rng.normal(0, 0.4)
        wave = rng.uniform(20, 45) * np.sin(np.pi * t / d) ** 2 * np.sin(
            2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi))
      elif name == "kcomplex":
        t = np.arange(int(1.4 * fs)) / fs
        a = rng.uniform(70, 160) * math.sqrt(p.delta_scale)
        wave = -a * np.exp(-0.5 * ((t - 0.3) / 0.09) ** 2) + 0.55 * a * np.exp(
            -0.5 * ((t - 0.75) / 0.18) ** 2)
        if rng.random() < 0.35:  # spindle riding on the K-complex's tail
          f0 = p.spindle_freq
          wave += 15 * np.sin(np.pi * np.clip((t - 0.6) / 0.8, 0, 1)) ** 2 * np.sin(
              2 * np.pi * f0 * t)
      elif name == "vertex":
        t = np.arange(int(0.5 * fs)) / fs
        a = rng.uniform(30, 80)
        wave = -a * np.exp(-0.5 * ((t - 0.12) / 0.04) ** 2) + 0.3 * a * np.exp(
            -0.5 * ((t - 0.26) / 0.07) ** 2)
      else:  # sawtooth train: 2-3.5 Hz, 1-3 s
        d = rng.uniform(1.0, 3.0)
        t = np.arange(int(d * fs)) / fs
        wave = rng.uniform(20, 45) * np.sin(np.pi * t / d) * scipy.signal.sawtooth(
            2 * np.pi * rng.uniform(2.0, 3.5) * t, 0.2)
      _add_at(track, fs, t0, wave.astype(np.float32))
    out[name] = track
  return out


def _ecg_wave(beats: np.ndarray, rr: np.ndarray, amp: np.ndarray, n: int, fs: float,
              morph: np.ndarray, qrs_only: bool = False) -> np.ndarray:
  """Renders PQRST beats at `beats` (s); the T wave follows the preceding RR (QT ~ sqrt RR)."""
  def impulses(times, weights):
    idx = np.round(times * fs).astype(np.int64)
    ok = (idx >= 0) & (idx < n)
    return np.bincount(idx[ok], weights[ok], minlength=n)

  t = np.arange(-0.3, 0.3, 1.0 / fs)
  pa, qa, ra, sa, ta = morph
  qrs = (ra * np.exp(-0.5 * (t / 0.011) ** 2) + qa * np.exp(-0.5 * ((t + 0.028) / 0.01) ** 2)
         + sa * np.exp(-0.5 * ((t - 0.03) / 0.012) ** 2))
  if not qrs_only:
    qrs = qrs + pa * np.exp(-0.5 * ((t + 0.19) / 0.025) ** 2)
  off = int(0.3 * fs)
  x = scipy.signal.oaconvolve(impulses(beats, amp), qrs)[off:off + n]
  if not qrs_only:
    tt = np.arange(0, 0.3, 1.0 / fs)
    twave = ta * np.exp(-0.5 * ((tt - 0.15) / 0.055) ** 2)
    t_peak = beats + 0.27 * np.sqrt(np.clip(rr, 0.4, 2.0)) - 0.15
    x = x + scipy.signal.oaconvolve(impulses(t_peak, amp), twave)[:n]
  return x.astype(np.float32)


def generate_night(params: SubjectParams, hours: float = 8.0, seed: int = 0,
                   rates: Mapping[str, float] | str | None = None,
                   night: int = 1) -> SyntheticNight:
  """Generates one SYNTHETIC night in memory.

  Args:
    params: the subject (from `sample_subject`).
    hours: recording length; rounded down to whole 30-s epochs.
    seed: the night's seed (`night_seed(...)` in data sets); same inputs give identical arrays.
    rates: per-group sampling rates (`eeg, eog, emg, ecg, resp, spo2`), dict or `eeg=256,...`.
    night: night number (1-based), used in ids and the start date.
  """
  rates = parse_rates(rates)
  n_epochs = int(hours * 3600.0 // EPOCH_SECONDS)
  if n_epochs < 1:
    raise ValueError(f"hours={hours}: a night needs at least one 30-s epoch")
  duration = n_epochs * EPOCH_SECONDS
  n_ct = int(duration * _CR)
  ss = np.random.SeedSequence([int(seed), 0xC0FFEE])
  (r_hyp, r_stage, r_resp_ev, r_arousal, r_gate, r_eeg, r_eog, r_emg, r_hr, r_ecg, r_breath,
   r_spo2, r_art, r_misc) = (np.random.default_rng(s) for s in ss.spawn(14))
  p = params

  # --- Night-level variation and the hypnogram. ---
  se_night = float(np.clip(p.sleep_efficiency + r_hyp.normal(0, 0.03), 0.5, 0.99))
  ahi_night = float(p.ahi * r_hyp.lognormal(0, 0.15))
  stages = _hypnogram(r_hyp, p, n_epochs, se_night)
  P, run_ct = _stage_weights(r_stage, stages)
  # Run-to-run variation of slow-wave depth: light and deep N2, shallower and deeper N3.
  run_depth = r_stage.uniform(0.5, 1.7, run_ct.max() + 1)
  t_ct = np.arange(n_ct) / _CR

  # --- Scored events. ---
  resp_events = _respiratory_events(r_resp_ev, p, stages, ahi_night)
  arousals = _arousals(r_arousal, p, stages, resp_events)
  arousal_onsets = np.array([a[0] for a in arousals])
  arousal = _intervals_to_track([(o, o + d) for o, d in arousals], n_ct, 1.0)
  eyes_open = _renewal_gate(r_gate, n_ct, 25.0 * p.eyes_open_fraction / 0.35,
                            25.0 * (1 - p.eyes_open_fraction) / 0.65, 0.5)
  sig = _signature(p)
  phasic = _renewal_gate(r_gate, n_ct, 6.0, 25.0 / sig["phasic"], 0.5) * P[:, REM]
  events_ind = _intervals_to_track([(e["onset"], e["onset"] + e["duration"])
                                    for e in resp_events], n_ct, 2.0)
  # Movements: in wake, at some arousals, rarely in light sleep.
  move_rate = P @ np.array([1 / 90, 1 / 600, 1 / 3000, 0.0, 1 / 3000])
  moves = list(_poisson_times(r_art, move_rate * (0.5 + p.artefact_level)))
  moves += list(arousal_onsets[r_art.random(arousal_onsets.size) < 0.25])
  moves = sorted((float(t), float(r_art.uniform(2.0, 8.0))) for t in moves)

  signals: dict[str, np.ndarray] = {}
  present = set(p.channels)

  # --- Respiration: phase, tidal amplitude, event modulation. ---
  breath_f = (p.resp_rate / 60.0) * (P @ np.array([1.05, 1.0, 0.97, 0.96, 1.05]))
  breath_f = breath_f * _lognormal_mod(r_breath, n_ct, 30.0,
                                       P @ np.array([0.12, 0.08, 0.05, 0.04, 0.15]))
  tidal = (P @ np.array([1.0, 0.95, 0.9, 0.92, 0.88])) * _lognormal_mod(
      r_breath, n_ct, 8.0, P @ np.array([0.2, 0.12, 0.08, 0.05, 0.25]))
  flow_f = np.ones(n_ct)
  effort_f = np.ones(n_ct)
  paradox = np.zeros(n_ct)
  for e in resp_events:
    a, b = int(e["onset"] * _CR), int((e["onset"] + e["duration"]) * _CR)
    ramp = np.clip(np.arange(b - a) / (2.0 * _CR), 0, 1)
    flow_f[a:b] = 1 - ramp * (1 - e["flow"])
    if e["kind"] == "obstructive_apnea":
      effort_f[a:b] = np.linspace(0.85, 1.4, b - a)       # crescendo of effort
    else:
      effort_f[a:b] = 1 - ramp * (1 - e["effort"])
    paradox[a:b] = e["paradox"] * np.clip(np.arange(b - a) / (8.0 * _CR), 0, 1)
    r = int(e["recovery"] * _CR)
    boost = 1.0 + r_breath.uniform(0.6, 1.2) * np.exp(-np.arange(r) / (6.0 * _CR))
    flow_f[b:b + r] *= boost[:max(min(r, n_ct - b), 0)]
    effort_f[b:b + r] *= boost[:max(min(r, n_ct - b), 0)]
  breath_f = breath_f * (1 + 0.15 * arousal)
  phase_ct = 2 * np.pi * np.cumsum(breath_f) / _CR + r_breath.uniform(0, 2 * np.pi)
  sighs = _poisson_times(r_breath, P @ np.array([1 / 300, 1 / 600, 1 / 1200, 1 / 2400, 1 / 600]))
  sigh = 1.0 + 1.2 * _intervals_to_track([(s, s + 4.0) for s in sighs], n_ct, 2.0)
  tidal = tidal * sigh * (1 + 0.6 * arousal)

  fr = rates["resp"]
  nr = int(round(duration * fr))
  if present & {"Airflow", "Thorax", "Abdomen"}:
    ph = np.interp(np.arange(nr) / fr, t_ct, phase_ct)
    # A thermistor under-reports reductions (its output is compressive in flow amplitude).
    amp_flow = _to_rate((tidal * flow_f) ** 0.7, nr, fr)
    amp_eff = _to_rate(tidal * effort_f, nr, fr)
    noise = lambda s: s * r_breath.standard_normal(nr).astype(np.float32)  # noqa: E731
    drift = lambda s: s * _to_rate(_ou(r_breath, n_ct, 60.0), nr, fr)  # noqa: E731
    flow = amp_flow * (np.sin(ph) + 0.15 * np.sin(2 * ph + 0.6)) + noise(0.03) + drift(0.05)
    thor = amp_eff * np.sin(ph - 0.15) + noise(0.02) + drift(0.15)
    abdo_phase = ph + 0.15 + _to_rate(paradox, nr, fr)
    abdo = amp_eff * r_breath.uniform(0.7, 1.3) * np.sin(abdo_phase) + noise(0.02) + drift(0.15)
    for name, x, mscale in (("Airflow", flow, 0.6), ("Thorax", thor, 1.5),
                            ("Abdomen", abdo, 1.5)):
      _add_movements(r_art, x, fr, moves, (0.5 * mscale, 1.5 * mscale), (0.0, 0.0))
      signals[name] = 100.0 * p.gains[name] * _highpass(x, fr, 0.05)

  # --- SpO2: baseline, REM dip, delayed desaturations. ---
  spo2_ct = (p.spo2_baseline - 0.6 * P[:, REM] + 0.3 * _ou(r_spo2, n_ct, 60.0)
             + 0.15 * r_spo2.standard_normal(n_ct))
  dip = np.zeros(n_ct)
  desats = []
  for e in resp_events:
    start, nadir = e["onset"] + e["lag"], e["onset"] + e["duration"] + e["lag"]
    rec = r_spo2.uniform(10.0, 18.0)
    tt = t_ct
    i0, i1 = int(start * _CR), min(int((nadir + rec) * _CR) + 1, n_ct)
    if i0 >= n_ct:
      continue
    seg = tt[i0:i1]
    fall = 0.5 - 0.5 * np.cos(np.pi * np.clip((seg - start) / (nadir - start), 0, 1))
    rise = 0.5 + 0.5 * np.cos(np.pi * np.clip((seg - nadir) / rec, 0, 1))
    shape = np.where(seg < nadir, fall, rise)
    dip[i0:i1] = np.maximum(dip[i0:i1], e["depth"] * shape)
    if e["depth"] >= 3.0 and nadir <= duration:
      desats.append((round(start, 1), round(nadir - start, 1)))
  for t0, d in moves:  # motion artefacts: brief false dips of the oximeter reading
    if r_spo2.random() < 0.3:
      i0, m = int(t0 * _CR), int(r_spo2.uniform(5.0, 15.0) * _CR)
      dip[i0:i0 + m] += r_spo2.uniform(2.0, 6.0) * np.hanning(m)[:max(min(m, n_ct - i0), 0)]
  spo2_ct = np.clip(spo2_ct - dip, 50.0, 100.0)
  if "SpO2" in present:
    fo = rates["spo2"]
    signals["SpO2"] = _to_rate(spo2_ct, int(round(duration * fo)), fo)

  # --- Heart rate and beats. ---
  hr = p.hr_base * (P @ np.array([1.0, 0.97, 0.93, 0.9, 0.99]))
  hr = hr * _lognormal_mod(r_hr, n_ct, 20.0, P @ np.array([0.05, 0.03, 0.025, 0.02, 0.06]))
  rsa_amp = (P @ np.array([2.5, 3.5, 4.5, 5.0, 2.5])) * (1.3 - 0.7 * p.age_factor)
  hr = hr + rsa_amp * np.sin(phase_ct - 0.5)
  kernel_t = np.arange(0, 40.0, 1 / _CR)
  surge_k = (kernel_t / 5.0) * np.exp(1 - kernel_t / 5.0)
  impulses = np.zeros(n_ct)
  for o in arousal_onsets:
    impulses[min(int(o * _CR), n_ct - 1)] += r_hr.uniform(8.0, 22.0)
  hr = hr + scipy.signal.oaconvolve(impulses, surge_k)[:n_ct] - 4.0 * events_ind
  hr = np.clip(hr, 35.0, 160.0)
  cum = np.cumsum(hr / 60.0) / _CR + r_hr.uniform(0, 1)
  k = np.arange(math.ceil(cum[0]), math.floor(cum[-1]) + 1)
  beats = np.interp(k, cum, t_ct)
  rr = np.diff(beats, prepend=beats[0] - 60.0 / p.hr_base)
  beat_amp = 1.0 + 0.06 * np.sin(np.interp(beats, t_ct, phase_ct))
  sign = -1.0 if p.ecg_inverted else 1.0
  morph = np.array([0.12, -0.12, 1.0, -0.25, 0.3]) * r_ecg.lognormal(0, 0.2, 5)
  if "ECG" in present:
    fe = rates["ecg"]
    ne = int(round(duration * fe))
    ecg = _ecg_wave(beats, rr, beat_amp, ne, fe, morph)
    ecg += 0.1 * np.sin(np.interp(np.arange(ne) / fe, t_ct, phase_ct)).astype(np.float32)
    ecg += 0.15 * _to_rate(_ou(r_ecg, n_ct, 20.0), ne, fe)
    ecg += 0.012 * _spectral_noise(r_ecg, ne, fe, lambda f: _band(f, 20.0, 0.4 * fe))
    _add_movements(r_art, ecg, fe, moves, (0.2, 0.8), (0.02, 0.08))
    signals["ECG"] = sign * p.gains["ECG"] * 1.1 * _highpass(ecg, fe, 0.3)

  # --- Brain activity at one internal rate, resampled per group afterwards. ---
  bas_names = [c for c in p.channels if CHANNELS[c][0] in ("eeg", "eog", "emg")]
  if bas_names:
    fb = max(rates[CHANNELS[c][0]] for c in bas_names)
    nb = int(round(duration * fb))
    hf = min(70.0, 0.42 * fb)
    pw = P[:, W]
    depth = (P @ np.asarray(_DEPTH)) * run_depth[run_ct]
    depth = scipy.ndimage.uniform_filter1d(depth, int(45 * _CR), mode="nearest")
    depth = depth * (1 - 0.7 * arousal)
    eo_w = eyes_open * pw
    env = {
        "bg": P @ sig["bg"],
        "delta": p.delta_scale * (4.0 + 50.0 * np.clip(depth, 0, 1) ** 1.3),
        "theta": P @ sig["theta"] + 4.0 * arousal,
        "alpha": p.alpha_amp * (P @ sig["alpha"] - 0.8 * eo_w + 0.8 * arousal),
        "beta": P @ sig["beta"] + 1.5 * eo_w + 4.0 * arousal,
    }
    spectra = {
        "bg": lambda f: f ** (-p.bg_slope / 2) * _band(f, 0.3, hf, 2),
        "delta": lambda f: np.exp(-0.5 * (np.log(np.maximum(f, 1e-3) / 0.9) / 0.5) ** 2),
        "theta": _gauss(5.5 + r_eeg.uniform(-0.5, 0.5), 1.0),
        "alpha": _gauss(p.alpha_freq, 0.6),
        "beta": lambda f: _gauss(20.0, 5.0)(f) * _band(f, 0.0, hf, 4),
    }
    scale = (1.1 - 0.25 * p.age_factor) * sig["eeg_scale"]
    eeg = np.zeros((4, nb), np.float32)
    shared: dict[str, np.ndarray] = {}
    for comp in ("bg", "delta", "theta", "alpha", "beta"):
      e = env[comp] * _lognormal_mod(r_eeg, n_ct, 40.0, 0.4)
      e_fs = _to_rate(np.maximum(e, 0.0), nb, fb)
      shaper = _Shaper(nb, fb, spectra[comp])
      g = shaper(r_eeg)
      shared[comp] = g * e_fs
      for ch in range(4):
        if _EEG_NAMES[ch] not in present:
          continue
        own = shaper(r_eeg)
        own *= 0.66
        own += 0.75 * g
        own *= e_fs
        own *= _EEG_TOPO[comp][ch]
        eeg[ch] += own
    trans = _transients(r_eeg, p, P, phasic, arousal_onsets, nb, fb)
    for comp, x in trans.items():
      for ch in range(4):
        eeg[ch] += _EEG_TOPO[comp][ch] * x * r_eeg.uniform(0.85, 1.15)
    ecg_art = _ecg_wave(beats, rr, beat_amp, nb, fb, morph, qrs_only=True) * sign
    mains = (np.sin(2 * np.pi * p.mains_hz * np.arange(nb) / fb + r_misc.uniform(0, 6.3))
             .astype(np.float32) if p.mains_hz and fb > 2.4 * p.mains_hz else None)
    bas: dict[str, np.ndarray] = {}
    for ch, name in enumerate(_EEG_NAMES):
      if name in present:
        x = scale * eeg[ch] + r_eeg.uniform(0, 5.0) * (r_eeg.random() < 0.6) * ecg_art
        bas[name] = x
    del eeg

    # EOG: gaze position (saccades) + blinks + slow eye movements + frontal EEG leakage.
    if present & {"E1-M2", "E2-M1"}:
      sacc_rate = (pw * (0.5 * eyes_open + 0.03 * (1 - eyes_open)) + 0.02 * P[:, N1]
                   + 0.002 * (P[:, N2] + P[:, N3]) + P[:, REM] * 0.03 + 1.5 * phasic)
      st = _poisson_times(r_eog, sacc_rate)
      jumps = r_eog.normal(0, 70.0, st.size)
      pos_k = scipy.signal.lfilter([1.0], [1.0, -0.5], jumps)
      idx = np.searchsorted(np.round(st * fb), np.arange(nb), side="right") - 1
      pos = np.where(idx >= 0, pos_k[np.maximum(idx, 0)] if st.size else 0.0, 0.0)
      pos = scipy.ndimage.uniform_filter1d(pos.astype(np.float32), max(int(0.04 * fb), 1))
      pos = _highpass(pos, fb, 0.3)
      blink = np.zeros(nb, np.float32)
      bt = np.arange(int(0.35 * fb)) / fb
      for t0 in _poisson_times(r_eog, pw * 0.25 * eyes_open + 0.01 * P[:, N1]):
        _add_at(blink, fb, t0, (r_eog.uniform(100, 250) * np.sin(np.pi * bt / 0.35) ** 2)
                .astype(np.float32))
      blink = _highpass(blink, fb, 0.3)
      sem_env = P @ sig["sem"] + 15.0 * pw * (1 - eyes_open)
      sem = _to_rate(sem_env, nb, fb) * _spectral_noise(r_eog, nb, fb, lambda f: np.exp(
          -0.5 * (np.log(f / 0.25) / 0.6) ** 2))
      leak = 0.35 * shared["delta"] + 0.4 * trans["kcomplex"] + 0.2 * shared["bg"]
      eog_noise = _Shaper(nb, fb, lambda f: _band(f, 0.3, hf))
      for name, sgn in (("E1-M2", 1.0), ("E2-M1", -1.0)):
        if name in present:
          noise = 3.0 * eog_noise(r_eog)
          x = sgn * (pos + 0.6 * blink + sem) * r_eog.uniform(0.85, 1.15) + leak + noise
          bas[name] = x + r_eog.uniform(0, 3.0) * ecg_art

    # Chin EMG: tone by stage (REM atonia), arousal bursts, twitches, ECG pickup.
    if "Chin" in present:
      tone = (P @ sig["emg"]) * _lognormal_mod(r_emg, n_ct, 30.0, 0.35)
      tone = tone * (1 + 2.5 * arousal)
      tw_rate = P @ np.array([0.05, 0.02, 0.01, 0.0, 0.04]) + 0.4 * phasic
      tw = np.zeros(nb)
      tt = _poisson_times(r_emg, tw_rate)
      np.add.at(tw, np.minimum(np.round(tt * fb).astype(np.int64), nb - 1),
                r_emg.uniform(4.0, 12.0, tt.size))
      kt = np.arange(-0.1, 0.1, 1 / fb)
      tw = scipy.signal.oaconvolve(tw, np.exp(-0.5 * (kt / 0.03) ** 2), mode="same")
      band = _spectral_noise(r_emg, nb, fb, lambda f: _band(f, 20.0, min(100.0, 0.42 * fb), 3))
      x = p.emg_scale * (_to_rate(tone, nb, fb) + tw.astype(np.float32)) * band
      x += 0.6 * _spectral_noise(r_emg, nb, fb, lambda f: _band(f, 10.0, 0.45 * fb))
      bas["Chin"] = x + r_emg.uniform(0, 8.0) * ecg_art

    # Shared BAS artefacts: movement, mains hum; then resample each group to its rate.
    for name, x in bas.items():
      group = CHANNELS[name][0]
      if group == "emg":
        _add_movements(r_art, x, fb, moves, (2.0, 5.0), (30.0, 100.0), 20.0)
      else:
        _add_movements(r_art, x, fb, moves, (40.0, 150.0), (10.0, 40.0))
      if mains is not None:
        x += r_misc.uniform(0.5, 4.0) * mains
      fs_out = rates[group]
      # AC coupling of the amplifier (AASM: EEG/EOG 0.3 Hz, EMG 10 Hz): no DC survives.
      x = p.gains[name] * _highpass(x, fb, 10.0 if group == "emg" else 0.3)
      if fs_out != fb:
        frac = fractions.Fraction(fs_out / fb).limit_denominator(1000)
        x = scipy.signal.resample_poly(x, frac.numerator, frac.denominator)
        x = x[:int(round(duration * fs_out))].astype(np.float32)
      signals[name] = x

  # --- Channel-level artefacts: electrode pops and short flat segments. ---
  for name in [c for c in CHANNELS if c in signals]:
    group = CHANNELS[name][0]
    x = signals[name]
    fs = rates[group]
    if group in ("eeg", "eog"):
      for t0 in r_art.uniform(0, duration, r_art.poisson(p.artefact_level * 1.5 * hours)):
        tau = r_art.uniform(0.2, 1.5)
        tp = np.arange(int(5 * tau * fs)) / fs
        _add_at(x, fs, t0, (r_art.choice([-1, 1]) * r_art.uniform(80, 300)
                            * np.exp(-tp / tau)).astype(np.float32))
    for t0 in r_art.uniform(0, duration, r_art.poisson(p.artefact_level * 0.4 * hours)):
      a = int(t0 * fs)
      b = min(a + max(int(r_art.uniform(1.0, 20.0) * fs), 1), x.size)
      x[a:b] = x[a] if group == "spo2" else 0.0

  # --- Distractor channel. ---
  if "Position" in p.distractors:
    changes = np.sort(r_misc.uniform(0, duration, r_misc.poisson(hours * 1.5)))
    values = r_misc.integers(1, 5, changes.size + 1).astype(np.float32)
    signals["Position"] = values[np.searchsorted(changes, np.arange(int(duration)) + 0.5)]

  # --- Finalise: clip to the physical range (counted), labels, units. ---
  out_signals, out_rates, units, ranges, canonical = {}, {}, {}, {}, {}
  clipped = {}
  for name in [c for c in p.channels if c in signals] + [d for d in p.distractors]:
    if name in CHANNELS:
      group = CHANNELS[name][0]
      label, fs, unit, rng_ = p.labels[name], rates[group], UNITS[group], PHYSICAL_RANGES[group]
    else:
      label, fs, unit, rng_ = name, 1.0, "", (0.0, 5.0)
    x = np.asarray(signals[name], dtype=np.float32)
    lo, hi = rng_
    n_clip = int(np.count_nonzero((x < lo) | (x > hi)))
    if n_clip:
      clipped[label] = n_clip
    out_signals[label] = np.clip(x, lo, hi)
    out_rates[label], units[label], ranges[label], canonical[label] = fs, unit, rng_, name

  # --- Scored events list and night figures. ---
  events: list[tuple[float, float, str]] = []
  events += [(e["onset"], e["duration"], e["kind"]) for e in resp_events]
  events += [(float(o), float(d), "arousal") for o, d in arousals]
  events += [(o, d, "desaturation") for o, d in desats]
  events.sort(key=lambda e: (e[0], e[2]))
  tst_h = float((stages != W).sum() * EPOCH_SECONDS / 3600.0)
  n_resp = len(resp_events)
  kinds = {k: sum(1 for e in events if e[2] == k) for k in EVENT_LABELS}
  info = {
      "duration_s": duration,
      "n_epochs": n_epochs,
      "tst_h": _f(tst_h),
      "sleep_efficiency": _f(tst_h * 3600.0 / duration),
      "stage_epochs": {s: int((stages == i).sum()) for i, s in enumerate(STAGES)},
      "ahi_target": _f(ahi_night),
      "ahi": _f(n_resp / tst_h) if tst_h > 0 else 0.0,
      "n_events": kinds,
      "clipped_samples": clipped,
  }
  start_day = datetime.date(2001, 1, 1) + datetime.timedelta(days=7 * p.index + night - 1)
  start_sec = int(r_misc.integers(21 * 3600 + 1800, 23 * 3600 + 1800))
  start = datetime.datetime.combine(start_day, datetime.time()) + datetime.timedelta(
      seconds=start_sec)
  return SyntheticNight(subject=p, night=int(night), seed=int(seed), start=start,
                        duration=duration, signals=out_signals, rates=out_rates, units=units,
                        physical_ranges=ranges, canonical=canonical, stages=stages,
                        events=events, info=info)


# --------------------------------------------------------------------------------------------------
# Files: EDF+ signals, EDF+ / CSV annotations, data sets with a manifest.
# --------------------------------------------------------------------------------------------------

SYNTHETIC_NOTE = ("SYNTHETIC data generated by sleepfm_jax.data.synthetic: not real physiology; "
                  "parameters are illustrative, not fitted to any population.")


def _record_duration(rates: Sequence[float]) -> float:
  """The shortest EDF data-record duration (dividing 30 s) that holds whole samples of each rate."""
  for d in (1, 2, 3, 5, 6, 10, 15, 30):
    if all(abs(r * d - round(r * d)) < 1e-9 for r in rates):
      return float(d)
  raise ValueError(f"no data-record duration fits sampling rates {sorted(set(rates))}")


def _to_digital(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """Physical -> int16 with the EDF calibration `phys = (dig - dmin) * gain + lo`."""
  dmin, dmax = _DIGITAL
  gain = (hi - lo) / (dmax - dmin)
  d = np.round((np.asarray(x, np.float64) - lo) / gain + dmin)
  return np.clip(d, dmin, dmax).astype(np.int16)


def _fmt(x: float) -> str:
  """Shortest round-tripping decimal, the same text EDF+ annotations use."""
  return np.format_float_positional(float(x), unique=True, trim="-")


def _edf_headers(night: SyntheticNight):
  import edfio  # pylint: disable=import-outside-toplevel

  patient = edfio.Patient(code=night.subject.subject_id, name="SYNTHETIC",
                          additional=("not_real_physiology",))
  recording = edfio.Recording(startdate=night.start.date(),
                              hospital_administration_code=night.recording_id,
                              investigator_technician_code="SYNTHETIC",
                              equipment_code=f"sleepfm_jax.synthetic.v{GENERATOR_VERSION}")
  return patient, recording


def write_csv_annotations(night: SyntheticNight, path: str | os.PathLike) -> None:
  """Writes the project's CSV annotation format (see docs/synthetic.md)."""
  lines = ["onset,duration,label", "# respiratory_scored: true", "# synthetic: true"]
  lines += [f"{_fmt(o)},{_fmt(d)},{lab}" for o, d, lab in night.annotation_rows()]
  pathlib.Path(path).write_text("\n".join(lines) + "\n")


def write_night(night: SyntheticNight, out_dir: str | os.PathLike,
                annotation_formats: Sequence[str] = ("edf", "csv")) -> dict[str, Any]:
  """Writes `<stem>.edf` (EDF+C signals) and the annotations (`<stem>-annotations.edf`, `.csv`).

  The signal file carries no annotations (only the EDF+ time-keeping channel), so that the
  annotations exist once per format and a reader pairing files by stem never counts them twice.
  Returns the night's manifest entry.
  """
  import edfio  # pylint: disable=import-outside-toplevel

  bad = set(annotation_formats) - {"edf", "csv"}
  if bad:
    raise ValueError(f"unknown annotation formats {sorted(bad)}; use 'edf' and/or 'csv'")
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  stem = night.recording_id
  patient, recording = _edf_headers(night)
  signals = []
  channels = []
  for label, x in night.signals.items():
    lo, hi = night.physical_ranges[label]
    name = night.canonical[label]
    group = CHANNELS[name][0] if name in CHANNELS else None
    signals.append(edfio.EdfSignal.from_digital(
        _to_digital(x, lo, hi), night.rates[label], label=label,
        transducer_type="SYNTHETIC (sleepfm-jax generator)",
        physical_dimension=night.units[label], physical_range=(lo, hi), digital_range=_DIGITAL,
        prefiltering=PREFILTERING.get(group, "") if group else ""))
    channels.append({"label": label, "canonical": name, "fs": night.rates[label],
                     "unit": night.units[label], "physical_min": lo, "physical_max": hi,
                     "modality": MODALITY[group] if group else None})
  drd = _record_duration(list(night.rates.values()))
  edf = edfio.Edf(signals, patient=patient, recording=recording, starttime=night.start.time(),
                  data_record_duration=drd, annotations=())
  files = {"signal_file": f"{stem}.edf", "annotation_files": []}
  edf.write(out_dir / f"{stem}.edf")
  if "edf" in annotation_formats:
    anns = [edfio.EdfAnnotation(o, d, lab) for o, d, lab in night.annotation_rows()]
    ann = edfio.Edf([], patient=patient, recording=recording, starttime=night.start.time(),
                    annotations=anns)
    ann.write(out_dir / f"{stem}-annotations.edf")
    files["annotation_files"].append(f"{stem}-annotations.edf")
  if "csv" in annotation_formats:
    write_csv_annotations(night, out_dir / f"{stem}.csv")
    files["annotation_files"].append(f"{stem}.csv")
  return {"night": night.night, "recording_id": stem, "seed": night.seed,
          "start": night.start.isoformat(), **files, **night.info, "channels": channels}


def _night_task(args) -> tuple[dict[str, Any], dict[str, float]]:
  """Worker: generate and write one night (top-level so that spawn workers can run it)."""
  params, night, hours, seed, rates, out_dir, formats = args
  t0 = time.perf_counter()
  n = generate_night(params, hours=hours, seed=night_seed(seed, params.index, night),
                     rates=rates, night=night)
  t1 = time.perf_counter()
  entry = write_night(n, out_dir, formats)
  t2 = time.perf_counter()
  return entry, {"recording_id": n.recording_id, "generate_s": t1 - t0, "write_s": t2 - t1,
                 "hours": n.duration / 3600.0}


def write_dataset(out_dir: str | os.PathLike, n_subjects: int, nights: int = 1,
                  hours: float = 8.0, seed: int = 0,
                  rates: Mapping[str, float] | str | None = None,
                  channel_set: str | Sequence[str] = "standard", workers: int = 1,
                  annotation_formats: Sequence[str] = ("edf", "csv"),
                  missing_prob: float = 1.0, distractor_prob: float = 0.3,
                  progress: bool = True) -> dict[str, Any]:
  """Writes a SYNTHETIC data set: per night an EDF+ file and annotations, plus
  `synthetic_manifest.json` (deterministic) and `generation_report.json` (timings).

  Files depend only on (seed, subject index, night, hours, rates, channel set), not on `workers`.
  Returns the manifest.
  """
  if n_subjects < 1 or nights < 1:
    raise ValueError("need at least one subject and one night")
  rates = parse_rates(rates)
  names = resolve_channel_set(channel_set)
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  subjects = [sample_subject(i, seed, names, missing_prob=missing_prob,
                             distractor_prob=distractor_prob) for i in range(n_subjects)]
  tasks = [(s, k, hours, seed, rates, str(out_dir), tuple(annotation_formats))
           for s in subjects for k in range(1, nights + 1)]
  t0 = time.perf_counter()
  results: dict[tuple[int, int], tuple[dict, dict]] = {}
  bar = None
  if progress:
    import tqdm  # pylint: disable=import-outside-toplevel

    bar = tqdm.tqdm(total=len(tasks), desc="synthetic nights", unit="night")
  if workers <= 1:
    for task in tasks:
      results[(task[0].index, task[1])] = _night_task(task)
      if bar:
        bar.update(1)
  else:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
      futures = {pool.submit(_night_task, t): (t[0].index, t[1]) for t in tasks}
      for fut in concurrent.futures.as_completed(futures):
        results[futures[fut]] = fut.result()
        if bar:
          bar.update(1)
  if bar:
    bar.close()
  wall = time.perf_counter() - t0
  manifest = {
      "synthetic": True,
      "note": SYNTHETIC_NOTE,
      "generator": "sleepfm_jax.data.synthetic",
      "generator_version": GENERATOR_VERSION,
      "seed": int(seed),
      "hours": float(hours),
      "nights_per_subject": int(nights),
      "channel_set": list(names),
      "rates": rates,
      "annotation_formats": list(annotation_formats),
      "stages": list(STAGES),
      "event_labels": EVENT_LABELS,
      "subjects": [],
  }
  for s in subjects:
    missing_channels = [c for c in names if c not in s.channels]
    present_mods = {MODALITY[CHANNELS[c][0]] for c in s.channels}
    manifest["subjects"].append({
        "subject_id": s.subject_id,
        "index": s.index,
        "age_factor": _f(s.age_factor),
        "ahi_target": _f(s.ahi),
        "missing_groups": list(s.missing),
        "missing_channels": missing_channels,
        "missing_modalities": [m for m in ("bas", "ecg", "resp") if m not in present_mods],
        "labels": {c: s.labels[c] for c in s.channels},
        "distractors": list(s.distractors),
        "params": s.to_dict(),
        "nights": [results[(s.index, k)][0] for k in range(1, nights + 1)],
    })
  (out_dir / "synthetic_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
  (out_dir / "README.txt").write_text(
      SYNTHETIC_NOTE + "\nSee synthetic_manifest.json and docs/synthetic.md in sleepfm-jax.\n")
  timings = [results[k][1] for k in sorted(results)]
  gen_h = sum(t["generate_s"] for t in timings) / max(sum(t["hours"] for t in timings), 1e-9)
  report = {"wall_s": round(wall, 3), "workers": workers, "nights": len(timings),
            "night_hours": round(sum(t["hours"] for t in timings), 3),
            "generate_s_per_night_hour": round(gen_h, 3),
            "write_s_per_night_hour": round(sum(t["write_s"] for t in timings) / max(
                sum(t["hours"] for t in timings), 1e-9), 3),
            "per_night": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in t.items()}
                          for t in timings]}
  (out_dir / "generation_report.json").write_text(json.dumps(report, indent=1) + "\n")
  return manifest
