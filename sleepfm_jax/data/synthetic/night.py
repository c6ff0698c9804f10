"""One SYNTHETIC night: the hypnogram, the scored events, the latent physiology, the renderers.

`generate_night` draws a hypnogram and its scored respiratory events, one latent physiology
(`latent.py`) per night (or, with `coupling="none"`, one per modality), and renders every channel
from it (`render_*.py`). See docs/synthetic.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import fractions
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.signal

from sleepfm_jax.data.synthetic import events as ev
from sleepfm_jax.data.synthetic import hypnogram as hyp
from sleepfm_jax.data.synthetic.constants import (CHANNELS, COUPLINGS, CR, EPOCH_SECONDS,
                                                   EVENT_LABELS, PHYSICAL_RANGES,
                                                   RESPIRATORY_KINDS, STAGE_LABELS, STAGES, UNITS,
                                                   W, parse_rates, rnd)
from sleepfm_jax.data.synthetic.latent import Latent, check_stage_gain, draw_latent
from sleepfm_jax.data.synthetic.noise import add_at, add_movements, highpass, to_rate
from sleepfm_jax.data.synthetic.render_ecg import render_ecg
from sleepfm_jax.data.synthetic.render_eeg import render_eeg
from sleepfm_jax.data.synthetic.render_emg import render_emg
from sleepfm_jax.data.synthetic.render_eog import render_eog
from sleepfm_jax.data.synthetic.render_resp import EFFORT, render_effort, render_spo2
from sleepfm_jax.data.synthetic.subject import SubjectParams, signature


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
    return overlap_epochs(self.events, RESPIRATORY_KINDS, self.n_epochs)


def overlap_epochs(events, kinds, n_epochs: int) -> np.ndarray:
  out = np.zeros(n_epochs, np.int8)
  for onset, dur, kind in events:
    if kind in kinds:
      a = int(onset // EPOCH_SECONDS)
      b = int(math.ceil((onset + dur) / EPOCH_SECONDS))
      out[max(a, 0):min(b, n_epochs)] = 1
  return out


MODALITIES = ("bas", "ecg", "resp")
_STREAMS = ("hypnogram", "stage", "resp_events", "latent", "eeg", "eog", "emg", "ecg", "resp",
            "spo2", "artefacts", "misc")


def generate_night(params: SubjectParams, hours: float = 8.0, seed: int = 0,
                   rates: Mapping[str, float] | str | None = None, night: int = 1,
                   coupling: str = "physiological", stage_gain: float = 1.0) -> SyntheticNight:
  """Generates one SYNTHETIC night in memory.

  Args:
    params: the subject (from `sample_subject`).
    hours: recording length; rounded down to whole 30-s epochs.
    seed: the night's seed (`night_seed(...)` in data sets); same inputs give identical arrays.
    rates: per-group sampling rates (`eeg, eog, emg, ecg, resp, spo2`), dict or `eeg=256,...`.
    night: night number (1-based), used in ids and the start date.
    coupling: `physiological` (one latent physiology rendered into every modality) or `none`
      (BAS, ECG and respiratory channels each render an independent latent; they share only the
      hypnogram and the scored respiratory events: the negative control). The BAS channels are the
      same under both settings.
    stage_gain: scales how far heart rate, breathing rate and tidal depth move with the stage
      (`latent.stage_profile`); 1 (default) keeps the literature-sized effects, larger values are
      a positive control that makes the stage visible in ECG and respiration (0 to 5).
  """
  if coupling not in COUPLINGS:
    raise ValueError(f"coupling={coupling!r}: choose one of {COUPLINGS}")
  check_stage_gain(stage_gain)
  rates = parse_rates(rates)
  n_epochs = int(hours * 3600.0 // EPOCH_SECONDS)
  if n_epochs < 1:
    raise ValueError(f"hours={hours}: a night needs at least one 30-s epoch")
  duration = n_epochs * EPOCH_SECONDS
  ss = np.random.SeedSequence([int(seed), 0xC0FFEE])
  r = dict(zip(_STREAMS, (np.random.default_rng(s) for s in ss.spawn(len(_STREAMS))),
               strict=True))
  p = params
  se_night = float(np.clip(p.sleep_efficiency + r["hypnogram"].normal(0, 0.03), 0.5, 0.99))
  ahi_night = float(p.ahi * r["hypnogram"].lognormal(0, 0.15))
  stages = hyp.hypnogram(r["hypnogram"], p, n_epochs, se_night)
  P, run_ct = hyp.stage_weights(r["stage"], stages)
  resp_events = ev.respiratory_events(r["resp_events"], p, stages, ahi_night)
  lat_rngs = r["latent"].spawn(3)
  if coupling == "none":
    lat = {m: draw_latent(g, p, stages, P, run_ct, resp_events, stage_gain)
           for m, g in zip(MODALITIES, lat_rngs, strict=True)}
  else:
    lat = dict.fromkeys(MODALITIES, draw_latent(lat_rngs[0], p, stages, P, run_ct, resp_events,
                                                stage_gain))
  present = set(p.channels)
  signals = _render_bas(r, p, lat["bas"], present, rates, duration)
  if "ECG" in present:
    signals["ECG"] = p.gains["ECG"] * render_ecg(r["ecg"], p, lat["ecg"], rates["ecg"], duration)
  if present & set(EFFORT):
    effort = render_effort(r["resp"], p, lat["resp"], rates["resp"], duration)
    signals.update({k: p.gains[k] * v for k, v in effort.items() if k in present})
  spo2, desats = render_spo2(r["spo2"], p, lat["resp"], resp_events, duration)
  if "SpO2" in present:
    signals["SpO2"] = to_rate(spo2, int(round(duration * rates["spo2"])), rates["spo2"])
  _channel_artefacts(r["artefacts"], p, signals, rates, duration)
  events = [(e["onset"], e["duration"], e["kind"]) for e in resp_events]
  events += [(float(o), float(d), "arousal") for o, d in lat["bas"].arousals]
  events += [(o, d, "desaturation") for o, d in desats]
  events.sort(key=lambda e: (e[0], e[2]))
  out = _finalise(r["misc"], p, night, seed, duration, stages, signals, rates, events,
                  ahi_night, len(resp_events), coupling, lat["bas"].position)
  if stage_gain != 1.0:  # recorded only when set, so default data sets stay byte-identical
    out.info["stage_gain"] = float(stage_gain)
  return out


def _render_bas(r: dict[str, np.random.Generator], p: SubjectParams, lat: Latent,
                present: set[str], rates: Mapping[str, float], duration: float
                ) -> dict[str, np.ndarray]:
  """EEG, EOG and chin EMG at one internal rate; movement and mains artefacts, AC coupling and
  gains; then each group resampled to its own rate."""
  names = [c for c in p.channels if CHANNELS[c][0] in ("eeg", "eog", "emg")]
  if not names:
    return {}
  fb = max(rates[CHANNELS[c][0]] for c in names)
  nb = int(round(duration * fb))
  sig = signature(p)
  eeg = render_eeg(r["eeg"], p, lat, sig, present, nb, fb)
  bas = dict(eeg.channels)
  bas.update(render_eog(r["eog"], p, lat, sig, eeg, present, nb, fb))
  if "Chin" in present:
    bas["Chin"] = render_emg(r["emg"], p, lat, sig, nb, fb)
  mains = (np.sin(2 * np.pi * p.mains_hz * np.arange(nb) / fb + r["misc"].uniform(0, 6.3))
           .astype(np.float32) if p.mains_hz and fb > 2.4 * p.mains_hz else None)
  out = {}
  for name in names:
    x, group = bas[name], CHANNELS[name][0]
    if group == "emg":
      add_movements(r["artefacts"], x, fb, lat.moves, (2.0, 5.0), (30.0, 100.0), 20.0)
    else:
      add_movements(r["artefacts"], x, fb, lat.moves, (40.0, 150.0), (10.0, 40.0))
    if mains is not None:
      x += r["misc"].uniform(0.5, 4.0) * mains
    # AC coupling of the amplifier (AASM: EEG/EOG 0.3 Hz, EMG 10 Hz): no DC survives.
    x = p.gains[name] * highpass(x, fb, 10.0 if group == "emg" else 0.3)
    fs_out = rates[group]
    if fs_out != fb:
      frac = fractions.Fraction(fs_out / fb).limit_denominator(1000)
      x = scipy.signal.resample_poly(x, frac.numerator, frac.denominator)
      x = x[:int(round(duration * fs_out))].astype(np.float32)
    out[name] = x
  return out


def _channel_artefacts(rng: np.random.Generator, p: SubjectParams, signals: dict[str, np.ndarray],
                       rates: Mapping[str, float], duration: float) -> None:
  """Electrode pops (EEG/EOG) and short flat segments (any channel), in place."""
  hours = duration / 3600.0
  for name in [c for c in CHANNELS if c in signals]:
    group = CHANNELS[name][0]
    x = signals[name]
    fs = rates[group]
    if group in ("eeg", "eog"):
      for t0 in rng.uniform(0, duration, rng.poisson(p.artefact_level * 1.5 * hours)):
        tau = rng.uniform(0.2, 1.5)
        tp = np.arange(int(5 * tau * fs)) / fs
        add_at(x, fs, t0, (rng.choice([-1, 1]) * rng.uniform(80, 300)
                           * np.exp(-tp / tau)).astype(np.float32))
    for t0 in rng.uniform(0, duration, rng.poisson(p.artefact_level * 0.4 * hours)):
      a = int(t0 * fs)
      b = min(a + max(int(rng.uniform(1.0, 20.0) * fs), 1), x.size)
      x[a:b] = x[a] if group == "spo2" else 0.0


def _labelled(p: SubjectParams, signals: dict[str, np.ndarray], rates: Mapping[str, float]):
  """Clips each channel to its physical range (counted) and keys everything by EDF label."""
  out = {"signals": {}, "rates": {}, "units": {}, "ranges": {}, "canonical": {}, "clipped": {}}
  for name in [c for c in p.channels if c in signals] + list(p.distractors):
    if name in CHANNELS:
      group = CHANNELS[name][0]
      label, fs, unit, rng_ = p.labels[name], rates[group], UNITS[group], PHYSICAL_RANGES[group]
    else:
      label, fs, unit, rng_ = name, 1.0, "", (0.0, 5.0)
    x = np.asarray(signals[name], dtype=np.float32)
    lo, hi = rng_
    n_clip = int(np.count_nonzero((x < lo) | (x > hi)))
    if n_clip:
      out["clipped"][label] = n_clip
    out["signals"][label] = np.clip(x, lo, hi)
    out["rates"][label], out["units"][label] = fs, unit
    out["ranges"][label], out["canonical"][label] = rng_, name
  return out


def _finalise(rng: np.random.Generator, p: SubjectParams, night: int, seed: int, duration: float,
              stages: np.ndarray, signals: dict[str, np.ndarray], rates: Mapping[str, float],
              events: list[tuple[float, float, str]], ahi_night: float, n_resp: int,
              coupling: str, position: np.ndarray) -> SyntheticNight:
  if "Position" in p.distractors:  # a body-position sensor (1 Hz, values 1-4)
    signals["Position"] = (position[::int(CR)][:int(duration)] + 1).astype(np.float32)
  lab = _labelled(p, signals, rates)
  tst_h = float((stages != W).sum() * EPOCH_SECONDS / 3600.0)
  info = {
      "duration_s": duration,
      "n_epochs": int(stages.size),
      "coupling": coupling,
      "tst_h": rnd(tst_h),
      "sleep_efficiency": rnd(tst_h * 3600.0 / duration),
      "stage_epochs": {s: int((stages == i).sum()) for i, s in enumerate(STAGES)},
      "ahi_target": rnd(ahi_night),
      "ahi": rnd(n_resp / tst_h) if tst_h > 0 else 0.0,
      "n_events": {k: sum(1 for e in events if e[2] == k) for k in EVENT_LABELS},
      "clipped_samples": lab["clipped"],
  }
  start_day = datetime.date(2001, 1, 1) + datetime.timedelta(days=7 * p.index + night - 1)
  start_sec = int(rng.integers(21 * 3600 + 1800, 23 * 3600 + 1800))
  start = datetime.datetime.combine(start_day, datetime.time()) + datetime.timedelta(
      seconds=start_sec)
  return SyntheticNight(subject=p, night=int(night), seed=int(seed), start=start,
                        duration=duration, signals=lab["signals"], rates=lab["rates"],
                        units=lab["units"], physical_ranges=lab["ranges"],
                        canonical=lab["canonical"], stages=stages, events=events, info=info)
