"""MNE interop: an mne.io.Raw (with mne.Annotations) preprocesses and embeds like the EDF file it
was read from; Raw objects built in memory come back in microvolts, annotations on the Raw's
clock."""

import datetime

import edfio
import numpy as np
import pytest

from sleepfm_jax.data import mne_io, synthetic
from sleepfm_jax.data import preprocess as pp
from sleepfm_jax.data.discovery import RecordingSpec
from sleepfm_jax.data.store import WindowStore

mne = pytest.importorskip("mne")  # a test dependency; the package never imports it

ROWS = [(0, 90, "Sleep stage W"), (90, 60, "Sleep stage 1"), (150, 150, "Sleep stage 2"),
        (300, 60, "Sleep stage R"), (100, 15, "Obstructive apnea"), (200, 20, "Hypopnea")]


def _edf(path, seconds=360, fs=128):
  """One rate for every channel: MNE reads it sample for sample (it upsamples mixed rates)."""
  rng = np.random.default_rng(0)
  sig = [("EEG C3-M2", "uV", 30), ("EOG E1-M2", "uV", 40), ("ECG", "mV", 1), ("SaO2", "%", 1)]
  edfio.Edf([edfio.EdfSignal(rng.standard_normal(seconds * fs) * a + (95 if u == "%" else 0), fs,
                             label=lab, physical_dimension=u) for lab, u, a in sig],
            starttime=datetime.time(22, 30),
            recording=edfio.Recording(startdate=datetime.date(2024, 1, 2))).write(path)
  csv = path.with_suffix(".csv")
  csv.write_text("onset,duration,label\n" + "".join(f"{o},{d},{t}\n" for o, d, t in ROWS))
  return path, csv


def test_raw_from_an_edf_preprocesses_like_the_file(tmp_path):
  edf, csv = _edf(tmp_path / "night.edf")
  raw = mne.io.read_raw_edf(edf, preload=False, verbose="error")
  ann = mne.Annotations([o for o, _, _ in ROWS], [d for _, d, _ in ROWS], [t for *_, t in ROWS])
  specs = mne_io.specs_for(raw, ann)
  assert [(s.recording_id, s.subject_id, s.signal_path) for s in specs] == [
      ("night", "night", str(edf))]
  cfg = {"montage": "standard", "sample_rate": 32, "dtype": "float32", "normalise": "none"}
  via_mne = pp.preprocess(specs, tmp_path / "mne", cfg, progress=False)
  via_file = pp.preprocess([RecordingSpec("night", "night", str(edf), str(csv))], tmp_path / "edf",
                           cfg, progress=False)
  a, b = WindowStore(tmp_path / "mne"), WindowStore(tmp_path / "edf")
  assert len(a) == len(b) == 12
  x, y = a.get_batch(np.arange(12)), b.get_batch(np.arange(12))
  for k in ("stage", "sdb", "epoch", "start", "mask_bas", "mask_ecg", "mask_resp"):
    np.testing.assert_array_equal(x[k], y[k])
  np.testing.assert_array_equal(x["stage"], [0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 4, 4])
  np.testing.assert_array_equal(np.flatnonzero(x["sdb"] == 1), [3, 6, 7])
  for m in ("bas", "ecg", "resp"):  # the file's units: uV, mV and % (MNE holds volts)
    np.testing.assert_allclose(x[m], y[m], rtol=1e-5, atol=1e-4)
  ea, eb = a.recordings[0], b.recordings[0]
  assert ea["format"] == "mne" and eb["format"] == "edf"
  for key in ("channel_map", "channel_fs", "start_datetime", "stage_counts", "respiratory_scored"):
    assert ea[key] == eb[key], key
  assert via_mne["recordings"][0]["notes"] == via_file["recordings"][0]["notes"]


