"""30-s windows aligned to annotation epochs, and a per-window channel quality mask.

Epoch k of a recording covers [epoch_onset + 30 k, epoch_onset + 30 (k + 1)) seconds from the
recording start. A window is cut for epoch k only if that interval lies completely inside one
contiguous signal segment (an EDF+D file has several, separated by gaps): windows never straddle a
gap or run past the end of the signal. numpy only.
"""

from __future__ import annotations

import warnings

import numpy as np

# Window start times are rounded to the nearest sample; starts closer than this (in samples) to an
# integer are treated as exact, so float noise in onsets never drops a complete window.
_SAMPLE_TOL = 1e-6


def epoch_range(
    n_samples: int, fs: float, segment_start: float, epoch_onset: float, n_epochs: int,
    window_s: float = 30.0,
) -> tuple[int, int, int, int]:
  """Returns (k_lo, k_hi, first_sample, samples_per_window) for a segment.

  Epochs k_lo <= k < k_hi are the complete windows of the segment, and epoch k starts at sample
  first_sample + (k - k_lo) * samples_per_window of the segment's array. Empty when k_hi <= k_lo.

  Raises:
    ValueError: if window_s * fs is not an integer number of samples.
  """
  t = window_s * fs
  samples = int(round(t))
  if samples <= 0 or abs(t - samples) > 1e-6 * max(1.0, t):
    raise ValueError(f"a {window_s}-s window at {fs} Hz is not a whole number of samples")
  # Start sample of epoch k (before rounding): (epoch_onset - segment_start) * fs + k * samples.
  offset = (epoch_onset - segment_start) * fs
  start0 = int(np.floor(offset + 0.5 + _SAMPLE_TOL))  # round half up, tolerant to float noise
  k_lo = max(0, -(start0 // samples))  # first k with start0 + k * samples >= 0
  # Windows must end by the last sample: start0 + (k + 1) * samples <= n_samples.
  k_hi = min(n_epochs, (n_samples - start0) // samples)
  return k_lo, max(k_lo, k_hi), start0 + k_lo * samples, samples


def window_signal(
    x: np.ndarray, fs: float, segment_start: float, epoch_onset: float, n_epochs: int,
    window_s: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
  """Cuts the complete epoch-aligned windows of one channel of one segment.

  Args:
    x: 1-D samples of the segment (sample 0 at `segment_start` seconds from recording start).
    fs: sampling rate of `x` in Hz.
    segment_start: seconds from the recording start of the segment's first sample.
    epoch_onset: seconds from the recording start of epoch 0.
    n_epochs: number of annotated epochs; windows are only cut for epochs 0..n_epochs-1.
    window_s: window length in seconds (the epoch length).

  Returns:
    (windows [k, T], epoch_idx [k] int64): a zero-copy view of `x` (the epochs inside one segment
    are consecutive, so the windows are a reshape), and the epoch number of each window.
  """
  x = np.asarray(x)
  if x.ndim != 1:
    raise ValueError(f"window_signal expects a 1-D signal, got shape {x.shape}")
  k_lo, k_hi, first, samples = epoch_range(
      x.shape[0], fs, segment_start, epoch_onset, n_epochs, window_s)
  n = k_hi - k_lo
  windows = x[first : first + n * samples].reshape(n, samples)
  return windows, np.arange(k_lo, k_hi, dtype=np.int64)


def raw_window_bounds(
    n_samples: int, fs: float, segment_start: float, epoch_onset: float, epochs: np.ndarray,
    window_s: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
  """Sample ranges [lo, hi) of `epochs` in a segment's array at any rate (rounded, clipped).

  Used to judge quality on the original-rate signal, whose rate need not give whole-sample windows.
  """
  t0 = (epoch_onset + window_s * np.asarray(epochs, dtype=np.float64) - segment_start) * fs
  lo = np.clip(np.floor(t0 + 0.5 + _SAMPLE_TOL), 0, n_samples).astype(np.int64)
  hi = np.clip(np.floor(t0 + window_s * fs + 0.5 + _SAMPLE_TOL), 0, n_samples).astype(np.int64)
  return lo, np.maximum(lo, hi)


def finite_range(x: np.ndarray) -> tuple[float, float] | None:
  """(min, max) of the finite samples of `x`, or None if there are none (no copy if all finite)."""
  x = np.asarray(x)
  if x.size == 0:
    return None
  lo, hi = float(np.min(x)), float(np.max(x))
  if np.isfinite(lo) and np.isfinite(hi):
    return lo, hi
  fin = x[np.isfinite(x)]
  return (float(fin.min()), float(fin.max())) if fin.size else None


def window_stats(windows: np.ndarray, rails: tuple[float, float] | None) -> dict[str, np.ndarray]:
  """Per-window statistics the quality decision needs, for one block of windows of one channel.

  Returns:
    {"nonfinite": [k] bool, "ptp": [k] float64 (NaN-ignoring peak-to-peak; inf if an inf is
    present), "rail_fraction": [k] float64 (fraction of samples at or beyond a rail; 0 without
    rails)}.
  """
  w = np.asarray(windows)
  if w.ndim != 2:
    raise ValueError(f"expected [windows, samples], got shape {w.shape}")
  k, t = w.shape
  if t == 0:
    zeros = np.zeros(k)
    return {"nonfinite": np.zeros(k, bool), "ptp": zeros, "rail_fraction": zeros}
  nonfinite = ~np.isfinite(w).all(axis=1)
  with warnings.catch_warnings():  # all-NaN windows are flagged as non-finite already
    warnings.simplefilter("ignore", RuntimeWarning)
    ptp = np.fmax.reduce(w, axis=1) - np.fmin.reduce(w, axis=1)
  rail_fraction = np.zeros(k)
  if rails is not None and rails[1] > rails[0]:
    rail_fraction = np.count_nonzero((w <= rails[0]) | (w >= rails[1]), axis=1) / t
  return {"nonfinite": nonfinite, "ptp": ptp, "rail_fraction": rail_fraction}


def quality_from_stats(
    stats: dict[str, np.ndarray],
    *,
    flat_tol: float = 1e-6,
    clip_fraction: float = 0.5,
    check_flat: bool = True,
    check_clip: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Turns `window_stats` (of all windows of a channel) into (good [k], reasons); see
  `channel_quality`. Each masked window has exactly one reason (non-finite > flat > clipped)."""
  nonfinite = stats["nonfinite"]
  ptp = stats["ptp"]
  flat = np.zeros_like(nonfinite)
  clipped = np.zeros_like(nonfinite)
  if check_flat:
    ok = ~nonfinite & np.isfinite(ptp)
    typical = float(np.median(ptp[ok])) if ok.any() else 0.0
    typical = typical if typical > 0 else 1.0
    flat = ~nonfinite & (ptp <= flat_tol * typical)
  if check_clip:
    clipped = ~nonfinite & ~flat & (stats["rail_fraction"] > clip_fraction)
  good = ~(nonfinite | flat | clipped)
  return good, {"nonfinite": nonfinite, "flat": flat, "clipped": clipped}


def channel_quality(
    windows: np.ndarray,
    *,
    rails: tuple[float, float] | None = None,
    flat_tol: float = 1e-6,
    clip_fraction: float = 0.5,
    check_flat: bool = True,
    check_clip: bool = True,
    return_reasons: bool = False,
):
  """Per-window quality of one channel: False if the window has NaN/inf, is flat or is clipped.

  * non-finite: any NaN or +-inf sample.
  * flat: peak-to-peak amplitude <= flat_tol * the channel's typical amplitude (the median of the
    windows' peak-to-peak amplitudes, or 1 if that is zero): a disconnected or dead lead.
  * clipped: more than `clip_fraction` of the samples sit on a rail, i.e. at or beyond the channel's
    saturation values (`rails`, default: the extremes of the finite samples of all `windows`).

  Judge quality on the original-rate signal: resampling turns plateaus into ripples.

  Args:
    windows: [k, T] samples of one channel.
    rails: the channel's (min, max) saturation values, if known.
    flat_tol: relative flatness tolerance.
    clip_fraction: fraction of samples on a rail above which a window counts as clipped.
    check_flat: whether to test flatness (off for traces that are legitimately constant, e.g. SpO2).
    check_clip: whether to test clipping (off for bounded traces such as SpO2, which sits at 100 %).
    return_reasons: also return the per-reason masks.

  Returns:
    good [k] bool, or (good, {"nonfinite": [k], "flat": [k], "clipped": [k]}) with return_reasons.
  """
  if rails is None and check_clip:
    rails = finite_range(windows)
  stats = window_stats(windows, rails)
  good, reasons = quality_from_stats(stats, flat_tol=flat_tol, clip_fraction=clip_fraction,
                                     check_flat=check_flat, check_clip=check_clip)
  return (good, reasons) if return_reasons else good
