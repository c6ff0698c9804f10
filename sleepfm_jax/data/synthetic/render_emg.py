"""Chin EMG of a SYNTHETIC night.

Tone by stage (REM atonia the lowest of the night), inspiratory modulation of tone (stronger with
effort), bursts at arousals, phasic twitches in REM, and the ECG picked up by the chin electrodes.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

from sleepfm_jax.data.synthetic.latent import Latent
from sleepfm_jax.data.synthetic.noise import (band, lognormal_mod, poisson_times, spectral_noise,
                                              to_rate)
from sleepfm_jax.data.synthetic.render_ecg import ecg_wave
from sleepfm_jax.data.synthetic.subject import SubjectParams


def render_emg(rng: np.random.Generator, p: SubjectParams, lat: Latent, sig: dict, nb: int,
               fb: float) -> np.ndarray:
  """Chin EMG at the BAS rate `fb` (uV, before AC coupling and gain)."""
  P, n_ct, b = lat.P, lat.P.shape[0], lat.breathing
  tone = (P @ sig["emg"]) * lognormal_mod(rng, n_ct, 30.0, 0.35)
  tone = tone * (1 + 2.5 * lat.arousal)
  tone = tone * (1 + p.emg_insp * np.clip(b.effort, 0, 2) * np.maximum(np.sin(b.phase), 0.0))
  tw_rate = P @ np.array([0.05, 0.02, 0.01, 0.0, 0.04]) + 0.4 * lat.phasic
  tw = np.zeros(nb)
  tt = poisson_times(rng, tw_rate)
  np.add.at(tw, np.minimum(np.round(tt * fb).astype(np.int64), nb - 1),
            rng.uniform(4.0, 12.0, tt.size))
  kt = np.arange(-0.1, 0.1, 1 / fb)
  tw = scipy.signal.oaconvolve(tw, np.exp(-0.5 * (kt / 0.03) ** 2), mode="same")
  carrier = spectral_noise(rng, nb, fb, lambda f: band(f, 20.0, min(100.0, 0.42 * fb), 3))
  x = p.emg_scale * (to_rate(tone, nb, fb) + tw.astype(np.float32)) * carrier
  x += 0.6 * spectral_noise(rng, nb, fb, lambda f: band(f, 10.0, 0.45 * fb))
  spike = ecg_wave(lat.heart, nb, fb, qrs_only=True) * (-1.0 if p.ecg_inverted else 1.0)
  return x + p.emg_ecg_uv * spike