def test_raw_array_units_and_annotation_clock():
  fs = 100.0
  info = mne.create_info(["C4-M1", "Thorax"], fs, ["eeg", "misc"])
  data = np.stack([np.full(3000, 2e-5), np.full(3000, 0.5)])  # 20 uV in volts; a belt signal
  meas = datetime.datetime(2024, 1, 2, 23, 0, tzinfo=datetime.UTC)
  raw = mne.io.RawArray(data, info, first_samp=200, verbose="error").set_meas_date(meas)
  rec = mne_io.MneRecording(raw, mne.Annotations([12.0], [30.0], ["Sleep stage W"],
                                                 orig_time=meas))
  assert [(c.label, c.fs, c.unit, c.n_samples) for c in rec.channels] == [
      ("C4-M1", 100.0, "uV", 3000), ("Thorax", 100.0, "", 3000)]
  np.testing.assert_allclose(rec.read("C4-M1")[:3], 20.0)
  np.testing.assert_allclose(rec.read("Thorax")[:3], 0.5)
  assert rec.duration == 30.0 and rec.start_datetime == datetime.datetime(2024, 1, 2, 23, 0)
  # Annotations on the measurement clock; the data start 200 samples (2 s) after it.
  assert rec.embedded_annotations == [(10.0, 30.0, "Sleep stage W")]
  relative = mne_io.MneRecording(raw, mne.Annotations([12.0], [30.0], ["Sleep stage W"]))
  assert relative.embedded_annotations == [(12.0, 30.0, "Sleep stage W")]  # from the first sample
  assert mne_io.is_raw(raw) and not mne_io.is_raw(data) and mne_io.are_raws([raw, raw])
  specs = mne_io.specs_for([raw, raw])
  assert [s.recording_id for s in specs] == ["raw-0", "raw-1"]


def test_embed_accepts_an_mne_raw(synthetic_run, tmp_path):
  import sleepfm_jax  # pylint: disable=import-outside-toplevel

  workdir, _, _ = synthetic_run
  synthetic.write_dataset(tmp_path / "edf", n_subjects=1, hours=0.25, seed=5, progress=False,
                          rates="eeg=64,eog=64,emg=64,ecg=64,resp=64,spo2=64",
                          annotation_formats=("edf",), distractor_prob=0.0)
  edf = next(p for p in (tmp_path / "edf").glob("*.edf") if "annotations" not in p.name)
  raw = mne.io.read_raw_edf(edf, preload=True, verbose="error")
  ann = mne.read_annotations(edf.with_name(edf.stem + "-annotations.edf"))
  from_raw = sleepfm_jax.embed(raw, str(workdir), annotations=ann, progress=False)
  from_file = sleepfm_jax.embed(str(edf), str(workdir), progress=False)
  assert from_raw.recordings == from_file.recordings == [edf.stem]
  assert len(from_raw) == len(from_file) == 30
  np.testing.assert_array_equal(from_raw.stage, from_file.stage)
  np.testing.assert_array_equal(from_raw.sdb, from_file.sdb)
  for m in ("bas", "ecg", "resp"):
    np.testing.assert_allclose(from_raw.emb[m], from_file.emb[m], rtol=1e-4, atol=1e-5)


def test_raw_units_need_the_file(tmp_path):
  edf, _ = _edf(tmp_path / "night.edf")
  raw = mne.io.read_raw_edf(edf, preload=False, verbose="error")
  cfg = {"montage": "standard", "sample_rate": 32, "dtype": "float32", "normalise": "none",
         "units": {"ecg": "raw"}}
  ann = mne.Annotations([o for o, _, _ in ROWS], [d for _, d, _ in ROWS], [t for *_, t in ROWS])
  report = pp.preprocess(mne_io.specs_for(raw, ann), tmp_path / "s", cfg, progress=False)
  r = report["recordings"][0]
  assert r["status"] == "ok" and "ECG" not in r["masked_windows"]
  assert r["channel_errors"]["ECG"] == (
      f"{edf}: channel 'ECG': an mne.io.Raw carries no ADC calibration (digital values): "
      "units='raw' needs the signal file")
