"""The latent physiology of a SYNTHETIC night, shared by every modality that renders it.

One `Latent` holds, at the control rate `CR` (4 Hz) and as beat times, what the body does in a
night: the soft stage weights, arousals, body movements and position, the eyes-open and phasic-REM
gates, breathing (phase, rate, depth, the respiratory events' effect on flow and effort) and the
heart (rate, beat times, the breathing-driven modulation of each beat). The renderers
(`render_*.py`) turn it into channels. With `coupling="physiological"` every modality renders the
same latent, so a 30-s window of EEG, ECG and airflow shares its breaths, beats, arousals and
movements; with `coupling="none"` each modality renders its own independent draw (sharing only the
hypnogram and the scored respiratory events), the negative control of docs/synthetic.md.

Magnitudes and their sources are listed in docs/synthetic.md ("Couplings").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import scipy.signal

from sleepfm_jax.data.synthetic import events as ev
from sleepfm_jax.data.synthetic.constants import CR, REM, W
from sleepfm_jax.data.synthetic.noise import (intervals_to_track, lognormal_mod, poisson_times,
                                              renewal_gate)
from sleepfm_jax.data.synthetic.subject import SubjectParams, signature


@dataclasses.dataclass
class Breathing:
  """Breathing at control rate: phase (rad), rate (Hz), tidal depth and event modulation."""

  phase: np.ndarray      # unwrapped; airflow ~ sin(phase): inspiration where sin > 0
  rate: np.ndarray       # breaths per second
  tidal: np.ndarray      # relative tidal amplitude (1 = the subject's usual breath)
  flow: np.ndarray       # airflow factor of respiratory events and recovery breaths
  effort: np.ndarray     # effort factor of respiratory events and recovery breaths
  paradox: np.ndarray    # thoraco-abdominal phase shift (rad) in obstructive events


@dataclasses.dataclass
class Heart:
  """Heart rate at control rate, and per beat: time, RR, QRS amplitude and axis modulation."""

  hr: np.ndarray         # bpm at control rate
  beats: np.ndarray      # R-peak times (s)
  rr: np.ndarray         # preceding RR interval (s) of each beat
  amp: np.ndarray        # QRS amplitude factor (ECG-derived respiration, position)
  axis: np.ndarray       # relative change of the S wave (electrical-axis swing with breathing)
  morph: np.ndarray      # P, Q, R, S, T amplitudes (mV) of this night's beats


@dataclasses.dataclass
class Latent:
  """What the body does during one night (see the module docstring)."""

  P: np.ndarray                              # soft stage weights [n_ct, 5]
  run_ct: np.ndarray                         # stage-run index of each control sample
  arousals: list[tuple[float, float]]        # scored arousals (onset, duration)
  arousal: np.ndarray                        # arousal indicator track (ramped)
  moves: list[tuple[float, float]]           # body movements (onset, duration)
  position: np.ndarray                       # body position per control sample (0..3)
  eyes_open: np.ndarray
  phasic: np.ndarray                         # phasic-REM gate
  events_ind: np.ndarray                     # respiratory-event indicator track
  breathing: Breathing
  heart: Heart

  @property
  def arousal_onsets(self) -> np.ndarray:
    return np.array([a[0] for a in self.arousals])


STAGE_GAIN_RANGE = (0.0, 5.0)


def check_stage_gain(gain: float) -> float:
  """`gain` if it lies in `STAGE_GAIN_RANGE`, else a ValueError."""
  lo, hi = STAGE_GAIN_RANGE
  if not lo <= gain <= hi:
    raise ValueError(f"stage_gain={gain}: expected {lo:g} to {hi:g}")
  return float(gain)


def stage_profile(values: np.ndarray, gain: float) -> np.ndarray:
  """Per-stage `values` (W first) with their departures from wake scaled by `gain` (1: as is)."""
  if gain == 1.0:
    return values
  return values[W] + gain * (values - values[W])


def draw_latent(rng: np.random.Generator, p: SubjectParams, stages: np.ndarray, P: np.ndarray,
                run_ct: np.ndarray, resp_events: list[dict[str, Any]],
                stage_gain: float = 1.0) -> Latent:
  """Draws the latent physiology of one night from one random stream.

  `stage_gain` scales how far heart rate, breathing rate and tidal depth move with the stage,
  away from their wake values (`stage_profile`): 1 keeps the literature-sized effects; larger
  values are a positive control for cross-modal learning of the stage, not physiology.
  """
  r_arousal, r_gate, r_move, r_breath, r_hr = rng.spawn(5)
  n_ct = P.shape[0]
  arousals = ev.arousals(r_arousal, p, stages, resp_events)
  onsets = np.array([a[0] for a in arousals])
  arousal = intervals_to_track([(o, o + d) for o, d in arousals], n_ct, 1.0)
  eyes_open = renewal_gate(r_gate, n_ct, 25.0 * p.eyes_open_fraction / 0.35,
                           25.0 * (1 - p.eyes_open_fraction) / 0.65, 0.5)
  phasic = renewal_gate(r_gate, n_ct, 6.0, 25.0 / signature(p)["phasic"], 0.5) * P[:, REM]
  moves = ev.movements(r_move, p, P, onsets)
  position = ev.positions(r_move, p, moves, n_ct)
  events_ind = intervals_to_track([(e["onset"], e["onset"] + e["duration"])
                                   for e in resp_events], n_ct, 2.0)
  breathing = _breathing(r_breath, p, P, resp_events, arousal, stage_gain)
  heart = _heart(r_hr, p, P, breathing, onsets, events_ind, position, stage_gain)
  return Latent(P=P, run_ct=run_ct, arousals=arousals, arousal=arousal, moves=moves,
                position=position, eyes_open=eyes_open, phasic=phasic, events_ind=events_ind,
                breathing=breathing, heart=heart)


# Breathing rate by stage (relative) and its slow (tau 40 s) and breath-to-breath (tau 4 s)
# variability: most regular in N3, least in REM and wake.
_BREATH_RATE = np.array([1.05, 1.0, 0.97, 0.96, 1.05])
_BREATH_SLOW_SD = np.array([0.15, 0.10, 0.07, 0.05, 0.18])
_BREATH_FAST_SD = np.array([0.08, 0.06, 0.04, 0.03, 0.10])
_TIDAL = np.array([1.0, 0.95, 0.9, 0.92, 0.88])
_TIDAL_SD = np.array([0.2, 0.12, 0.08, 0.05, 0.25])


def _event_modulation(rng: np.random.Generator, n_ct: int, resp_events: list[dict[str, Any]]):
  """Airflow and effort factors and the belts' paradox of the respiratory events."""
  flow, effort, paradox = np.ones(n_ct), np.ones(n_ct), np.zeros(n_ct)
  for e in resp_events:
    a, b = int(e["onset"] * CR), int((e["onset"] + e["duration"]) * CR)
    ramp = np.clip(np.arange(b - a) / (2.0 * CR), 0, 1)
    flow[a:b] = 1 - ramp * (1 - e["flow"])
    if e["kind"] == "obstructive_apnea":
      effort[a:b] = np.linspace(0.85, 1.4, b - a)       # crescendo of effort
    else:
      effort[a:b] = 1 - ramp * (1 - e["effort"])
    paradox[a:b] = e["paradox"] * np.clip(np.arange(b - a) / (8.0 * CR), 0, 1)
    r = int(e["recovery"] * CR)
    boost = 1.0 + rng.uniform(0.6, 1.2) * np.exp(-np.arange(r) / (6.0 * CR))
    flow[b:b + r] *= boost[:max(min(r, n_ct - b), 0)]
    effort[b:b + r] *= boost[:max(min(r, n_ct - b), 0)]
  return flow, effort, paradox


