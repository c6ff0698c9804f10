"""Scored events of a SYNTHETIC night: respiratory events, arousals, body movements, positions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sleepfm_jax.data.synthetic.constants import CR, EPOCH_SECONDS, REM, RESPIRATORY_KINDS, W
from sleepfm_jax.data.synthetic.noise import poisson_times
from sleepfm_jax.data.synthetic.subject import SubjectParams


def respiratory_events(rng: np.random.Generator, p: SubjectParams, stages: np.ndarray,
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


def arousals(rng: np.random.Generator, p: SubjectParams, stages: np.ndarray,
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


# Body movements per second by stage (W, N1, N2, N3, REM), scaled by the subject's artefact level;
# a quarter of arousals also bring one.
_MOVE_RATE = np.array([1 / 90, 1 / 600, 1 / 3000, 0.0, 1 / 3000])
POSITIONS = ("supine", "left", "right", "prone")
_POSITION_P = (0.45, 0.25, 0.22, 0.08)


def movements(rng: np.random.Generator, p: SubjectParams, P: np.ndarray,
              arousal_onsets: np.ndarray) -> list[tuple[float, float]]:
  """Body movements (onset, duration 2-8 s): mostly in wake, at some arousals, rare in sleep."""
  times = list(poisson_times(rng, (P @ _MOVE_RATE) * (0.5 + p.artefact_level)))
  times += list(arousal_onsets[rng.random(arousal_onsets.size) < 0.25])
  return sorted((float(t), float(rng.uniform(2.0, 8.0))) for t in times)


def positions(rng: np.random.Generator, p: SubjectParams, moves: list[tuple[float, float]],
              n_ct: int) -> np.ndarray:
  """Body position (index into `POSITIONS`) per control sample; it may change at a movement.

  Each movement turns the sleeper with probability `p.turn_prob`; the new position is drawn from
  the night's position mix, never the current one.
  """
  pos = np.empty(n_ct, np.int8)
  current = int(rng.choice(len(POSITIONS), p=_POSITION_P))
  start = 0
  for onset, dur in moves:
    if rng.random() >= p.turn_prob:
      continue
    i = min(max(int((onset + dur / 2) * CR), start), n_ct)
    pos[start:i] = current
    w = np.array(_POSITION_P)
    w[current] = 0.0
    current = int(rng.choice(len(POSITIONS), p=w / w.sum()))
    start = i
  pos[start:] = current
  return pos
