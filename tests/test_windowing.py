"""Epoch-aligned windows and the per-window channel quality mask."""

import numpy as np
import pytest

from sleepfm_jax.data import windowing


def test_alignment_with_nonzero_epoch_onset():
  fs = 4
  x = np.arange(int(fs * 200), dtype=float)  # sample value == sample index
  w, k = windowing.window_signal(x, fs, segment_start=0.0, epoch_onset=17.5, n_epochs=100)
  # Epoch k starts at 17.5 + 30 k s; complete epochs end by 200 s: k = 0..5 (last ends at 197.5).
  np.testing.assert_array_equal(k, np.arange(6))
  assert w.shape == (6, 120)
  np.testing.assert_array_equal(w[:, 0], (17.5 + 30 * k) * fs)
  assert np.shares_memory(w, x)  # a view, no copy
  # n_epochs limits the windows to annotated epochs.
  _, k2 = windowing.window_signal(x, fs, 0.0, 17.5, n_epochs=3)
  np.testing.assert_array_equal(k2, [0, 1, 2])


def test_epochs_before_the_segment_are_skipped_and_onset_noise_is_tolerated():
  fs = 256
  x = np.zeros(fs * 300)
  # Segment starts at 100 s; epochs start at 10 + 30 k: the first inside is k=3 (100 s).
  _, k = windowing.window_signal(x, fs, segment_start=100.0, epoch_onset=10.0, n_epochs=1000)
  np.testing.assert_array_equal(k, np.arange(3, 13))
  # Float noise in the onset must not lose the first or last complete window.
  _, k = windowing.window_signal(x, fs, 0.0, 1e-12, n_epochs=1000)
  assert k[0] == 0 and k[-1] == 9
  _, k = windowing.window_signal(x, fs, 0.0, -1e-12, n_epochs=1000)
  assert k[0] == 0 and k[-1] == 9


def test_edf_plus_d_segments_never_straddle_a_gap():
  # Two segments: [0, 95) s and [130, 250) s; epochs every 30 s from 0.
  fs = 2
  seg_a = np.ones(95 * fs)
  seg_b = 2 * np.ones(120 * fs)
  wa, ka = windowing.window_signal(seg_a, fs, 0.0, 0.0, n_epochs=10)
  wb, kb = windowing.window_signal(seg_b, fs, 130.0, 0.0, n_epochs=10)
  np.testing.assert_array_equal(ka, [0, 1, 2])  # epoch 3 = [90, 120) crosses the gap
  np.testing.assert_array_equal(kb, [5, 6, 7])  # epoch 4 = [120, 150) starts in the gap
  assert np.all(wa == 1) and np.all(wb == 2)
  lo, hi = windowing.raw_window_bounds(seg_b.size, fs, 130.0, 0.0, kb)
  np.testing.assert_array_equal(lo, [40, 100, 160])
  np.testing.assert_array_equal(hi - lo, [60, 60, 60])


def test_non_integer_window_is_rejected():
  with pytest.raises(ValueError, match="whole number"):
    windowing.window_signal(np.zeros(100), 0.35, 0.0, 0.0, 3)


def test_quality_masks_nan_flat_and_clipped_windows():
  rng = np.random.default_rng(0)
  w = rng.standard_normal((8, 300))
  w[1, 5] = np.nan
  w[2, :] = np.inf
  w[3, :] = 4.2  # flat (disconnected lead)
  w[4] += 1e-9 * 0  # good
  w[5] = np.clip(3 * w[5], -1.0, 1.0)  # heavily clipped at the rails
  rails = (-1.0, 1.0)
  good, why = windowing.channel_quality(w, rails=rails, return_reasons=True)
  np.testing.assert_array_equal(good, [True, False, False, False, True, False, True, True])
  np.testing.assert_array_equal(np.flatnonzero(why["nonfinite"]), [1, 2])
  np.testing.assert_array_equal(np.flatnonzero(why["flat"]), [3])
  np.testing.assert_array_equal(np.flatnonzero(why["clipped"]), [5])
  # Without rails, the extremes of the data are the rails; SpO2-like traces can opt out.
  w2 = np.full((3, 30), 97.0)
  w2[0, ::3] = 96.0
  good2 = windowing.channel_quality(w2, check_flat=False, check_clip=False)
  assert good2.all()
  assert not windowing.channel_quality(w2)[1:].any()
