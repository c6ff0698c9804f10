"""The SYNTHETIC generator's cross-modal couplings, measured in the EDF files it writes.

Each coupling is measured from the signals alone (R peaks found in the ECG, the breathing phase
from the airflow, scored arousals from the annotation file) in a `physiological` data set and in
the `none` control, which renders each modality from an independent latent: the coupling must be
clearly present in the first and absent (or much weaker) in the second.
"""

import edfio
import numpy as np
import pytest
import scipy.signal

from sleepfm_jax.data import synthetic as S

RATES = "eeg=128,eog=128,emg=128,ecg=256,resp=32,spo2=1"
SUBJECTS = 3
RESPIRATORY = {S.EVENT_LABELS[k] for k in S.RESPIRATORY_KINDS}
HOURS = 1.5


def _write(tmp_path_factory, coupling):
  out = tmp_path_factory.mktemp(f"coupling-{coupling}")
  manifest = S.write_dataset(out, SUBJECTS, hours=HOURS, seed=21, rates=RATES, workers=1,
                             missing_prob=0.0, distractor_prob=0.0, progress=False,
                             coupling=coupling)
  nights = []
  for subj in manifest["subjects"]:
    entry = subj["nights"][0]
    edf = edfio.read_edf(out / entry["signal_file"])
    ann = edfio.read_edf(out / entry["annotation_files"][0])
    by_name = {c["canonical"]: c["label"] for c in entry["channels"]}
    sig = {name: edf.get_signal(label) for name, label in by_name.items()}
    nights.append({
        "x": {k: s.data for k, s in sig.items()},
        "fs": {k: s.sampling_frequency for k, s in sig.items()},
        "arousals": [a.onset for a in ann.annotations if a.text == "Arousal"],
        "event_ends": [a.onset + a.duration for a in ann.annotations if a.text in RESPIRATORY],
        "stages": [(a.onset, a.duration, a.text) for a in ann.annotations
                   if a.text.startswith("Sleep stage")],
        "params": subj["params"],
    })
  return nights


@pytest.fixture(scope="module")
def coupled(tmp_path_factory):
  return _write(tmp_path_factory, "physiological")


@pytest.fixture(scope="module")
def control(tmp_path_factory):
  return _write(tmp_path_factory, "none")


def _r_peaks(ecg, fs):
  """R-peak sample indices of an ECG of either polarity (prominent, >= 0.33 s apart)."""
  b, a = scipy.signal.butter(2, [5.0, 30.0], btype="band", fs=fs)
  f = scipy.signal.filtfilt(b, a, ecg)
  sign = 1.0 if np.percentile(f, 99.9) > -np.percentile(f, 0.1) else -1.0
  peaks, _ = scipy.signal.find_peaks(sign * f, distance=int(0.33 * fs),
                                     height=0.4 * np.percentile(sign * f, 99))
  # Refine on the raw trace, where the amplitude is measured.
  w = int(0.03 * fs)
  return np.array([p - w + np.argmax(sign * ecg[max(p - w, 0):p + w]) for p in peaks if p >= w])


def _breath_phase(flow, fs):
  """Breathing phase (rad) of the airflow: its analytic signal in the breathing band."""
  b, a = scipy.signal.butter(2, [0.1, 0.6], btype="band", fs=fs)
  return np.angle(scipy.signal.hilbert(scipy.signal.filtfilt(b, a, flow)))


def _phase_regression(values, phase):
  """Least-squares fit values ~ c + a sin(phase) + b cos(phase): (amplitude, phase of the peak)."""
  design = np.stack([np.ones_like(phase), np.sin(phase), np.cos(phase)], 1)
  c, a, b = np.linalg.lstsq(design, values, rcond=None)[0]
  return float(np.hypot(a, b)), float(np.arctan2(b, a))


