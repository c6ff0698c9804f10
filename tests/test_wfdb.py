"""WFDB records: round trip through wfdb.wrsamp, chunked reading, the signal-less slpdb headers."""

import datetime

import numpy as np
import pytest

from sleepfm_jax.data import wfdb_io  # imports wfdb quietly
import wfdb  # isort: skip
from sleepfm_jax.data.channels import MONTAGES, harmonise
from sleepfm_jax.data.errors import PSGError
from sleepfm_jax.data.recording import ChannelInfo, RawRecording, Segment, open_recording

# wfdb 4.3 itself triggers pandas deprecation warnings in wrsamp/rdheader.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")

SLPDB_RECORDS = ("slp01a", "slp01b", "slp02a", "slp02b", "slp03", "slp04", "slp14", "slp16",
                 "slp32")


@pytest.fixture
def record(tmp_path):
  fs = 200
  t = np.arange(60 * fs) / fs
  sig = np.stack([40 * np.sin(2 * np.pi * 10 * t), np.cos(2 * np.pi * 1.2 * t),
                  0.3 * np.sin(2 * np.pi * 0.25 * t)], axis=1)
  wfdb.wrsamp("night", fs=fs, units=["uV", "mV", "l"],
              sig_name=["EEG C4-A1", "ECG", "Resp (nasal)"], p_signal=sig, fmt=["16"] * 3,
              base_date=datetime.date(2020, 3, 1), base_time=datetime.time(22, 30),
              write_dir=str(tmp_path))
  return tmp_path / "night", sig


def test_round_trip(record):
  name, sig = record
  rec = open_recording(str(name) + ".hea")
  assert isinstance(rec, RawRecording) and rec.format == "wfdb"
  assert rec.channels == [ChannelInfo("EEG C4-A1", 200.0, "uV", 12000),
                          ChannelInfo("ECG", 200.0, "mV", 12000),
                          ChannelInfo("Resp (nasal)", 200.0, "l", 12000)]
  assert rec.duration == 60.0 and rec.segments == [Segment(0.0, 60.0)]
  assert rec.start_datetime == datetime.datetime(2020, 3, 1, 22, 30)
  assert rec.embedded_annotations == []
  for i, c in enumerate(rec.channels):
    x = rec.read(c.label)
    assert x.dtype == np.float64
    step = (sig[:, i].max() - sig[:, i].min()) / 65000  # 16-bit quantisation
    np.testing.assert_allclose(x, sig[:, i], atol=step)
  # Also reachable by the bare record name.
  assert open_recording(name).read("ECG").shape == (12000,)


def test_chunked_read_equals_whole(record, monkeypatch):
  name, _ = record
  rec = open_recording(str(name) + ".hea")
  whole = rec.read("ECG")
  monkeypatch.setattr(wfdb_io, "_BLOCK_FRAMES", 777)  # several blocks, the last one partial
  np.testing.assert_array_equal(rec.read("ECG"), whole)


def test_multi_frequency_record(tmp_path):
  a, b = np.arange(100) / 10, np.arange(400) / 10
  wfdb.wrsamp("mf", fs=50, units=["mV", "%"], sig_name=["ECG", "SpO2"], e_p_signal=[a, b],
              samps_per_frame=[1, 4], fmt=["16", "16"], adc_gain=[100, 100], baseline=[0, 0],
              write_dir=str(tmp_path))
  rec = open_recording(tmp_path / "mf.hea")
  assert [(c.label, c.fs, c.n_samples) for c in rec.channels] == [("ECG", 50.0, 100),
                                                                   ("SpO2", 200.0, 400)]
  np.testing.assert_allclose(rec.read("SpO2"), b, atol=1e-9)
  np.testing.assert_allclose(rec.read("ECG"), a, atol=1e-9)


def test_missing_and_truncated_dat(record):
  name, _ = record
  hea = str(name) + ".hea"
  dat = name.with_suffix(".dat")
  data = dat.read_bytes()
  dat.write_bytes(data[: len(data) // 2])
  with pytest.raises(PSGError, match=r"night\.hea: truncated signal file .*night\.dat: 36000 bytes"
                     r", the header needs 72000"):
    open_recording(hea)
  dat.unlink()
  with pytest.raises(PSGError, match=r"night\.hea: signal file .*night\.dat is missing"):
    open_recording(hea)


def test_unknown_channel_and_segment(record):
  rec = open_recording(str(record[0]) + ".hea")
  with pytest.raises(PSGError, match=r"channel 'EMG': no such channel"):
    rec.read("EMG")
  with pytest.raises(PSGError, match=r"channel 'ECG': segment 1 out of range"):
    rec.read("ECG", 1)


def test_bad_header(tmp_path):
  (tmp_path / "x.hea").write_text("this is not a header\n")
  with pytest.raises(PSGError, match=r"x\.hea: "):
    open_recording(tmp_path / "x.hea")
  (tmp_path / "y.hea").write_text("")
  with pytest.raises(PSGError, match=r"y\.hea: empty file"):
    open_recording(tmp_path / "y.hea")


@pytest.mark.parametrize("name", SLPDB_RECORDS)
def test_slpdb_headers_without_signals(slpdb_dir, name):
  """The real slpdb headers parse; opening fails cleanly because the .dat files are absent."""
  header = wfdb.rdheader(str(slpdb_dir / name))
  assert header.fs == 250 and header.sig_name[:2] == ["ECG", "BP"]
  with pytest.raises(PSGError) as info:
    open_recording(slpdb_dir / f"{name}.hea")
  assert str(info.value).startswith(f"{slpdb_dir / name}.hea: signal file ")
  assert f"{name}.dat is missing" in str(info.value)


@pytest.mark.parametrize("name,bas,ecg,resp,ignored", [
    ("slp32", ["C4-M1", "Chin"], ["ECG"], ["Airflow", "Thorax"], ["BP", "EOG"]),
    ("slp01a", ["C4-M1"], ["ECG"], [], ["BP", "Resp (sum)"]),
    ("slp02a", ["O2-M1"], ["ECG"], ["Airflow"], ["BP"]),
    ("slp04", [], ["ECG"], ["Airflow"], ["BP", "EEG (C3-O1)"]),
])
def test_slpdb_channels_harmonise(slpdb_dir, name, bas, ecg, resp, ignored):
  labels = wfdb.rdheader(str(slpdb_dir / name)).sig_name
  cmap = harmonise(labels, MONTAGES["standard"])
  got = {m: [n for n, raw in zip(MONTAGES["standard"].channels(m), cmap.assignments[m],
                                 strict=True) if raw] for m in ("bas", "ecg", "resp")}
  assert got == {"bas": bas, "ecg": ecg, "resp": resp}
  assert [raw for raw, _ in cmap.ignored] == ignored
