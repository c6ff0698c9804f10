"""Spectral-feature baseline: known signals give known features; real Sleep-EDF night stages."""

import numpy as np
import pytest

from sleepfm_jax.evaluation.features import (extract_features, feature_names, r_peaks,
                                             spectral_features)
from sleepfm_jax.evaluation.metrics import classification_metrics
from sleepfm_jax.evaluation.probes import ProbeConfig, run_probe

FS = 128.0
T = int(30 * FS)
t = np.arange(T) / FS


def _col(x, name):
  return x[:, feature_names().index(name)]


def _ecg(hr, rng):
  x = np.zeros(T)
  beats = np.arange(0.3, 30, 60.0 / hr)
  beats = beats + rng.normal(0, 0.01, len(beats))
  for b in beats:
    x -= np.exp(-(((t - b) / 0.012) ** 2))  # inverted polarity on purpose
  return x + 0.02 * rng.normal(size=T)


def test_known_signals_give_known_features():
  rng = np.random.default_rng(0)
  n = 4
  eeg = np.stack([40 * np.sin(2 * np.pi * f * t) for f in (2.0, 6.0, 10.0, 20.0)])
  eeg = eeg + rng.normal(size=(n, T))
  ecg = np.stack([_ecg(hr, rng) for hr in (48, 60, 75, 110)])
  breathing = np.sin(2 * np.pi * 0.25 * t)
  flow = np.stack([breathing, breathing, 0.1 * breathing, breathing])
  flow[3, : T // 2] *= 0.05  # an apnea in the first half of window 3
  spo2 = np.full((n, T), 96.0)
  spo2[1, T // 2:] = 89.0
  batch = {"bas": np.stack([eeg, np.zeros((n, T))], 1), "ecg": ecg[:, None],
           "resp": np.stack([flow, spo2], 1), "mask_bas": np.array([[True, False]] * n)}
  x = spectral_features(batch, {"bas": ["C4-M1", "Chin"], "ecg": ["ECG"],
                                "resp": ["Airflow", "SpO2"]}, FS)
  assert x.shape == (n, len(feature_names())) and np.isfinite(x).all()
  for i, band in enumerate(("delta", "theta", "alpha", "beta")):
    assert _col(x, f"eeg_rel_{band}")[i] > 0.9
  np.testing.assert_allclose(_col(x, "ecg_hr_bpm"), [48, 60, 75, 110], rtol=0.03)
  assert (_col(x, "ecg_present") == 1).all()
  np.testing.assert_allclose(_col(x, "flow_rate_bpm"), 15.0, atol=0.5)
  assert _col(x, "flow_amp_min_ratio")[3] < 0.2 < _col(x, "flow_amp_min_ratio")[0]
  assert _col(x, "flow_amp_cv")[3] > 0.5 > _col(x, "flow_amp_cv")[0]
  np.testing.assert_allclose(_col(x, "spo2_min"), [96, 89, 96, 96])
  np.testing.assert_allclose(_col(x, "spo2_drop"), [0, 7, 0, 0])
  # Absent groups: zeros and indicator 0 (chin masked out, no EOG, no effort belts).
  for g in ("emg", "eog", "effort"):
    cols = [i for i, nm in enumerate(feature_names()) if nm.startswith(g + "_")]
    assert (x[:, cols] == 0).all()


def test_missing_and_broken_channels_are_nan_free():
  rng = np.random.default_rng(1)
  bas = rng.normal(size=(3, 2, T))
  bas[0, 0, 100] = np.nan
  bas[1] = np.inf
  x = spectral_features({"bas": bas}, {"bas": ["C3-M2", "E1-M2"]}, FS)
  assert np.isfinite(x).all()
  assert _col(x, "eeg_present").tolist() == [0, 0, 1]
  assert _col(x, "eog_present").tolist() == [1, 0, 1]
  assert (_col(x, "ecg_present") == 0).all()
  with pytest.raises(ValueError, match="expected"):
    spectral_features({"bas": bas}, {"bas": ["C3-M2"]}, FS)
  batches = [{"bas": bas[:2]}, {"bas": bas[2:]}]
  np.testing.assert_array_equal(
      extract_features(batches, {"bas": ["C3-M2", "E1-M2"]}, FS, progress=False), x)


def test_r_peaks_on_clean_trace():
  rng = np.random.default_rng(2)
  peaks = r_peaks(_ecg(72, rng), FS)
  assert abs(len(peaks) - 36) <= 1


def test_spectral_baseline_stages_a_real_sleep_edf_night(sc4001):
  """Real data: SC4001 (one subject), Fpz-Cz / Pz-Oz EEG + horizontal EOG at 100 Hz."""
  mne = pytest.importorskip("mne")
  psg, hyp = sc4001
  raw = mne.io.read_raw_edf(psg, include=["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal"],
                            preload=True, verbose="error")
  fs = raw.info["sfreq"]
  data = raw.get_data(picks=["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal"]) * 1e6  # µV
  codes = {"Sleep stage W": 0, "Sleep stage 1": 1, "Sleep stage 2": 2, "Sleep stage 3": 3,
           "Sleep stage 4": 3, "Sleep stage R": 4}
  n_epochs = data.shape[1] // int(30 * fs)
  stage = np.full(n_epochs, -1)
  for ann in mne.read_annotations(hyp):
    first, count = int(ann["onset"] // 30), int(round(ann["duration"] / 30))
    stage[first:min(first + count, n_epochs)] = codes.get(ann["description"], -1)
  asleep = np.nonzero(stage > 0)[0]
  keep = np.arange(max(0, asleep[0] - 60), min(n_epochs, asleep[-1] + 61))  # sleep ± 30 min
  windows = data[:, : n_epochs * int(30 * fs)].reshape(3, n_epochs, -1).transpose(1, 0, 2)[keep]
  y = stage[keep]
  x = spectral_features({"bas": windows}, {"bas": ["Fpz-Cz", "Pz-Oz", "EOG"]}, fs)
  delta = _col(x, "eeg_rel_delta")
  assert delta[y == 3].mean() > delta[y == 0].mean() + 0.2  # slow waves in N3
  res = run_probe(x, y, np.zeros(len(y)), ["W", "N1", "N2", "N3", "REM"],
                  ProbeConfig(c_grid=(0.1, 1.0), outer_folds=4, inner_folds=2, gap=10))
  m = classification_metrics(res.y_true, res.y_prob, res.classes)
  assert res.scheme == "time-block"
  assert m["auroc_macro"] > 0.9 and m["kappa"] > 0.65, m  # measured: 0.959, 0.773
