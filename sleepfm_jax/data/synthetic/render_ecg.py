"""The ECG of a SYNTHETIC night, and the cardiac field that other channels pick up.

PQRST beats at the latent beat times: amplitude and electrical axis swing with breathing
(ECG-derived respiration) and with body position; the T wave follows the preceding RR interval
(QT ~ sqrt RR); the trace carries respiratory baseline wander, muscle noise and movement artefacts.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

from sleepfm_jax.data.synthetic.constants import CR
from sleepfm_jax.data.synthetic.latent import Heart, Latent
from sleepfm_jax.data.synthetic.noise import (add_movements, band, highpass, ou, spectral_noise,
                                              to_rate)
from sleepfm_jax.data.synthetic.subject import SubjectParams


def _gauss(t: np.ndarray, centre: float, width: float) -> np.ndarray:
  return np.exp(-0.5 * ((t - centre) / width) ** 2)


def ecg_wave(heart: Heart, n: int, fs: float, qrs_only: bool = False) -> np.ndarray:
  """Renders the beats of `heart` at `fs` Hz (mV); `qrs_only` gives the cardiac field's spike."""
  def impulses(times, weights):
    idx = np.round(times * fs).astype(np.int64)
    ok = (idx >= 0) & (idx < n)
    return np.bincount(idx[ok], weights[ok], minlength=n)

  def place(times, weights, wave, off):
    return scipy.signal.oaconvolve(impulses(times, weights), wave)[off:off + n]

  t = np.arange(-0.3, 0.3, 1.0 / fs)
  off = int(0.3 * fs)
  pa, qa, ra, sa, ta = heart.morph
  beats, amp = heart.beats, heart.amp
  x = place(beats, amp * (1 + 0.5 * heart.axis), ra * _gauss(t, 0.0, 0.011) + qa * _gauss(
      t, -0.028, 0.01), off)
  x += place(beats, amp * (1 - heart.axis), sa * _gauss(t, 0.03, 0.012), off)
  if not qrs_only:
    x += place(beats, amp, pa * _gauss(t, -0.19, 0.025), off)
    tt = np.arange(0, 0.3, 1.0 / fs)
    t_peak = beats + 0.27 * np.sqrt(np.clip(heart.rr, 0.4, 2.0)) - 0.15
    x += place(t_peak, amp, ta * _gauss(tt, 0.15, 0.055), 0)
  return x.astype(np.float32)


def render_ecg(rng: np.random.Generator, p: SubjectParams, lat: Latent, fe: float,
               duration: float) -> np.ndarray:
  """One ECG lead at `fe` Hz (mV), before the channel gain."""
  n_ct = lat.P.shape[0]
  ne = int(round(duration * fe))
  ecg = ecg_wave(lat.heart, ne, fe)
  t_ct = np.arange(n_ct) / CR
  wander = lat.breathing.tidal * np.sin(lat.breathing.phase)  # thorax impedance with breathing
  ecg += 0.1 * np.interp(np.arange(ne) / fe, t_ct, wander).astype(np.float32)
  ecg += 0.15 * to_rate(ou(rng, n_ct, 20.0), ne, fe)
  ecg += 0.012 * spectral_noise(rng, ne, fe, lambda f: band(f, 20.0, 0.4 * fe))
  add_movements(rng, ecg, fe, lat.moves, (0.2, 0.8), (0.02, 0.08))
  sign = -1.0 if p.ecg_inverted else 1.0
  return sign * 1.1 * highpass(ecg, fe, 0.3)