def _breathing(rng: np.random.Generator, p: SubjectParams, P: np.ndarray,
               resp_events: list[dict[str, Any]], arousal: np.ndarray,
               stage_gain: float = 1.0) -> Breathing:
  n_ct = P.shape[0]
  rate = (p.resp_rate / 60.0) * (P @ stage_profile(_BREATH_RATE, stage_gain))
  rate = rate * lognormal_mod(rng, n_ct, 40.0, P @ _BREATH_SLOW_SD)
  rate = rate * lognormal_mod(rng, n_ct, 4.0, P @ _BREATH_FAST_SD)
  tidal = (P @ stage_profile(_TIDAL, stage_gain)) * lognormal_mod(rng, n_ct, 8.0, P @ _TIDAL_SD)
  flow, effort, paradox = _event_modulation(rng, n_ct, resp_events)
  rate = rate * (1 + 0.15 * arousal)
  phase = 2 * np.pi * np.cumsum(rate) / CR + rng.uniform(0, 2 * np.pi)
  sighs = poisson_times(rng, P @ np.array([1 / 300, 1 / 600, 1 / 1200, 1 / 2400, 1 / 600]))
  sigh = 1.0 + 1.2 * intervals_to_track([(s, s + 4.0) for s in sighs], n_ct, 2.0)
  tidal = tidal * sigh * (1 + 0.6 * arousal)
  return Breathing(phase=phase, rate=rate, tidal=tidal, flow=flow, effort=effort,
                   paradox=paradox)


