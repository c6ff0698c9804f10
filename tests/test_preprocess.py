"""Preprocessing end to end: real Sleep-EDF SC4001, synthetic EDF/EDF+D nights and broken files."""

import json

import numpy as np
import pytest
from psg_files import make_discontinuous, write_edf

from sleepfm_jax.data import preprocess as pp
from sleepfm_jax.data.discovery import RecordingSpec, discover
from sleepfm_jax.data.store import WindowStore

# --- real data: Sleep-EDF SC4001 ---------------------------------------------------------------


@pytest.fixture(scope="session")
def sc4001_store(sc4001, tmp_path_factory):
  psg, hyp = sc4001
  out = tmp_path_factory.mktemp("sc4001") / "store"
  spec = RecordingSpec("SC4001E0", "SC00", str(psg), str(hyp))
  report = pp.preprocess([spec], out, {"montage": "sleepedf", "dtype": "float16"}, progress=False)
  return out, report


def test_sc4001_end_to_end(sc4001_store):
  out, report = sc4001_store
  st = WindowStore(out)
  assert len(st) == 2650 and st.dtype == np.float16
  shard = out / "shards" / "SC4001E0"
  assert np.load(shard / "bas.npy", mmap_mode="r").shape == (2650, 4, 7680)
  assert np.load(shard / "ecg.npy", mmap_mode="r").shape == (2650, 0, 7680)
  assert np.load(shard / "resp.npy", mmap_mode="r").shape == (2650, 1, 7680)
  assert report["files"] == {"total": 1, "ok": 1, "skipped": 0, "unpaired": 0,
                             "alternate_annotations": 0}
  assert report["stage_counts"] == {"W": 1997, "N1": 58, "N2": 250, "N3": 220, "REM": 125}
  assert report["excluded"] == {pp.CROPPED: 230}
  rec = report["recordings"][0]
  assert rec["cropped_labels"] == {"Sleep stage ?": 230}
  assert report["missing_modalities"] == {"SC4001E0": ["ecg"]}
  assert set(report["masked_windows"]) == {"Fpz-Cz", "Pz-Oz", "EOG", "Chin", "Airflow"}
  sdb = np.load(shard / "sdb.npy")
  assert np.all(sdb == -1)  # Sleep-EDF scores no respiratory events: never an invented 0
  stage = np.load(shard / "stage.npy")
  np.testing.assert_array_equal(np.bincount(stage), [1997, 58, 250, 220, 125])
  np.testing.assert_array_equal(np.load(shard / "start.npy")[:3], [0.0, 30.0, 60.0])
  entry = st.recordings[0]
  assert entry["subject_id"] == "SC00" and entry["respiratory_scored"] is False
  assert entry["channel_map"]["assignments"]["bas"] == [
      "EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "EMG submental"]
  assert st.index["preprocessing"]["montage"] == "sleepedf"
  # Robust normalisation: every channel has median ~0 and IQR ~1.349 over the night.
  b = st.get_batch(np.arange(0, 2650, 7))
  for m, c in (("bas", 4), ("resp", 1)):
    x = b[m].transpose(1, 0, 2).reshape(c, -1)
    q25, q50, q75 = np.percentile(x, [25, 50, 75], axis=1)
    np.testing.assert_allclose(q50, 0, atol=0.1)
    np.testing.assert_allclose(q75 - q25, 1.349, rtol=0.15)
  on_disk = json.loads((out / "report.json").read_text())
  assert on_disk["windows"] == 2650


def test_sc4001_cropped_to_the_sleep_period(sc4001, tmp_path):
  """The Sleep-EDF preset keeps the sleep period +- 30 min: 841 of the night's 2650 windows."""
  from sleepfm_jax.configs import preprocess as presets  # pylint: disable=import-outside-toplevel
  psg, hyp = sc4001
  cfg = presets.get_config("sleepedf").to_dict()
  cfg.update(sample_rate=16, dtype="float16")
  assert cfg["crop_wake_minutes"] == 30
  spec = RecordingSpec("SC4001E0", "SC00", str(psg), str(hyp))
  report = pp.preprocess([spec], tmp_path / "store", cfg, progress=False)
  assert report["windows"] == 841
  assert report["stage_counts"] == {"W": 188, "N1": 58, "N2": 250, "N3": 220, "REM": 125}
  assert report["excluded"][pp.OUTSIDE_SLEEP.format(30)] == 2650 - 841
  stage = np.load(tmp_path / "store" / "shards" / "SC4001E0" / "stage.npy")
  first, last = np.flatnonzero(stage > 0)[[0, -1]]
  assert first == 60 and last == 841 - 61  # 60 wake windows (30 min) on either side
  assert np.all(stage[:60] == 0) and np.all(stage[-60:] == 0)


# --- synthetic nights --------------------------------------------------------------------------

STAGE_RUNS = ("0,120,Sleep stage W\n120,90,Sleep stage 2\n210,30,Sleep stage ?\n"
              "240,420,Sleep stage R\n")


def _night(path, seconds=600, flat_epochs=(), clipped_epochs=(), labels=None, seed=0):
  """A small EDF at mixed rates with standard labels; some EEG epochs flat or clipped."""
  rng = np.random.default_rng(seed)
  t = np.arange(seconds * 100) / 100
  eeg = 30 * np.sin(2 * np.pi * 10 * t) + 10 * rng.standard_normal(t.size)
  for k in flat_epochs:
    eeg[k * 3000:(k + 1) * 3000] = 5.0
  for k in clipped_epochs:
    eeg[k * 3000:(k + 1) * 3000] = 1000 * np.sign(np.sin(2 * np.pi * 0.5 * t[:3000]))
  eeg = np.clip(eeg, -200, 200)
  eeg[0], eeg[1] = -200, 200  # rails present even without clipped epochs
  labels = labels or ["EEG C3-M2", "ECG", "SaO2"]
  chans = {labels[0]: (100.0, eeg),
           labels[1]: (200.0, rng.standard_normal(seconds * 200)),
           labels[2]: (1.0, np.round(96 + rng.random(seconds)))}
  write_edf(path, chans, record_duration=30.0, annotations=[(0.0, None, "x" * 40)])
  return path


def _csv(path, seconds=600, events=((300.0, 20.0, "Obstructive apnea"),)):
  body = "onset,duration,label\n" + STAGE_RUNS.replace("240,420", f"240,{seconds - 240}")
  body += "".join(f"{o},{d},{lab}\n" for o, d, lab in events)
  path.write_text(body)
  return path


CFG = {"montage": "standard", "dtype": "float32"}


def test_synthetic_night_labels_quality_and_masks(tmp_path):
  sig = _night(tmp_path / "sub-001_night-1.edf", flat_epochs=(2,), clipped_epochs=(5, 6))
  ann = _csv(tmp_path / "sub-001_night-1.csv")
  spec = RecordingSpec("sub-001_night-1", "sub-001", str(sig), str(ann))
  report = pp.preprocess([spec], tmp_path / "store", CFG, progress=False)
  rec = report["recordings"][0]
  assert rec["status"] == "ok", rec.get("traceback")
  st = WindowStore(tmp_path / "store")
  assert len(st) == 19  # 20 epochs, '?' dropped
  assert rec["excluded"] == {"unscored '?'": 1}
  assert rec["stage_counts"] == {"W": 4, "N1": 0, "N2": 3, "N3": 0, "REM": 12}
  b = st.get_batch(np.arange(19))
  np.testing.assert_array_equal(b["epoch"], [k for k in range(20) if k != 7])
  # SDB: the apnea [300, 320) s overlaps epoch 10 only; respiratory events were scored.
  np.testing.assert_array_equal(np.flatnonzero(b["sdb"] == 1), [9])  # epoch 10 = window 9
  assert np.all(b["sdb"] >= 0)
  # Quality: EEG flat in epoch 2, clipped in 5 and 6; SpO2 (bounded, exempt) never masked.
  assert rec["masked_windows"]["C3-M2"] == {"masked": 3, "nonfinite": 0, "flat": 1, "clipped": 2}
  c3 = st.montage.channels("bas").index("C3-M2")
  np.testing.assert_array_equal(np.flatnonzero(~b["mask_bas"][:, c3]), [2, 5, 6])
  assert b["mask_resp"][:, st.montage.channels("resp").index("SpO2")].all()
  assert b["mask_ecg"].all()
  # Missing channels of the standard montage are zero and masked; never confused with data.
  e1 = st.montage.channels("bas").index("E1-M2")
  assert not b["mask_bas"][:, e1].any() and np.all(b["bas"][:, e1] == 0)
  assert rec["missing_channels"]["bas"] == ["C4-M1", "O1-M2", "O2-M1", "E1-M2", "E2-M1", "Chin"]
  # The 10-Hz EEG sine survives 100 -> 256 Hz resampling and normalisation.
  x = b["bas"][0, c3]
  spec_ = np.abs(np.fft.rfft(x))
  assert abs(np.fft.rfftfreq(x.size, 1 / 256)[np.argmax(spec_)] - 10.0) < 0.1
  keep = pp.preprocess([spec], tmp_path / "store", {**CFG, "drop_unscored": False,
                                                     "sdb_scored": "no"},
                       overwrite=True, progress=False)
  st2 = WindowStore(tmp_path / "store")
  assert len(st2) == 20 and st2[7]["stage"] == -1 and keep["excluded"] == {}
  assert np.all(st2.get_batch(np.arange(20))["sdb"] == -1)


class _WithNaN:
  """Wraps a recording: channel `label` reads NaN in samples [lo, hi)."""

  def __init__(self, rec, label, lo, hi):
    self._rec, self._label, self._lo, self._hi = rec, label, lo, hi

  def __getattr__(self, name):
    return getattr(self._rec, name)

  def read(self, label, segment=0):
    x = self._rec.read(label, segment)
    if label == self._label:
      x[self._lo:self._hi] = np.nan
    return x


def test_nan_samples_are_masked_zero_filled_and_do_not_leak(tmp_path, monkeypatch):
  sig = _night(tmp_path / "n.edf")
  ann = _csv(tmp_path / "n.csv")
  real_open = pp.open_recording
  monkeypatch.setattr(pp, "open_recording",
                      lambda p: _WithNaN(real_open(p), "ECG", 200 * 95, 200 * 100))  # epoch 3
  report = pp.preprocess([RecordingSpec("n", "n", str(sig), str(ann))], tmp_path / "s", CFG,
                         progress=False)
  rec = report["recordings"][0]
  assert rec["masked_windows"]["ECG"] == {"masked": 1, "nonfinite": 1, "flat": 0, "clipped": 0}
  b = WindowStore(tmp_path / "s").get_batch(np.arange(19))
  assert np.all(np.isfinite(b["ecg"]))
  np.testing.assert_array_equal(np.flatnonzero(~b["mask_ecg"][:, 0]), [3])
  assert np.all(b["ecg"][3] == 0)
  assert np.abs(b["ecg"][[2, 4]]).max() < 10  # neighbours are not polluted by the gap
  assert report["masked_windows"]["ECG"] == 1


def test_edf_plus_d_windows_never_straddle_a_gap(tmp_path):
  # 20 records of 30 s: the first 10 at 0..270 s, the last 10 at 360..630 s (60-s gap).
  sig = _night(tmp_path / "d.edf", seconds=600)
  make_discontinuous(sig, [30.0 * i for i in range(10)] + [360.0 + 30.0 * i for i in range(10)])
  ann = _csv(tmp_path / "d.csv", seconds=660, events=())
  report = pp.preprocess([RecordingSpec("d", "d", str(sig), str(ann))], tmp_path / "s", CFG,
                         progress=False)
  rec = report["recordings"][0]
  assert rec["status"] == "ok", rec.get("traceback")
  st = WindowStore(tmp_path / "s")
  epochs = st.get_batch(np.arange(len(st)))["epoch"]
  # Epochs 10 and 11 ([300, 360) s) fall in the gap; 7 is '?'.
  np.testing.assert_array_equal(epochs, [k for k in range(22) if k not in (7, 10, 11)])
  assert rec["excluded"][pp.OUTSIDE] == 2
  assert rec["windows"] + sum(rec["excluded"].values()) == rec["epochs_annotated"] == 22
  # Window data come from the right segment: epoch 12 starts at 360 s = first sample of segment 2.
  first = st.get_batch([10])["bas"][0, 0]
  assert np.isfinite(first).all()


def test_bad_files_are_reported_and_the_batch_continues(tmp_path):
  d = tmp_path / "in"
  d.mkdir()
  _night(d / "sub-001_night-1.edf")
  _csv(d / "sub-001_night-1.csv")
  # Truncated EDF: half the data records cut off.
  good = (d / "sub-001_night-1.edf").read_bytes()
  (d / "sub-002_night-1.edf").write_bytes(good[: len(good) // 2])
  _csv(d / "sub-002_night-1.csv")
  (d / "sub-003_night-1.edf").write_bytes(b"")
  _csv(d / "sub-003_night-1.csv")
  _night(d / "sub-004_night-1.edf", labels=["Foo", "Bar", "Baz"])
  _csv(d / "sub-004_night-1.csv")
  specs, unpaired = discover(d)
  assert len(specs) == 4
  report = pp.preprocess(specs, tmp_path / "store", {**CFG, "workers": 2}, unpaired=unpaired,
                         progress=False)
  assert report["files"]["ok"] == 1 and report["files"]["skipped"] == 3
  reasons = {s["recording_id"]: s["reason"] for s in report["skipped"]}
  assert "sub-002_night-1.edf" in reasons["sub-002_night-1"]
  assert "truncated" in reasons["sub-002_night-1"] or "size" in reasons["sub-002_night-1"]
  assert "empty" in reasons["sub-003_night-1"]
  assert "no channel matches the montage" in reasons["sub-004_night-1"]
  st = WindowStore(tmp_path / "store")
  assert [r["recording_id"] for r in st.recordings] == ["sub-001_night-1"]
  assert len(st) == 19
  text = pp.format_summary(report)
  assert "1 ok, 3 skipped" in text and "sub-004_night-1" in text


def test_unexpected_errors_keep_the_traceback(tmp_path, monkeypatch):
  sig = _night(tmp_path / "x.edf")
  ann = _csv(tmp_path / "x.csv")

  def boom(*a, **k):
    raise ZeroDivisionError("synthetic failure")

  monkeypatch.setattr(pp.sig, "resample", boom)
  report = pp.preprocess([RecordingSpec("x", "x", str(sig), str(ann))], tmp_path / "s", CFG,
                         progress=False)
  (s,) = report["skipped"]
  assert "ZeroDivisionError: synthetic failure" in s["reason"]
  assert "Traceback" in s["traceback"] and "boom" in s["traceback"]
  assert WindowStore(tmp_path / "s").num_windows == 0


def test_config_validation():
  with pytest.raises(ValueError, match="unknown preprocessing settings"):
    pp.PreprocessConfig.from_dict({"sample_rte": 100})
  with pytest.raises(ValueError, match="montage"):
    pp.PreprocessConfig(montage="nope")
  with pytest.raises(ValueError, match="normalise"):
    pp.PreprocessConfig(normalise="zscore")
  c = pp.PreprocessConfig(montage={"bas": ["C3-M2"], "resp": ["SpO2"]})
  assert c.get_montage().ecg == () and c.to_dict()["montage"]["resp"] == ["SpO2"]


def test_cli_writes_store_and_report(tmp_path):
  import os  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  from conftest import REPO  # pylint: disable=import-outside-toplevel

  d = tmp_path / "in"
  d.mkdir()
  _night(d / "sub-007_night-2.edf")
  _csv(d / "sub-007_night-2.csv")
  (d / "stray.csv").write_text("onset,duration,label\n0,30,Sleep stage W\n")
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  cmd = [sys.executable, str(REPO / "experiments" / "preprocess.py"), f"--input={d}",
         f"--out={tmp_path / 'out'}", "--config=paper",
         "--config.montage=standard", "--noprogress"]
  res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "1 ok, 0 skipped, 1 unpaired" in res.stdout and "stray.csv" in res.stdout
  st = WindowStore(tmp_path / "out")
  assert st.recordings[0]["subject_id"] == "sub-007" and st.dtype == np.float32
  assert st.index["preprocessing"]["normalise"] == "none"
  # No normalisation (paper): the EEG is not rescaled (the paper preset reads raw ADC counts).
  c3 = st.montage.channels("bas").index("C3-M2")
  assert np.abs(st[1]["bas"][c3]).max() > 50


def test_filters_apply_per_modality_and_skip_corners_above_nyquist(tmp_path):
  sig = _night(tmp_path / "f.edf")
  ann = _csv(tmp_path / "f.csv")
  spec = RecordingSpec("f", "f", str(sig), str(ann))

  def alpha_power(filters, name):
    cfg = {**CFG, "normalise": "none", "filters": filters}
    rep = pp.preprocess([spec], tmp_path / name, cfg, progress=False)
    st = WindowStore(tmp_path / name)
    x = st.get_batch(np.arange(len(st)))["bas"][:, st.montage.channels("bas").index("C3-M2")]
    f = np.fft.rfftfreq(x.shape[-1], 1 / 256)
    p = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    return p[:, np.abs(f - 10) < 0.2].sum(), rep["recordings"][0]["notes"]

  base, _ = alpha_power({}, "a")
  cut, notes = alpha_power({"bas": {"bandpass": [15.0, 60.0], "notch": 50.0},
                            "SpO2": {"bandpass": [0.01, 5.0]}}, "b")
  assert cut < base / 100  # 10 Hz is far below the 15-Hz high-pass corner
  assert any("C3-M2: band-pass high corner 60.0 Hz >= Nyquist 50.0 Hz" in n for n in notes)
  assert any("C3-M2: notch 50.0 Hz >= Nyquist 50.0 Hz" in n for n in notes)
  assert any("SpO2: band-pass high corner 5.0 Hz >= Nyquist 0.5 Hz" in n for n in notes)


@pytest.mark.filterwarnings("ignore:The inplace keyword")
def test_wfdb_record_at_250_hz_with_slpdb_style_annotations(tmp_path):
  import wfdb  # pylint: disable=import-outside-toplevel

  fs, seconds = 250, 600
  rng = np.random.default_rng(4)
  t = np.arange(fs * seconds) / fs
  sig = np.stack([30 * np.sin(2 * np.pi * 6 * t) + rng.standard_normal(t.size),
                  rng.standard_normal(t.size), np.sin(2 * np.pi * 0.25 * t)], axis=1)
  wfdb.wrsamp("slp99a", fs=fs, units=["uV", "mV", "l"],
              sig_name=["EEG C4-A1", "ECG", "Resp (nasal)"], p_signal=sig, fmt=["16"] * 3,
              write_dir=str(tmp_path))
  # slpdb .st style: one note per 30-s epoch, stage then event codes; the first sits on sample 1.
  notes = ["W", "W", "1", "2", "2 OA", "2 X", "3", "4", "R", "R H"] * 2
  wfdb.wrann("slp99a", "st", np.array([1 + 7500 * k for k in range(20)]), ['"'] * 20,
             aux_note=notes, write_dir=str(tmp_path))
  specs, _ = discover(tmp_path)
  assert [(s.recording_id, s.subject_id) for s in specs] == [("slp99a", "slp99")]
  report = pp.preprocess(specs, tmp_path / "store", CFG, progress=False)
  rec = report["recordings"][0]
  assert rec["status"] == "ok", rec.get("traceback") or rec.get("reason")
  st = WindowStore(tmp_path / "store")
  # Epoch 0 starts at sample 1 (4 ms): the last epoch would end 4 ms past the signal → cropped.
  assert len(st) == 19 and rec["excluded"] == {pp.CROPPED: 1}
  b = st.get_batch(np.arange(19))
  np.testing.assert_array_equal(b["stage"], [0, 0, 1, 2, 2, 2, 3, 3, 4, 4, 0, 0, 1, 2, 2, 2, 3, 3, 4])
  np.testing.assert_allclose(b["start"][:2], [0.004, 30.004])
  np.testing.assert_array_equal(np.flatnonzero(b["sdb"] == 1), [4, 5, 9, 14, 15])
  assert b["bas"].shape == (19, 7, 7680) and st.recordings[0]["respiratory_scored"] is True
  c4 = st.montage.channels("bas").index("C4-M1")
  x = b["bas"][3, c4]
  assert abs(np.fft.rfftfreq(7680, 1 / 256)[np.argmax(np.abs(np.fft.rfft(x)))] - 6.0) < 0.1
