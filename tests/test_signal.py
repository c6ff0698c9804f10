"""Resampling, filters and robust normalisation on synthetic signals with known answers."""

import tracemalloc

import numpy as np
import pytest
from scipy import signal as sps

from sleepfm_jax.data import signal


def _dominant(y, fs):
  spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
  return np.fft.rfftfreq(y.size, 1 / fs)[np.argmax(spec)]


@pytest.mark.parametrize("fs_in, f0", [(100, 7.0), (512, 11.0), (250, 13.0), (200, 3.5),
                                       (1, 0.05), (128, 9.0)])
def test_sine_keeps_frequency_and_amplitude(fs_in, f0):
  n = int(600 * fs_in)
  t = np.arange(n) / fs_in
  x = 2.5 * np.sin(2 * np.pi * f0 * t) + 0.7
  y = signal.resample(x, fs_in, 256)
  up, down = signal.rational_ratio(fs_in, 256)
  assert y.shape == (-(-n * up // down),) and y.dtype == np.float32
  ty = np.arange(y.size) / 256
  want = 2.5 * np.sin(2 * np.pi * f0 * ty) + 0.7
  core = slice(y.size // 10, -y.size // 10)  # away from the boundaries
  np.testing.assert_allclose(y[core], want[core], atol=2e-3 * 2.5)
  assert abs(_dominant(y - y.mean(), 256) - f0) < 256 / y.size * 1.01
  # Edge extension: a DC offset does not ring at the boundaries (a zero pad would).
  dc = signal.resample(np.full(n, 0.7), fs_in, 256)
  np.testing.assert_allclose(dc, 0.7, atol=2e-3)


def test_rational_ratios_are_exact():
  assert signal.rational_ratio(1, 256) == (256, 1)
  assert signal.rational_ratio(100, 256) == (64, 25)
  assert signal.rational_ratio(512, 256) == (1, 2)
  assert signal.rational_ratio(250, 256) == (128, 125)
  assert signal.rational_ratio(200, 256) == (32, 25)
  assert signal.rational_ratio(256.00000000000003, 256) == (1, 1)
  with pytest.raises(ValueError):
    signal.rational_ratio(0, 256)


def test_one_hz_to_256_length_is_exact_for_a_whole_night():
  x = np.random.default_rng(0).standard_normal(79_500)  # Sleep-EDF: 22.08 h at 1 Hz
  y = signal.resample(x, 1, 256)
  assert y.shape == (79_500 * 256,)


@pytest.mark.parametrize("fs_in", [1, 100, 250, 512])
def test_chunked_equals_unchunked(fs_in):
  x = np.random.default_rng(1).standard_normal(int(fs_in * 700) + 3)
  up, down = signal.rational_ratio(fs_in, 256)
  ref = sps.resample_poly(x, up, down, padtype="edge")
  y = signal.resample(x, fs_in, 256, out_dtype=np.float64, chunk_out=20_000)
  np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)


def test_memory_is_bounded_by_the_output():
  # 2 h at 512 Hz → 256 Hz: output 7.4 MB (float32); the float64 working set is one chunk.
  x = np.random.default_rng(2).standard_normal(512 * 7200)
  tracemalloc.start()
  y = signal.resample(x, 512, 256, chunk_out=1 << 18)
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert y.nbytes == 256 * 7200 * 4
  assert peak < y.nbytes + 16 * (1 << 18) * 8, peak  # output + a few chunk-sized temporaries


def test_bandpass_and_notch_are_zero_phase():
  fs = 256
  t = np.arange(fs * 60) / fs
  x = np.sin(2 * np.pi * 10 * t) + np.sin(2 * np.pi * 50 * t) + np.sin(2 * np.pi * 0.05 * t)
  y = signal.notch(signal.bandpass(x, fs, 0.3, 35.0), fs, 50.0)
  core = slice(fs * 10, -fs * 10)
  np.testing.assert_allclose(y[core], np.sin(2 * np.pi * 10 * t)[core], atol=0.02)
  with pytest.raises(ValueError, match="Nyquist|must be in"):
    signal.notch(x, 100, 50.0)
  with pytest.raises(ValueError):
    signal.bandpass(x, 100, 0.3, 60.0)
  hp = signal.bandpass(x, fs, 1.0, None)
  assert abs(hp[core].mean()) < 0.01


def test_robust_normalise_uses_valid_samples_and_floors_flat():
  rng = np.random.default_rng(3)
  x = 3.0 + 2.0 * rng.standard_normal(200_000)
  x[:1000] = 1e6  # artefact
  valid = np.ones_like(x, bool)
  valid[:1000] = False
  y, st = signal.robust_normalise(x, valid)
  assert st["median"] == pytest.approx(3.0, abs=0.03)
  assert st["scale"] == pytest.approx(2.0, rel=0.02)
  assert np.median(y[1000:]) == pytest.approx(0, abs=0.02)
  assert not st["flat"] and st["valid_fraction"] == pytest.approx(0.995)
  flat = np.full(1000, 7.0)
  yf, sf = signal.robust_normalise(flat)
  assert sf["flat"] and sf["scale"] == 1.0 and np.all(yf == 0)
  nan = np.full(10, np.nan)
  yn, sn = signal.robust_normalise(nan)
  assert sn["flat"] and np.all(np.isnan(yn))
  # Mostly constant with a few excursions: IQR is 0, the standard deviation is used.
  z = np.zeros(1000)
  z[::50] = 1.0
  _, sz = signal.robust_normalise(z)
  assert not sz["flat"] and sz["scale"] == pytest.approx(np.std(z))