# Heart rate by stage (relative), slow fluctuation (tau 20 s) by stage, and respiratory sinus
# arrhythmia: half peak-to-trough amplitude in bpm at the usual breath, larger in NREM.
_HR_STAGE = np.array([1.0, 0.97, 0.93, 0.9, 0.99])
_HR_SD = np.array([0.05, 0.03, 0.025, 0.02, 0.06])
_RSA_BPM = np.array([2.5, 3.5, 4.5, 5.0, 2.5])


def _heart(rng: np.random.Generator, p: SubjectParams, P: np.ndarray, b: Breathing,
           arousal_onsets: np.ndarray, events_ind: np.ndarray, position: np.ndarray,
           stage_gain: float = 1.0) -> Heart:
  n_ct = P.shape[0]
  t_ct = np.arange(n_ct) / CR
  hr = p.hr_base * (P @ stage_profile(_HR_STAGE, stage_gain))
  hr = hr * lognormal_mod(rng, n_ct, 20.0, P @ _HR_SD) * lognormal_mod(rng, n_ct, 90.0, 0.04)
  # RSA grows with tidal volume and falls with breathing rate (Hirsch & Bishop 1981); heart rate
  # rises through inspiration and peaks late in it.
  depth = np.clip(b.tidal * b.flow, 0.0, 2.5)
  slow = np.clip(0.25 / np.maximum(b.rate, 0.05), 0.5, 1.6) ** 0.5
  rsa = (P @ _RSA_BPM) * (1.3 - 0.7 * p.age_factor) * p.rsa_gain * depth * slow
  hr = hr + rsa * np.sin(b.phase - 0.5)
  kernel_t = np.arange(0, 40.0, 1 / CR)
  surge = (kernel_t / 5.0) * np.exp(1 - kernel_t / 5.0)  # arousal tachycardia, peak at 5 s
  impulses = np.zeros(n_ct)
  for o in arousal_onsets:
    impulses[min(int(o * CR), n_ct - 1)] += rng.uniform(8.0, 22.0)
  hr = hr + scipy.signal.oaconvolve(impulses, surge)[:n_ct] - 4.0 * events_ind
  hr = np.clip(hr, 35.0, 160.0)
  cum = np.cumsum(hr / 60.0) / CR + rng.uniform(0, 1)
  k = np.arange(math.ceil(cum[0]), math.floor(cum[-1]) + 1)
  beats = np.interp(k, cum, t_ct)
  rr = np.diff(beats, prepend=beats[0] - 60.0 / p.hr_base)
  # ECG-derived respiration: QRS amplitude and axis follow lung volume (phase - pi/2: lowest at
  # end expiration); body position scales the amplitude.
  volume = -np.cos(np.interp(beats, t_ct, b.phase))
  beat_depth = np.interp(beats, t_ct, np.clip(b.tidal * b.flow, 0.0, 2.5))
  pos = position[np.minimum((beats * CR).astype(np.int64), n_ct - 1)]
  amp = np.asarray(p.ecg_position_gain)[pos] * (1.0 + p.edr_depth * beat_depth * volume)
  axis = p.axis_depth * beat_depth * volume
  morph = np.array([0.12, -0.12, 1.0, -0.25, 0.3]) * rng.lognormal(0, 0.2, 5)
  return Heart(hr=hr, beats=beats, rr=rr, amp=amp, axis=axis, morph=morph)
