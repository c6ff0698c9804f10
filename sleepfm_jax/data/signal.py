"""Signal conditioning: exact rational resampling, zero-phase filters, robust normalisation.

Everything here works on one channel (a 1-D array) at a time so that preprocessing an 8-hour night
keeps memory bounded. numpy/scipy only.
"""

from __future__ import annotations

import fractions
import math

import numpy as np
from scipy import fft as sp_fft
from scipy import signal as sps

# resample_poly's default filter: a Kaiser-windowed sinc with half-length 10 * max(up, down) samples
# at the upsampled rate. Its support in input samples bounds how much context a chunk needs.
_HALF_LEN_FACTOR = 10

# The normalised standard deviation of a Gaussian is IQR / 1.349.
IQR_TO_SIGMA = 1.349


def rational_ratio(fs_in: float, fs_out: float, max_denominator: int = 100_000) -> tuple[int, int]:
  """Returns the reduced integers (up, down) with up / down == fs_out / fs_in.

  EDF sampling rates are ratios (samples per record / record duration) and often arrive as floats
  such as 256.00000000000003; the ratio is recovered exactly with a bounded denominator.

  Raises:
    ValueError: if a rate is not positive or the ratio has no small exact rational form.
  """
  if not (fs_in > 0 and fs_out > 0 and math.isfinite(fs_in) and math.isfinite(fs_out)):
    raise ValueError(f"sampling rates must be positive and finite, got {fs_in} -> {fs_out}")
  ratio = fractions.Fraction(fs_out / fs_in).limit_denominator(max_denominator)
  if abs(float(ratio) - fs_out / fs_in) > 1e-9 * (fs_out / fs_in):
    raise ValueError(f"no exact rational resampling ratio for {fs_in} Hz -> {fs_out} Hz")
  return ratio.numerator, ratio.denominator