def _rsa(night):
  ecg, fe = night["x"]["ECG"], night["fs"]["ECG"]
  flow, fr = night["x"]["Airflow"], night["fs"]["Airflow"]
  r = _r_peaks(ecg, fe)
  t = r / fe
  hr = 60.0 / np.diff(t)
  tm = t[1:]
  ok = (hr > 35) & (hr < 150)
  # Detrend: beat-to-beat heart rate minus its 20-s running median.
  trend = scipy.ndimage.median_filter(hr, size=21, mode="nearest")
  phase = _breath_phase(flow, fr)[np.minimum((tm * fr).astype(int), flow.size - 1)]
  amp = ecg[r[1:]]
  amp_rel = amp / scipy.ndimage.median_filter(amp, size=21, mode="nearest") - 1.0
  rsa = _phase_regression((hr - trend)[ok], phase[ok])
  edr = _phase_regression(amp_rel[ok], phase[ok])
  return rsa, edr


def test_heart_rate_follows_breathing_rsa(coupled, control):
  rsa_c = [_rsa(n)[0] for n in coupled]
  rsa_n = [_rsa(n)[0] for n in control]
  print("RSA amplitude (bpm) coupled", np.round([a for a, _ in rsa_c], 2),
        "phase", np.round([p for _, p in rsa_c], 2), "control", np.round([a for a, _ in rsa_n], 2))
  for (amp_c, ph_c), (amp_n, _) in zip(rsa_c, rsa_n, strict=True):
    assert amp_c > 0.8                 # bpm swing locked to the airflow's breathing cycle
    assert amp_c > 4 * amp_n           # the control's ECG breathes on its own
    # Heart rate is highest through inspiration (airflow's sin > 0): peak phase in (0, pi).
    assert 0.0 < ph_c < np.pi


def test_qrs_amplitude_follows_breathing_edr(coupled, control):
  edr_c = [_rsa(n)[1][0] for n in coupled]
  edr_n = [_rsa(n)[1][0] for n in control]
  print("EDR relative QRS swing coupled", np.round(edr_c, 3), "control", np.round(edr_n, 3))
  for c, n in zip(edr_c, edr_n, strict=True):
    assert c > 0.02 and c > 3 * n


def _window_rms(x, fs, t0, t1):
  a, b = int(t0 * fs), int(t1 * fs)
  return float(np.sqrt(np.mean(np.square(x[a:b] - x[a:b].mean()))))


def _arousal_responses(night):
  """Per spontaneous arousal (none within 30 s after a respiratory event, whose recovery breaths
  and heart-rate rebound would show in any latent): after/before ratios of EEG 8-30 Hz power,
  chin RMS, heart rate and airflow RMS."""
  x, fs = night["x"], night["fs"]
  b, a = scipy.signal.butter(3, [8.0, 30.0], btype="band", fs=fs["C3-M2"])
  c3 = scipy.signal.filtfilt(b, a, x["C3-M2"])
  r = _r_peaks(x["ECG"], fs["ECG"]) / fs["ECG"]
  out = []
  ends = np.array(night["event_ends"])
  for t in night["arousals"]:
    if t < 20 or t + 20 > x["Airflow"].size / fs["Airflow"]:
      continue
    if np.any((ends > t - 30) & (ends < t + 10)):
      continue
    before, after = (t - 12, t - 1), (t + 1, t + 10)
    hr = [60.0 / np.median(np.diff(r[(r > lo) & (r < hi)])) for lo, hi in (before, after)]
    out.append([
        _window_rms(c3, fs["C3-M2"], *after) / _window_rms(c3, fs["C3-M2"], *before),
        _window_rms(x["Chin"], fs["Chin"], *after) / _window_rms(x["Chin"], fs["Chin"], *before),
        hr[1] / hr[0],
        _window_rms(x["Airflow"], fs["Airflow"], *after) / _window_rms(
            x["Airflow"], fs["Airflow"], *before),
    ])
  return np.array(out)


