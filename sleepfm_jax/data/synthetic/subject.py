"""Per-subject parameters of the SYNTHETIC generator and the per-night seeds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from sleepfm_jax.data.synthetic.constants import (CHANNELS, DISTRACTORS, MISSING_GROUPS, REM,
                                                   MISSING_PROBS, resolve_channel_set, rnd)



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
  # Couplings between modalities (docs/synthetic.md, "Couplings"); drawn from their own stream.
  rsa_gain: float              # respiratory sinus arrhythmia, relative to the age/stage norm
  edr_depth: float             # QRS amplitude swing with lung volume (fraction per usual breath)
  axis_depth: float            # S-wave swing with lung volume (electrical-axis rotation)
  ecg_position_gain: tuple[float, ...]   # QRS amplitude per body position (supine = 1)
  belt_position_gain: tuple[tuple[float, float], ...]  # (thorax, abdomen) gain per position
  turn_prob: float             # chance that a body movement changes the position
  cfa_uv: float                # cardiac field in the EEG/EOG (uV per mV of R wave)
  cfa_channel: tuple[float, ...]         # per-channel factor (C3, C4, O1, O2, E1, E2)
  pulse_channel: int           # EEG channel (0-3) with a pulse artefact, -1 = none
  pulse_uv: float
  resp_artefact_uv: float      # breathing sway in EEG/EOG when lying on the electrodes' side
  emg_ecg_uv: float            # ECG pickup in the chin EMG (uV per mV of R wave)
  emg_insp: float              # inspiratory modulation of chin EMG tone
  cardio_osc: float            # cardiogenic oscillation of airflow (fraction of a usual breath)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    for k, v in d.items():
      if isinstance(v, float):
        d[k] = rnd(v)
    d["gains"] = {k: rnd(v) for k, v in self.gains.items()}
    d["channels"] = list(self.channels)
    d["missing"] = list(self.missing)
    d["distractors"] = list(self.distractors)
    d["ecg_position_gain"] = [rnd(v) for v in self.ecg_position_gain]
    d["belt_position_gain"] = [[rnd(v) for v in g] for g in self.belt_position_gain]
    d["cfa_channel"] = [rnd(v) for v in self.cfa_channel]
    return d


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
    for group, p in MISSING_PROBS:
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
  distractors = DISTRACTORS if rng.random() < distractor_prob else ()
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
      **_coupling_params(seed, index),
  )


def _coupling_params(seed: int, index: int) -> dict[str, Any]:
  """The subject's coupling strengths, from a stream of their own (the rest stays as in v1)."""
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 0xC0C1]))
  pos_gain = np.r_[1.0, rng.lognormal(0, 0.12, 3)]
  belts = np.vstack([[1.0, 1.0], rng.lognormal(0, 0.2, (3, 2))])
  return {
      "rsa_gain": float(rng.lognormal(0, 0.25)),
      "edr_depth": float(rng.uniform(0.05, 0.15)),
      "axis_depth": float(rng.uniform(0.05, 0.25)),
      "ecg_position_gain": tuple(float(g) for g in pos_gain),
      "belt_position_gain": tuple((float(a), float(b)) for a, b in belts),
      "turn_prob": float(rng.uniform(0.2, 0.5)),
      "cfa_uv": float(rng.uniform(4.0, 16.0)),
      "cfa_channel": tuple(float(v) for v in rng.uniform(0.4, 1.0, 6)),
      "pulse_channel": int(rng.integers(0, 4)) if rng.random() < 0.3 else -1,
      "pulse_uv": float(rng.uniform(5.0, 20.0)),
      "resp_artefact_uv": float(rng.uniform(3.0, 12.0)) if rng.random() < 0.7 else 0.0,
      "emg_ecg_uv": float(rng.uniform(8.0, 40.0)),
      "emg_insp": float(rng.uniform(0.05, 0.35)),
      "cardio_osc": float(rng.uniform(0.02, 0.06)),
  }


def night_seed(seed: int, index: int, night: int) -> int:
  """The 63-bit seed of one night, derived from (data-set seed, subject index, night)."""
  state = np.random.SeedSequence([int(seed), int(index), int(night), 0x419E7]).generate_state(2)
  return int((int(state[0]) << 32 | int(state[1])) & (2**63 - 1))


EEG_RMS = {  # uV RMS by stage (W, N1, N2, N3, REM), at topography 1
    "bg": (8.0, 10.0, 12.0, 13.0, 8.5),
    "theta": (3.0, 10.0, 7.0, 6.0, 8.0),
    "beta": (4.0, 2.5, 2.0, 1.5, 3.0),
    "alpha": (1.0, 0.25, 0.08, 0.06, 0.2),   # x alpha_amp; wake value for eyes closed
}


def signature(p: SubjectParams) -> dict[str, np.ndarray]:
  """A subject's individual stage tables: the population tables with per-entry jitter.

  Drawn from the subject's own seed, so they are the same every night of that subject. Individual
  differences like these are why a stager trained on some people is less sure on others.
  """
  rng = np.random.default_rng(np.random.SeedSequence([p.seed, p.index, 0x7AB1E]))
  sig = {k: np.asarray(v) * rng.lognormal(0, 0.25, 5) for k, v in EEG_RMS.items()}
  sig["sem"] = np.array([0.0, 60.0, 8.0, 0.0, 5.0]) * rng.lognormal(0, 0.4, 5)
  sig["emg"] = np.array([14.0, 8.0, 6.0, 5.5, 1.3]) * rng.lognormal(0, 0.2, 5)
  # REM atonia: the lowest tone of the night, by a subject-specific margin.
  sig["emg"][REM] = sig["emg"][1:4].min() * rng.uniform(0.12, 0.5)
  sig["phasic"] = float(rng.lognormal(0, 0.5))     # REM eye-movement density
  sig["eeg_scale"] = float(rng.lognormal(0, 0.25))  # overall EEG amplitude (skull, age, ...)
  return sig

