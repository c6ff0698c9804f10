"""EOG (E1-M2, E2-M1) of a SYNTHETIC night.

A gaze-position process with saccades (wake with eyes open, dense in phasic REM), blinks, slow
rolling eye movements (strongest in N1), frontal EEG leakage in phase in both channels, and the
cardiac field of each beat. Eye movements appear anti-correlated in E1 and E2.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import scipy.signal

from sleepfm_jax.data.synthetic.constants import N1, N2, N3, REM, W
from sleepfm_jax.data.synthetic.latent import Latent
from sleepfm_jax.data.synthetic.noise import (Shaper, add_at, band, highpass, poisson_times,
                                              spectral_noise, to_rate)
from sleepfm_jax.data.synthetic.render_eeg import EEG
from sleepfm_jax.data.synthetic.render_ecg import ecg_wave
from sleepfm_jax.data.synthetic.subject import SubjectParams

EOG_NAMES = ("E1-M2", "E2-M1")


def _gaze(rng: np.random.Generator, lat: Latent, nb: int, fb: float) -> np.ndarray:
  """Gaze position (uV): saccades as steps of a mean-reverting position, AC-coupled."""
  P, eo, pw = lat.P, lat.eyes_open, lat.P[:, W]
  sacc_rate = (pw * (0.5 * eo + 0.03 * (1 - eo)) + 0.02 * P[:, N1]
               + 0.002 * (P[:, N2] + P[:, N3]) + P[:, REM] * 0.03 + 1.5 * lat.phasic)
  st = poisson_times(rng, sacc_rate)
  jumps = rng.normal(0, 70.0, st.size)
  pos_k = scipy.signal.lfilter([1.0], [1.0, -0.5], jumps)
  idx = np.searchsorted(np.round(st * fb), np.arange(nb), side="right") - 1
  pos = np.where(idx >= 0, pos_k[np.maximum(idx, 0)] if st.size else 0.0, 0.0)
  pos = scipy.ndimage.uniform_filter1d(pos.astype(np.float32), max(int(0.04 * fb), 1))
  return highpass(pos, fb, 0.3)


def _blinks(rng: np.random.Generator, lat: Latent, nb: int, fb: float) -> np.ndarray:
  blink = np.zeros(nb, np.float32)
  bt = np.arange(int(0.35 * fb)) / fb
  rate = lat.P[:, W] * 0.25 * lat.eyes_open + 0.01 * lat.P[:, N1]
  for t0 in poisson_times(rng, rate):
    add_at(blink, fb, t0, (rng.uniform(100, 250) * np.sin(np.pi * bt / 0.35) ** 2)
           .astype(np.float32))
  return highpass(blink, fb, 0.3)


def render_eog(rng: np.random.Generator, p: SubjectParams, lat: Latent, sig: dict, eeg: EEG,
               present: set[str], nb: int, fb: float) -> dict[str, np.ndarray]:
  """The EOG channels in `present` at the BAS rate `fb` (uV, before AC coupling and gains)."""
  if not present & set(EOG_NAMES):
    return {}
  pos = _gaze(rng, lat, nb, fb)
  blink = _blinks(rng, lat, nb, fb)
  sem_env = lat.P @ sig["sem"] + 15.0 * lat.P[:, W] * (1 - lat.eyes_open)
  sem = to_rate(sem_env, nb, fb) * spectral_noise(rng, nb, fb, lambda f: np.exp(
      -0.5 * (np.log(f / 0.25) / 0.6) ** 2))
  leak = 0.35 * eeg.delta + 0.4 * eeg.kcomplex + 0.2 * eeg.background
  noise = Shaper(nb, fb, lambda f: band(f, 0.3, min(70.0, 0.42 * fb)))
  spike = ecg_wave(lat.heart, nb, fb, qrs_only=True) * (-1.0 if p.ecg_inverted else 1.0)
  out = {}
  for k, (name, sgn) in enumerate(zip(EOG_NAMES, (1.0, -1.0), strict=True)):
    if name in present:
      x = sgn * (pos + 0.6 * blink + sem) * rng.uniform(0.85, 1.15) + leak + 3.0 * noise(rng)
      out[name] = x + p.cfa_uv * p.cfa_channel[4 + k] * spike
  return out
