"""Numerical building blocks of the SYNTHETIC generator: shaped noise, slow processes, tracks.

"Control rate" tracks (`CR` = 4 Hz) carry the slow envelopes that drive the signals; renderers
interpolate them onto each channel's sampling rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal

from sleepfm_jax.data.synthetic.constants import CR

def band(f: np.ndarray, lo: float, hi: float, order: int = 2) -> np.ndarray:
  """Butterworth-like band-pass magnitude (lo=0: low-pass only)."""
  with np.errstate(divide="ignore"):
    g = 1.0 / np.sqrt(1.0 + (f / hi) ** (2 * order))
    if lo > 0:
      g = g / np.sqrt(1.0 + (lo / np.maximum(f, 1e-12)) ** (2 * order))
  return g


def gauss(f0: float, sd: float) -> Callable[[np.ndarray], np.ndarray]:
  return lambda f: np.exp(-0.5 * ((f - f0) / sd) ** 2)


class Shaper:
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


def spectral_noise(rng: np.random.Generator, n: int, fs: float,
                    amp: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
  """One draw of Gaussian noise with amplitude spectrum `amp(f)`, unit RMS, float32 [n]."""
  return Shaper(n, fs, amp)(rng)


def add_movements(rng: np.random.Generator, x: np.ndarray, fs: float,
                   moves: Sequence[tuple[float, float]], lf_amp: tuple[float, float],
                   hf_amp: tuple[float, float], hf_lo: float = 15.0) -> None:
  """Adds body-movement artefacts in place: a slow swing plus a muscle burst under a Hann window."""
  hf_hi = min(100.0, 0.42 * fs)
  for t0, d in moves:
    m = int(d * fs)
    if m < 8:
      continue
    win = np.hanning(m).astype(np.float32)
    w = rng.uniform(*lf_amp) * spectral_noise(rng, m, fs, lambda f: band(f, 0.3, min(4.0, hf_hi)))
    if hf_amp[1] > 0 and hf_hi > hf_lo:
      w = w + rng.uniform(*hf_amp) * spectral_noise(rng, m, fs,
                                                     lambda f: band(f, hf_lo, hf_hi))
    add_at(x, fs, t0, win * w)


def ou(rng: np.random.Generator, n: int, tau: float, dt: float = 1.0 / CR) -> np.ndarray:
  """Stationary Ornstein-Uhlenbeck process with unit variance and time constant `tau` (s)."""
  a = math.exp(-dt / tau)
  w = rng.standard_normal(n)
  y = scipy.signal.lfilter([math.sqrt(1 - a * a)], [1, -a], w, zi=[a * rng.standard_normal()])[0]
  return y


def lognormal_mod(rng: np.random.Generator, n: int, tau: float, sigma) -> np.ndarray:
  """Slow multiplicative fluctuation exp(sigma * OU - sigma^2 / 2) (mean about 1)."""
  s = np.asarray(sigma, dtype=np.float64)
  return np.exp(s * ou(rng, n, tau) - 0.5 * s * s)


def to_rate(track: np.ndarray, n: int, fs: float) -> np.ndarray:
  """Linearly interpolates a control-rate track onto `n` samples at `fs` (float32)."""
  t_ct = np.arange(track.size) / CR
  return np.interp(np.arange(n) / fs, t_ct, track).astype(np.float32)


def poisson_times(rng: np.random.Generator, rate_ct: np.ndarray) -> np.ndarray:
  """Event times (s) of an inhomogeneous Poisson process with rate `rate_ct` (1/s, control rate)."""
  p = np.clip(rate_ct / CR, 0.0, 0.9)
  idx = np.flatnonzero(rng.random(p.size) < p)
  return (idx + rng.random(idx.size)) / CR


def intervals_to_track(intervals, n_ct: int, ramp_s: float = 1.0, values=None) -> np.ndarray:
  """0/1 (or `values`) indicator of [onset, end) intervals at control rate, ramped."""
  x = np.zeros(n_ct)
  for i, (on, end) in enumerate(intervals):
    a, b = int(round(on * CR)), int(round(end * CR))
    v = 1.0 if values is None else values[i]
    x[max(a, 0):max(min(b, n_ct), 0)] = np.maximum(x[max(a, 0):max(min(b, n_ct), 0)], v)
  width = max(int(round(ramp_s * CR)), 1)
  return scipy.ndimage.uniform_filter1d(x, width, mode="nearest") if width > 1 else x


def renewal_gate(rng: np.random.Generator, n_ct: int, mean_on: float, mean_off: float,
                  ramp_s: float = 1.0) -> np.ndarray:
  """An alternating on/off process (exponential durations) at control rate, ramped."""
  total = n_ct / CR
  k = int(total / (mean_on + mean_off) * 2 + 20)
  dur = np.empty(2 * k)
  dur[0::2] = rng.exponential(mean_on, k) + 1.0
  dur[1::2] = rng.exponential(mean_off, k) + 1.0
  edges = np.cumsum(dur) - rng.uniform(0, dur[0] + dur[1])
  starts, ends = edges[0::2], edges[1::2]
  return intervals_to_track(list(zip(starts, ends, strict=True)), n_ct, ramp_s)


def add_at(track: np.ndarray, fs: float, onset: float, wave: np.ndarray) -> None:
  """Adds `wave` into `track` starting at `onset` seconds (clipped at the edges)."""
  i = int(round(onset * fs))
  a, b = max(i, 0), min(i + wave.size, track.size)
  if b > a:
    track[a:b] += wave[a - i:b - i]


def highpass(x: np.ndarray, fs: float, fc: float) -> np.ndarray:
  """First-order high-pass (AC coupling of a PSG amplifier)."""
  a = math.exp(-2 * math.pi * fc / fs)
  return scipy.signal.lfilter([(1 + a) / 2, -(1 + a) / 2], [1, -a], x).astype(np.float32)
