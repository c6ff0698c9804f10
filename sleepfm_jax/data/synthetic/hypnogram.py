"""The hypnogram and the continuous-time stage weights that drive every SYNTHETIC signal."""

from __future__ import annotations

import numpy as np
import scipy.ndimage

from sleepfm_jax.data.synthetic.constants import CR, EPOCH_SECONDS, N1, N2, N3, REM, W
from sleepfm_jax.data.synthetic.subject import SubjectParams

def hypnogram(rng: np.random.Generator, p: SubjectParams, n_epochs: int,
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


def stage_weights(rng: np.random.Generator, stages: np.ndarray,
                   ramp_s: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
  """Soft stage weights P [n_ct, 5] and the run index of each control sample.

  The physiological state changes at each scored boundary shifted by up to ±7 s and ramps over
  `ramp_s` seconds; some epochs carry a 4–13 s intrusion of a neighbouring state. Both keep every
  epoch at least 16 s in its scored stage, so the label stays the majority state (AASM rule).
  """
  n_ct = int(stages.size * EPOCH_SECONDS * CR)
  change = np.flatnonzero(np.diff(stages)) + 1
  t_b = change * EPOCH_SECONDS + rng.uniform(-7.0, 7.0, change.size)
  run_stage = stages[np.r_[0, change]]
  t = np.arange(n_ct) / CR
  run_ct = np.searchsorted(t_b, t, side="right")
  stage_ct = run_stage[run_ct]
  hit = rng.random(stages.size) < np.asarray(_INTRUSION_PROB)[stages]
  for ep in np.flatnonzero(hit):
    d = rng.uniform(4.0, 13.0)
    lo = ep * EPOCH_SECONDS + 7.0  # stay clear of the jittered boundaries
    hi = (ep + 1) * EPOCH_SECONDS - 7.0 - d
    if hi <= lo:
      continue
    a = int((lo + rng.uniform(0, hi - lo)) * CR)
    choices = _INTRUDERS[stages[ep]]
    stage_ct[a:a + int(d * CR)] = choices[int(rng.integers(len(choices)))]
  onehot = np.eye(5, dtype=np.float64)[stage_ct]
  P = scipy.ndimage.uniform_filter1d(onehot, int(ramp_s * CR), axis=0, mode="nearest")
  return P, run_ct