def test_arousals_show_in_every_modality_at_once(coupled, control):
  resp_c = np.concatenate([_arousal_responses(n) for n in coupled])
  resp_n = np.concatenate([_arousal_responses(n) for n in control])
  med_c, med_n = np.median(resp_c, 0), np.median(resp_n, 0)
  print("arousal after/before (EEG beta+alpha, chin, HR, airflow) coupled", np.round(med_c, 3),
        f"n={len(resp_c)}; control", np.round(med_n, 3), f"n={len(resp_n)}")
  assert len(resp_c) >= 10
  assert med_c[0] > 1.3 and med_c[1] > 1.3      # EEG burst and chin EMG burst
  assert med_c[2] > 1.05 and med_c[3] > 1.15    # heart-rate surge and a deeper breath
  # The control's ECG and breathing have arousals of their own, not these.
  assert med_n[2] < 1 + 0.5 * (med_c[2] - 1) and med_n[3] < 1 + 0.5 * (med_c[3] - 1)


def _cardiac_field(night):
  """EEG averaged around the ECG's R peaks: peak-to-peak of the average over its baseline sd."""
  x, fs = night["x"], night["fs"]
  r = _r_peaks(x["ECG"], fs["ECG"]) / fs["ECG"]
  fb = fs["C4-M1"]
  w = int(0.2 * fb)
  idx = (r * fb).astype(int)
  idx = idx[(idx > w) & (idx < x["C4-M1"].size - w)]
  seg = np.stack([x["C4-M1"][i - w:i + w] for i in idx])
  avg = seg.mean(0)
  noise = seg.std(0).mean() / np.sqrt(len(idx))
  return float(np.ptp(avg[w - int(0.05 * fb):w + int(0.05 * fb)]) / noise)


def test_cardiac_field_in_eeg_is_locked_to_the_ecg(coupled, control):
  snr_c = [_cardiac_field(n) for n in coupled]
  snr_n = [_cardiac_field(n) for n in control]
  print("R-locked EEG average, peak-to-peak / noise: coupled", np.round(snr_c, 1),
        "control", np.round(snr_n, 1))
  assert min(snr_c) > 5 and max(snr_n) < 3


def test_bas_is_identical_under_both_couplings(coupled, control):
  for a, b in zip(coupled, control, strict=True):
    for name in ("C3-M2", "E1-M2", "Chin"):
      np.testing.assert_array_equal(a["x"][name], b["x"][name])
    assert a["arousals"] == b["arousals"] and a["stages"] == b["stages"]
    assert not np.array_equal(a["x"]["ECG"], b["x"]["ECG"])


def _hr_by_stage(night):
  """Mean heart rate (bpm, from the R peaks of the ECG) over the epochs of each stage."""
  label = next(k for k, v in night.canonical.items() if v == "ECG")
  fs = night.rates[label]
  t = _r_peaks(night.signals[label], fs) / fs
  hr, tm = 60.0 / np.diff(t), t[1:]
  epoch = (tm // 30.0).astype(int)
  stage = night.stages[np.minimum(epoch, night.stages.size - 1)]
  return {s: float(np.mean(hr[stage == s])) for s in np.unique(night.stages)}


def test_stage_gain_scales_the_stage_effect_on_heart_rate():
  """`stage_gain` (a positive control) makes the sleep-vs-wake heart-rate drop about that many
  times larger; the default (1) is the generator's literature-sized effect, recorded nowhere."""
  p = S.sample_subject(4, seed=3, missing_prob=0.0, distractor_prob=0.0)
  nights = {g: S.generate_night(p, hours=2.0, seed=5, rates=RATES, stage_gain=g)
            for g in (1.0, 3.0)}
  assert "stage_gain" not in nights[1.0].info and nights[3.0].info["stage_gain"] == 3.0
  np.testing.assert_array_equal(nights[1.0].stages, nights[3.0].stages)
  drop = {}
  for g, night in nights.items():
    hr = _hr_by_stage(night)
    sleep = [s for s in (S.N2, S.N3) if s in hr]
    assert S.W in hr and sleep, hr
    drop[g] = hr[S.W] - np.mean([hr[s] for s in sleep])
  assert drop[1.0] > 1.0 and 2.0 < drop[3.0] / drop[1.0] < 4.0, drop
  with pytest.raises(ValueError, match="stage_gain"):
    S.generate_night(p, hours=0.5, seed=5, rates=RATES, stage_gain=6.0)
