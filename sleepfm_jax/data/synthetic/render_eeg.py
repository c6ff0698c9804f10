"""EEG (C3-M2, C4-M1, O1-M2, O2-M1) of a SYNTHETIC night.

Stage-driven rhythms (1/f background, delta, theta, alpha, beta) with shared and channel-specific
sources, transients (spindles, K-complexes, vertex waves, sawtooth waves), arousal bursts, and what
the body adds: the cardiac field of each beat at the mastoid references, a pulse artefact under
one electrode in some subjects, and a breathing sway in the electrodes the sleeper lies on.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.ndimage
import scipy.signal

from sleepfm_jax.data.synthetic.constants import CR, W
from sleepfm_jax.data.synthetic.latent import Latent
from sleepfm_jax.data.synthetic.noise import (Shaper, add_at, band, gauss, lognormal_mod,
                                              poisson_times, to_rate)
from sleepfm_jax.data.synthetic.render_ecg import ecg_wave
from sleepfm_jax.data.synthetic.render_resp import beat_pulses
from sleepfm_jax.data.synthetic.subject import SubjectParams

_DEPTH = (0.0, 0.08, 0.35, 1.0, 0.05)        # slow-wave "depth" target by stage
_EEG_TOPO = {  # (C3, C4, O1, O2)
    "bg": (1.0, 1.0, 0.9, 0.9), "delta": (1.0, 1.0, 0.7, 0.7), "theta": (1.0, 1.0, 0.8, 0.8),
    "alpha": (0.45, 0.45, 1.0, 1.0), "beta": (1.0, 1.0, 0.8, 0.8),
    "spindle": (1.0, 1.0, 0.45, 0.45), "kcomplex": (1.0, 1.0, 0.6, 0.6),
    "vertex": (1.0, 1.0, 0.3, 0.3), "sawtooth": (1.0, 1.0, 0.5, 0.5),
}
EEG_NAMES = ("C3-M2", "C4-M1", "O1-M2", "O2-M1")
_EVENT_RATES = {  # per minute by stage
    "spindle": (0.0, 0.3, 5.0, 2.0, 0.0),
    "kcomplex": (0.0, 0.2, 1.5, 0.4, 0.0),
    "vertex": (0.0, 2.0, 0.3, 0.0, 0.0),
    "sawtooth": (0.0, 0.0, 0.0, 0.0, 0.6),
}

# Breathing sway by body position (supine, left, right, prone) and channel (C3, C4, O1, O2): the
# electrodes pressed into the pillow move with each breath.
_SWAY = np.array([[0.2, 0.2, 1.0, 1.0], [1.0, 0.2, 1.0, 0.3], [0.2, 1.0, 0.3, 1.0],
                  [0.3, 0.3, 0.3, 0.3]])


@dataclasses.dataclass
class EEG:
  """EEG channels (uV, at the BAS rate) and the sources the EOG picks up."""

  channels: dict[str, np.ndarray]
  delta: np.ndarray      # shared delta source
  background: np.ndarray  # shared 1/f source
  kcomplex: np.ndarray   # K-complex track


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
    times = list(poisson_times(rng, rate))
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
      add_at(track, fs, t0, wave.astype(np.float32))
    out[name] = track
  return out



def _envelopes(rng: np.random.Generator, p: SubjectParams, lat: Latent,
               sig: dict) -> dict[str, np.ndarray]:
  """Amplitude envelopes (uV RMS, control rate) of the five rhythms."""
  P, arousal = lat.P, lat.arousal
  run_depth = rng.uniform(0.5, 1.7, lat.run_ct.max() + 1)  # light and deep N2, shallow/deep N3
  depth = (P @ np.asarray(_DEPTH)) * run_depth[lat.run_ct]
  depth = scipy.ndimage.uniform_filter1d(depth, int(45 * CR), mode="nearest")
  depth = depth * (1 - 0.7 * arousal)
  eo_w = lat.eyes_open * P[:, W]
  return {
      "bg": P @ sig["bg"],
      "delta": p.delta_scale * (4.0 + 50.0 * np.clip(depth, 0, 1) ** 1.3),
      "theta": P @ sig["theta"] + 4.0 * arousal,
      "alpha": p.alpha_amp * (P @ sig["alpha"] - 0.8 * eo_w + 0.8 * arousal),
      "beta": P @ sig["beta"] + 1.5 * eo_w + 4.0 * arousal,
  }


def _rhythms(rng: np.random.Generator, p: SubjectParams, lat: Latent, sig: dict,
             present: set[str], nb: int, fb: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """The four channels' rhythms [4, nb] and the shared source of each rhythm."""
  hf = min(70.0, 0.42 * fb)
  env = _envelopes(rng, p, lat, sig)
  spectra = {
      "bg": lambda f: f ** (-p.bg_slope / 2) * band(f, 0.3, hf, 2),
      "delta": lambda f: np.exp(-0.5 * (np.log(np.maximum(f, 1e-3) / 0.9) / 0.5) ** 2),
      "theta": gauss(5.5 + rng.uniform(-0.5, 0.5), 1.0),
      "alpha": gauss(p.alpha_freq, 0.6),
      "beta": lambda f: gauss(20.0, 5.0)(f) * band(f, 0.0, hf, 4),
  }
  n_ct = lat.P.shape[0]
  eeg = np.zeros((4, nb), np.float32)
  shared = {}
  for comp in ("bg", "delta", "theta", "alpha", "beta"):
    e = env[comp] * lognormal_mod(rng, n_ct, 40.0, 0.4)
    e_fs = to_rate(np.maximum(e, 0.0), nb, fb)
    shaper = Shaper(nb, fb, spectra[comp])
    g = shaper(rng)
    shared[comp] = g * e_fs
    for ch in range(4):
      if EEG_NAMES[ch] not in present:
        continue
      own = shaper(rng)
      own *= 0.66
      own += 0.75 * g
      own *= e_fs
      own *= _EEG_TOPO[comp][ch]
      eeg[ch] += own
  return eeg, shared


