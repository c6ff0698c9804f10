"""Classical hand-crafted features per 30-s window: the spectral baseline for the probes.

What a sleep researcher would compute without any learned model:
* EEG (mean over the present EEG channels): relative band powers delta 0.5-4, theta 4-8,
  alpha 8-12, sigma 12-16, beta 16-30 Hz (Welch, 4-s Hann segments, 50% overlap) and log total
  power.
* EOG: log power 0.3-10 Hz and the slow-eye-movement share (0.3-2 Hz of it).
* EMG (chin): log variance and log power above 10 Hz (0 when the sampling rate cannot carry it).
* ECG: heart rate, SDNN and RMSSD of RR intervals (seconds) from a simple R-peak detector
  (5-20 Hz band-pass, squared, peaks ≥ 0.35 s apart above 30% of the window's 99th percentile);
  a channel counts as present only where it yields plausible beats (≥ 3, HR 30-200 bpm).
* Airflow / nasal pressure ("flow") and effort belts ("effort"), each: breathing rate from the
  spectral peak in 0.1-0.7 Hz (one Hann window over the 30 s, zero-padded; breaths/min), log
  power in that band, and amplitude variability: the coefficient of variation and the min/median
  ratio of the 5-s peak-to-peak ranges (p95 - p5), which flag apneas and hypopneas.
* SpO2: mean, minimum and drop (max - min) in the window, in the stored units.

Each group ends with a `<group>_present` indicator. A group whose channels are all missing (not in
the montage, masked out, all-zero or non-finite) gets zeros and indicator 0: the matrix is NaN-free.
Input: windows `[n, C, T]` per modality at one sampling rate, e.g. stacked `WindowStore` items.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import signal

from sleepfm_jax.data.channels import MODALITIES

BANDS = {"delta": (0.5, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 12.0), "sigma": (12.0, 16.0),
         "beta": (16.0, 30.0)}

# Canonical channel names (sleepfm_jax.data.channels) -> feature group.
CHANNEL_GROUPS = {
    **{c: "eeg" for c in ("C3-M2", "C4-M1", "O1-M2", "O2-M1", "F3-M2", "F4-M1", "Fpz-Cz",
                          "Pz-Oz")},
    **{c: "eog" for c in ("E1-M2", "E2-M1", "EOG")},
    "Chin": "emg", "ECG": "ecg", "Airflow": "flow", "NasalPressure": "flow",
    "Thorax": "effort", "Abdomen": "effort", "SpO2": "spo2",
}
# Channels with names not in the table fall back on their modality's default group.
_DEFAULT_GROUP = {"bas": "eeg", "ecg": "ecg", "resp": None}

GROUP_FEATURES = {
    "eeg": [f"rel_{b}" for b in BANDS] + ["log_power"],
    "eog": ["log_power", "sem_share"],
    "emg": ["log_var", "log_power_10hz"],
    "ecg": ["hr_bpm", "sdnn_s", "rmssd_s"],
    "flow": ["rate_bpm", "log_power", "amp_cv", "amp_min_ratio"],
    "effort": ["rate_bpm", "log_power", "amp_cv", "amp_min_ratio"],
    "spo2": ["mean", "min", "drop"],
}
GROUPS = tuple(GROUP_FEATURES)


def feature_names() -> list[str]:
  """Column names of the feature matrix, in order."""
  names = []
  for g, feats in GROUP_FEATURES.items():
    names += [f"{g}_{f}" for f in feats] + [f"{g}_present"]
  return names


def _welch(x: np.ndarray, fs: float, seconds: float, pad: int = 1
           ) -> tuple[np.ndarray, np.ndarray]:
  nper = min(x.shape[-1], max(8, int(round(seconds * fs))))
  return signal.welch(x, fs=fs, nperseg=nper, nfft=pad * nper, axis=-1, detrend="constant")


def _band(f: np.ndarray, psd: np.ndarray, lo: float, hi: float) -> np.ndarray:
  sel = (f >= lo) & (f < hi)
  df = f[1] - f[0] if len(f) > 1 else 1.0
  return psd[..., sel].sum(-1) * df


def _log(x: np.ndarray) -> np.ndarray:
  return np.log10(np.maximum(x, 1e-12))


def _eeg(x, fs):
  f, psd = _welch(x, fs, 4.0)
  total = _band(f, psd, 0.5, 30.0)
  rel = [np.divide(_band(f, psd, lo, hi), total, out=np.zeros_like(total), where=total > 0)
         for lo, hi in BANDS.values()]
  return np.stack(rel + [_log(total)], -1)


def _eog(x, fs):
  f, psd = _welch(x, fs, 4.0)
  total = _band(f, psd, 0.3, 10.0)
  sem = _band(f, psd, 0.3, 2.0)
  return np.stack([_log(total), np.divide(sem, total, out=np.zeros_like(sem), where=total > 0)],
                  -1)


def _emg(x, fs):
  var = np.var(x, axis=-1)
  if fs / 2 > 12.0:
    f, psd = _welch(x, fs, 2.0)
    high = _log(_band(f, psd, 10.0, fs / 2))
  else:
    high = np.zeros_like(var)
  return np.stack([_log(var), high], -1)


def r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
  """Sample indices of R peaks in one ECG trace (polarity-independent energy detector)."""
  hi = min(20.0, 0.45 * fs)
  if hi > 5.0:
    sos = signal.butter(2, [5.0, hi], btype="bandpass", fs=fs, output="sos")
    y = signal.sosfiltfilt(sos, x)
  else:
    y = np.diff(x, prepend=x[:1])
  energy = y * y
  thresh = 0.3 * np.percentile(energy, 99)
  if thresh <= 0:
    return np.zeros(0, np.int64)
  peaks, _ = signal.find_peaks(energy, height=thresh, distance=max(1, int(0.35 * fs)))
  return peaks


def _ecg(x, fs):
  """x: [n, C, T] -> [n, C, 4]: HR, SDNN, RMSSD and a 0/1 "plausible beats" flag."""
  out = np.zeros(x.shape[:2] + (4,))
  for i, j in np.ndindex(*x.shape[:2]):
    peaks = r_peaks(x[i, j], fs)
    if len(peaks) < 3:
      continue
    rr = np.diff(peaks) / fs
    hr = 60.0 / np.median(rr)
    if not 30.0 <= hr <= 200.0:
      continue
    out[i, j] = [hr, np.std(rr), np.sqrt(np.mean(np.diff(rr) ** 2)) if len(rr) > 1 else 0.0, 1.0]
  return out


def _resp(x, fs):
  t = x.shape[-1]
  # One Hann segment over the whole window, zero-padded 8x: rate resolution 0.25 breaths/min.
  f, psd = _welch(x, fs, t / fs, pad=8)
  sel = (f >= 0.1) & (f <= 0.7)
  if sel.any():
    rate = f[sel][np.argmax(psd[..., sel], axis=-1)] * 60.0
    power = _log(_band(f, psd, 0.1, 0.7 + 1e-9))
  else:
    rate = power = np.zeros(x.shape[:-1])
  seg = max(1, int(round(5.0 * fs)))
  n_seg = max(1, t // seg)
  parts = x[..., : n_seg * seg].reshape(x.shape[:-1] + (n_seg, seg))
  amp = np.percentile(parts, 95, axis=-1) - np.percentile(parts, 5, axis=-1)
  mean, med = amp.mean(-1), np.median(amp, axis=-1)
  cv = np.divide(amp.std(-1), mean, out=np.zeros_like(mean), where=mean > 0)
  ratio = np.divide(amp.min(-1), med, out=np.zeros_like(med), where=med > 0)
  return np.stack([rate, power, cv, ratio], -1)


def _spo2(x, fs):
  del fs
  return np.stack([x.mean(-1), x.min(-1), x.max(-1) - x.min(-1)], -1)


_EXTRACT = {"eeg": _eeg, "eog": _eog, "emg": _emg, "ecg": _ecg, "flow": _resp, "effort": _resp,
            "spo2": _spo2}


def _channel_names(channels: Any, modality: str) -> Sequence[str]:
  if hasattr(channels, "channels"):  # a Montage
    return channels.channels(modality)
  return channels.get(modality, ())


def spectral_features(batch: Mapping[str, np.ndarray], channels: Any, sample_rate: float
                      ) -> np.ndarray:
  """Feature matrix [n, len(feature_names())] for a batch of windows.

  Args:
    batch: `{"bas": [n, C, T], "ecg": ..., "resp": ...}` (missing modalities allowed) plus optional
      `"mask_<modality>": [n, C]` bool (False = channel missing or bad in that window).
    channels: modality -> channel names (a dict or a `Montage`), in the arrays' channel order.
    sample_rate: sampling rate in Hz.
  """
  fs = sample_rate  # the DSP helpers' symbol
  n = next(len(batch[m]) for m in MODALITIES if m in batch)
  members: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {g: [] for g in GROUPS}
  for mod in MODALITIES:
    if mod not in batch:
      continue
    x = np.asarray(batch[mod], np.float64)
    names = list(_channel_names(channels, mod))
    if x.ndim != 3 or x.shape[1] != len(names):
      raise ValueError(f"'{mod}' windows have shape {x.shape}; expected [n, {len(names)}, T] "
                       f"for channels {names}")
    mask = np.asarray(batch.get(f"mask_{mod}", np.ones(x.shape[:2], bool)), bool)
    finite = np.isfinite(x).all(-1)
    # Missing channels are zero-filled in the store; a constant non-zero trace (SpO2) is data.
    ok = mask & finite & (np.abs(np.where(np.isfinite(x), x, 0.0)).max(-1) > 0)
    for c, name in enumerate(names):
      group = CHANNEL_GROUPS.get(name, _DEFAULT_GROUP[mod])
      if group is not None:
        members[group].append((np.where(ok[:, c, None], x[:, c], 0.0), ok[:, c]))
  cols = []
  for g, feats in GROUP_FEATURES.items():
    if not members[g]:
      cols.append(np.zeros((n, len(feats) + 1)))
      continue
    xs = np.stack([m[0] for m in members[g]], 1)
    oks = np.stack([m[1] for m in members[g]], 1).astype(np.float64)
    per_channel = _EXTRACT[g](xs, fs)  # [n, C, F]
    if g == "ecg":  # a channel without plausible beats does not count as present
      oks = oks * per_channel[..., -1]
      per_channel = per_channel[..., :-1]
    count = oks.sum(1)
    mean = np.einsum("nc,ncf->nf", oks, per_channel)
    mean = np.divide(mean, count[:, None], out=np.zeros_like(mean), where=count[:, None] > 0)
    cols.append(np.concatenate([mean, (count > 0)[:, None].astype(np.float64)], 1))
  out = np.concatenate(cols, 1)
  return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def extract_features(batches: Iterable[Mapping[str, np.ndarray]], channels: Any,
                     sample_rate: float, progress: bool = True, total: int | None = None
                     ) -> np.ndarray:
  """`spectral_features` over an iterable of batches, concatenated (with a tqdm bar)."""
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    batches = tqdm(batches, total=total, desc="spectral features")
  parts = [spectral_features(b, channels, sample_rate) for b in batches]
  return np.concatenate(parts) if parts else np.zeros((0, len(feature_names())), np.float32)
