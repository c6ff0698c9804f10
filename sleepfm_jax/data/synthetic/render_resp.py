"""Respiratory channels of a SYNTHETIC night: airflow, thoracic and abdominal effort, SpO2.

Rendered from the latent breathing (phase, depth, events), the heart beats (cardiogenic
oscillations), body position (belt gains) and movements (artefacts).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sleepfm_jax.data.synthetic.constants import CR, REM
from sleepfm_jax.data.synthetic.latent import Latent
from sleepfm_jax.data.synthetic.noise import add_movements, highpass, ou, to_rate
from sleepfm_jax.data.synthetic.subject import SubjectParams

EFFORT = ("Airflow", "Thorax", "Abdomen")


def beat_pulses(beats: np.ndarray, n: int, fs: float, delay: float, width: float) -> np.ndarray:
  """A train of Gaussian pulses (peak 1) `delay` s after each beat: pulse-synchronous motion."""
  x = np.zeros(n)
  idx = np.round((beats + delay) * fs).astype(np.int64)
  ok = (idx >= 0) & (idx < n)
  np.add.at(x, idx[ok], 1.0)
  half = int(4 * width * fs) + 1
  kt = np.arange(-half, half + 1) / fs
  return np.convolve(x, np.exp(-0.5 * (kt / width) ** 2), mode="same").astype(np.float32)


def render_effort(rng: np.random.Generator, p: SubjectParams, lat: Latent, fr: float,
                  duration: float) -> dict[str, np.ndarray]:
  """Airflow (thermistor-like), thorax and abdomen belts at `fr` Hz, before channel gains."""
  b = lat.breathing
  n_ct = b.phase.size
  t_ct = np.arange(n_ct) / CR
  nr = int(round(duration * fr))
  ph = np.interp(np.arange(nr) / fr, t_ct, b.phase)
  # A thermistor under-reports reductions (its output is compressive in flow amplitude).
  amp_flow = to_rate((b.tidal * b.flow) ** 0.7, nr, fr)
  amp_eff = to_rate(b.tidal * b.effort, nr, fr)

  def noise(s):
    return s * rng.standard_normal(nr).astype(np.float32)

  def drift(s):
    return s * to_rate(ou(rng, n_ct, 60.0), nr, fr)

  # Cardiogenic oscillations: each heart beat moves a little air (visible in flat central apneas).
  cardio = beat_pulses(lat.heart.beats, nr, fr, 0.15, 0.08) if fr >= 4 else np.zeros(nr)
  cardio -= cardio.mean()
  flow = (amp_flow * (np.sin(ph) + 0.15 * np.sin(2 * ph + 0.6)) + p.cardio_osc * cardio
          + noise(0.03) + drift(0.05))
  gains = np.asarray(p.belt_position_gain)[lat.position]          # [n_ct, 2]
  g_thor, g_abdo = (to_rate(gains[:, k], nr, fr) for k in range(2))
  thor = g_thor * amp_eff * np.sin(ph - 0.15) + 0.3 * p.cardio_osc * cardio
  thor += noise(0.02) + drift(0.15)
  abdo_phase = ph + 0.15 + to_rate(b.paradox, nr, fr)
  abdo = g_abdo * amp_eff * rng.uniform(0.7, 1.3) * np.sin(abdo_phase) + noise(0.02) + drift(0.15)
  out = {}
  for name, x, mscale in (("Airflow", flow, 0.6), ("Thorax", thor, 1.5),
                          ("Abdomen", abdo, 1.5)):
    x = x.astype(np.float32)
    add_movements(rng, x, fr, lat.moves, (0.5 * mscale, 1.5 * mscale), (0.0, 0.0))
    out[name] = 100.0 * highpass(x, fr, 0.05)
  return out


def render_spo2(rng: np.random.Generator, p: SubjectParams, lat: Latent,
                resp_events: list[dict[str, Any]], duration: float
                ) -> tuple[np.ndarray, list[tuple[float, float]]]:
  """SpO2 at control rate (baseline, REM dip, delayed desaturations, motion false dips) and the
  scored desaturations (onset, duration) of >= 3 %."""
  n_ct = lat.P.shape[0]
  t_ct = np.arange(n_ct) / CR
  spo2 = (p.spo2_baseline - 0.6 * lat.P[:, REM] + 0.3 * ou(rng, n_ct, 60.0)
          + 0.15 * rng.standard_normal(n_ct))
  dip = np.zeros(n_ct)
  desats = []
  for e in resp_events:
    start, nadir = e["onset"] + e["lag"], e["onset"] + e["duration"] + e["lag"]
    rec = rng.uniform(10.0, 18.0)
    i0, i1 = int(start * CR), min(int((nadir + rec) * CR) + 1, n_ct)
    if i0 >= n_ct:
      continue
    seg = t_ct[i0:i1]
    fall = 0.5 - 0.5 * np.cos(np.pi * np.clip((seg - start) / (nadir - start), 0, 1))
    rise = 0.5 + 0.5 * np.cos(np.pi * np.clip((seg - nadir) / rec, 0, 1))
    dip[i0:i1] = np.maximum(dip[i0:i1], e["depth"] * np.where(seg < nadir, fall, rise))
    if e["depth"] >= 3.0 and nadir <= duration:
      desats.append((round(start, 1), round(nadir - start, 1)))
  for t0, _ in lat.moves:  # motion artefacts: brief false dips of the oximeter reading
    if rng.random() < 0.3:
      i0, m = int(t0 * CR), int(rng.uniform(5.0, 15.0) * CR)
      dip[i0:i0 + m] += rng.uniform(2.0, 6.0) * np.hanning(m)[:max(min(m, n_ct - i0), 0)]
  return np.clip(spo2 - dip, 50.0, 100.0), desats