def body_artefacts(p: SubjectParams, lat: Latent, nb: int, fb: float) -> np.ndarray:
  """What the heart and breathing add to each EEG channel [4, nb] (uV): the cardiac field
  (Dirlich et al. 1997), a pulse artefact under one electrode, and a breathing sway."""
  spike = ecg_wave(lat.heart, nb, fb, qrs_only=True) * (-1.0 if p.ecg_inverted else 1.0)
  out = np.outer(p.cfa_uv * np.asarray(p.cfa_channel[:4], np.float32), spike)
  if p.pulse_channel >= 0:
    out[p.pulse_channel] += p.pulse_uv * beat_pulses(lat.heart.beats, nb, fb, 0.25, 0.08)
  if p.resp_artefact_uv > 0:
    b = lat.breathing
    sway = to_rate(b.tidal * np.sin(b.phase + 0.8), nb, fb)
    gain = _SWAY[lat.position]                                       # [n_ct, 4]
    for ch in range(4):
      out[ch] += p.resp_artefact_uv * to_rate(gain[:, ch], nb, fb) * sway
  return out


def render_eeg(rng: np.random.Generator, p: SubjectParams, lat: Latent, sig: dict,
               present: set[str], nb: int, fb: float) -> EEG:
  """The EEG channels in `present` at the BAS rate `fb` (uV, before AC coupling and gains)."""
  eeg, shared = _rhythms(rng, p, lat, sig, present, nb, fb)
  trans = _transients(rng, p, lat.P, lat.phasic, lat.arousal_onsets, nb, fb)
  for comp, x in trans.items():
    for ch in range(4):
      eeg[ch] += _EEG_TOPO[comp][ch] * x * rng.uniform(0.85, 1.15)
  scale = (1.1 - 0.25 * p.age_factor) * sig["eeg_scale"]
  body = body_artefacts(p, lat, nb, fb)
  channels = {name: scale * eeg[ch] + body[ch] for ch, name in enumerate(EEG_NAMES)
              if name in present}
  return EEG(channels=channels, delta=shared["delta"], background=shared["bg"],
             kcomplex=trans["kcomplex"])