def resampled_length(n_in: int, up: int, down: int) -> int:
  """Number of output samples of `resample` for `n_in` input samples (ceil(n_in * up / down))."""
  return -(-n_in * up // down)


def resample(
    x: np.ndarray,
    fs_in: float,
    fs_out: float,
    *,
    out_dtype=np.float32,
    chunk_out: int = 1 << 22,
) -> np.ndarray:
  """Resamples one channel with a polyphase FIR filter (`scipy.signal.resample_poly`).

  The ratio fs_out / fs_in is made an exact fraction up / down (1 -> 256 Hz is 256 / 1, 100 -> 256
  is 64 / 25, 250 -> 256 is 128 / 125). Output sample j sits at time j / fs_out, like input sample i at
  i / fs_in, and there are exactly ceil(len(x) * up / down) of them.

  Long signals are processed in chunks of about `chunk_out` output samples. Every chunk is fed with
  enough input context on both sides that its output equals the unchunked result (up to float
  rounding), so memory stays bounded: the working set is one chunk, and the result is written into a
  preallocated `out_dtype` array. Arithmetic is float32 for float32/float16 results (twice as fast),
  float64 otherwise. The signal is extended beyond its ends with its edge value
  (`padtype="edge"`), so a DC offset does not ring at the boundaries.

  Args:
    x: 1-D signal (finite values; replace NaN first, a NaN spreads over the filter support).
    fs_in: input sampling rate in Hz.
    fs_out: output sampling rate in Hz.
    out_dtype: dtype of the result.
    chunk_out: approximate output samples per chunk.

  Returns:
    The resampled signal, 1-D, `out_dtype`.
  """
  x = np.asarray(x)
  if x.ndim != 1:
    raise ValueError(f"resample expects a 1-D signal, got shape {x.shape}")
  up, down = rational_ratio(fs_in, fs_out)
  if up == down:
    return x.astype(out_dtype, copy=True)
  n_in = x.shape[0]
  n_out = resampled_length(n_in, up, down)
  out = np.empty(n_out, dtype=out_dtype)
  if n_in == 0:
    return out
  # Input context per side, in input samples, rounded up to a multiple of `down` so that every chunk
  # start maps to an integer output index.
  support = _HALF_LEN_FACTOR * max(up, down) / up + 2
  pad = int(math.ceil(support / down)) * down
  step = max(down, (chunk_out * down // up) // down * down)  # input samples per chunk
  work = np.float64 if np.dtype(out_dtype).itemsize > 4 else np.float32
  for s in range(0, n_in, step):
    e = min(n_in, s + step)
    lo, hi = max(0, s - pad), min(n_in, e + pad)
    y = sps.resample_poly(x[lo:hi].astype(work, copy=False), up, down, padtype="edge")
    first = (s - lo) * up // down  # s and lo are multiples of `down`
    o_s, o_e = s * up // down, resampled_length(e, up, down)
    out[o_s:o_e] = y[first : first + (o_e - o_s)]
  return out


def resample_fft(x: np.ndarray, fs_in: float, fs_out: float, *, out_dtype=np.float32) -> np.ndarray:
  """Resamples one channel in the frequency domain, over its whole length at once.

  This is MNE's `Raw.resample` with its defaults (method "fft", `npad="auto"`, boxcar window,
  `pad="reflect_limited"`), which the original SleepFM applied to each whole recording: the signal
  is extended on both sides by its odd reflection about its end samples (zeros beyond one signal
  length) up to the next power of two that adds at least 2 * min(n // 8, 100) samples, its real
  FFT is cut (downsampling) or zero-padded (upsampling) to the new length, with the Nyquist bin of
  an even length doubled or halved for the folded or split conjugate pair, and the extension is
  trimmed off. Output sample j sits at time j / fs_out; there are round(n * fs_out / fs_in).

  Unlike `resample`, the ideal (brick-wall) low-pass keeps everything up to the lower Nyquist
  frequency, and the whole segment is transformed at once (memory ~ 40 bytes per input sample).
  The ratio need not be rational.
  """
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 1:
    raise ValueError(f"resample_fft expects a 1-D signal, got shape {x.shape}")
  if not (fs_in > 0 and fs_out > 0 and math.isfinite(fs_in) and math.isfinite(fs_out)):
    raise ValueError(f"sampling rates must be positive and finite, got {fs_in} -> {fs_out}")
  n = x.size
  ratio = fs_out / fs_in
  n_out = max(int(round(ratio * n)), 1)
  if n == 0:
    return np.zeros(0, out_dtype)
  if fs_in == fs_out:
    return x.astype(out_dtype)
  extra = 2 ** int(math.ceil(math.log2(n + 2 * min(n // 8, 100)))) - n
  left, right = extra // 2, extra - extra // 2
  padded = np.concatenate([_odd_reflection(x, left, at_start=True), x,
                           _odd_reflection(x, right, at_start=False)])
  m = padded.size
  m_out = max(int(round(ratio * m)), 1)
  spec = sp_fft.rfft(padded)
  del padded
  shorter = m_out < m
  use = m_out if shorter else m
  if use % 2 == 0:
    spec[use // 2] *= 2.0 if shorter else 0.5
  spec *= m_out / m
  y = sp_fft.irfft(spec, m_out)
  first = int(round(ratio * left))
  return y[first:first + n_out].astype(out_dtype)


def _odd_reflection(x: np.ndarray, k: int, at_start: bool) -> np.ndarray:
  """k samples extending x past one end: 2 x_end - (x mirrored about that end), then zeros when
  k reaches past the other end."""
  take = min(k, x.size - 1)
  if at_start:
    part = 2.0 * x[0] - x[1:take + 1][::-1]
    return np.concatenate([np.zeros(k - take), part])
  part = 2.0 * x[-1] - x[-take - 1:-1][::-1]
  return np.concatenate([part, np.zeros(k - take)])


def bandpass(
    x: np.ndarray, fs: float, lo: float | None, hi: float | None, order: int = 4
) -> np.ndarray:
  """Zero-phase Butterworth band-pass (or high-pass if `hi` is None, low-pass if `lo` is None).

  Second-order sections applied forwards and backwards (`sosfiltfilt`): no phase shift, so windows
  stay aligned with the annotations. The effective order is twice `order`.

  Raises:
    ValueError: if the corner frequencies do not fit below the Nyquist frequency.
  """
  nyq = fs / 2.0
  if lo is None and hi is None:
    return np.asarray(x, dtype=np.float64)
  if lo is not None and not 0 < lo < nyq:
    raise ValueError(f"band-pass low corner {lo} Hz must be in (0, {nyq}) Hz for fs={fs}")
  if hi is not None and not 0 < hi < nyq:
    raise ValueError(f"band-pass high corner {hi} Hz must be in (0, {nyq}) Hz for fs={fs}")
  if lo is not None and hi is not None:
    if lo >= hi:
      raise ValueError(f"band-pass corners must satisfy lo < hi, got {lo} >= {hi}")
    sos = sps.butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")
  elif lo is not None:
    sos = sps.butter(order, lo, btype="highpass", fs=fs, output="sos")
  else:
    sos = sps.butter(order, hi, btype="lowpass", fs=fs, output="sos")
  return sps.sosfiltfilt(sos, np.asarray(x, dtype=np.float64))


def notch(x: np.ndarray, fs: float, f0: float, quality: float = 30.0) -> np.ndarray:
  """Zero-phase IIR notch at `f0` Hz (e.g. mains 50 or 60 Hz), bandwidth f0 / quality.

  Raises:
    ValueError: if `f0` is not below the Nyquist frequency.
  """
  if not 0 < f0 < fs / 2.0:
    raise ValueError(f"notch frequency {f0} Hz must be in (0, {fs / 2.0}) Hz for fs={fs}")
  b, a = sps.iirnotch(f0, quality, fs=fs)
  return sps.sosfiltfilt(sps.tf2sos(b, a), np.asarray(x, dtype=np.float64))


def robust_stats(
    x: np.ndarray, valid: np.ndarray | None = None, floor: float = 1e-12,
    max_samples: int | None = 1_000_000, seed: int = 0,
) -> dict:
  """Median and robust scale (IQR / 1.349) of the finite (and `valid`) samples of `x`.

  For a channel whose IQR is (near) zero, e.g. a mostly constant trace, the standard deviation is
  used; a truly flat (or empty) channel gets scale 1 and "flat" True.

  On long channels the quantiles are estimated from `max_samples` samples in fixed-seed random
  blocks of 256 consecutive samples spread over the whole recording (deterministic; quantile errors
  well under 1 % of the scale), instead of sorting every sample of an 8-hour 512-Hz channel.

  Args:
    x: 1-D signal.
    valid: optional bool mask of the samples to use (e.g. those in windows of good quality). If it
      selects no finite sample, all finite samples are used.
    floor: scales at or below `floor * max(1, |median|)` count as zero.
    max_samples: subsample size (None: use every sample).
    seed: subsample seed.

  Returns:
    {"median", "scale", "iqr", "flat", "valid_fraction"}; valid_fraction is the fraction of samples
    in `valid` (or finite, without `valid`).
  """
  x = np.asarray(x)
  if x.ndim != 1:
    raise ValueError(f"robust_stats expects a 1-D signal, got shape {x.shape}")
  if valid is not None:
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != x.shape:
      raise ValueError(f"valid mask shape {valid.shape} != signal shape {x.shape}")
  v = None
  block = 256
  if max_samples is not None and x.size > 2 * max_samples:
    # Random blocks of `block` consecutive samples: as representative as single samples for the
    # marginal quantiles, and cache-friendly to gather.
    starts = np.random.default_rng(seed).integers(0, x.size - block, max_samples // block)
    idx = (starts[:, None] + np.arange(block)).ravel()
    xs = x[idx]
    sel = np.isfinite(xs)
    if valid is not None and np.any(sel & valid[idx]):
      sel &= valid[idx]
    if np.count_nonzero(sel) >= max_samples // 4:  # else too sparse: use the exact path
      v = xs[sel]
  if v is None:
    sel = np.isfinite(x)
    if valid is not None and np.any(sel & valid):
      sel &= valid
    v = x[sel]
  usable = np.count_nonzero(valid) if valid is not None else np.count_nonzero(np.isfinite(x))
  v = v.astype(np.float64)  # a private copy: percentile may reorder it
  stats = {"median": 0.0, "scale": 1.0, "iqr": 0.0, "flat": True,
           "valid_fraction": float(usable / max(1, x.size))}
  if v.size:
    q25, med, q75 = np.percentile(v, [25.0, 50.0, 75.0], overwrite_input=True)
    iqr = float(q75 - q25)
    tiny = floor * max(1.0, abs(float(med)))
    scale = iqr / IQR_TO_SIGMA
    if scale <= tiny:
      scale = float(np.std(v))
    flat = scale <= tiny
    stats.update(median=float(med), iqr=iqr, scale=1.0 if flat else float(scale), flat=bool(flat))
  return stats


def robust_normalise(
    x: np.ndarray, valid: np.ndarray | None = None, floor: float = 1e-12
) -> tuple[np.ndarray, dict]:
  """Returns ((x - median) / (IQR / 1.349), stats), statistics taken on valid samples only.

  Robust to artefacts: a few huge spikes change neither the median nor the interquartile range. See
  `robust_stats` for the floor on flat channels (they become all zeros).

  Returns:
    (y, stats): y in x's float dtype (float64 for integer input); stats from `robust_stats`.
  """
  x = np.asarray(x)
  y_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
  stats = robust_stats(x, valid, floor)
  y = (x - stats["median"]) / stats["scale"]
  return y.astype(y_dtype, copy=False), stats
