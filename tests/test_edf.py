"""EDF/EDF+ reading: the real Sleep-EDF file, round trips, EDF+D segments, laziness, bad input."""

import dataclasses
import datetime
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO
from psg_files import header_info, make_discontinuous, set_field, write_edf

from sleepfm_jax.data.edf import read_edf_header, start_datetime
from sleepfm_jax.data.errors import PSGError
from sleepfm_jax.data.recording import ChannelInfo, RawRecording, Segment, open_recording

SC4001_CHANNELS = [
    ("EEG Fpz-Cz", 100.0, "uV"), ("EEG Pz-Oz", 100.0, "uV"), ("EOG horizontal", 100.0, "uV"),
    ("Resp oro-nasal", 1.0, ""), ("EMG submental", 1.0, "uV"), ("Temp rectal", 1.0, "DegC"),
    ("Event marker", 1.0, ""),
]


def test_sc4001_header(sc4001):
  rec = open_recording(sc4001[0])
  assert isinstance(rec, RawRecording)
  assert rec.format == "edf"
  assert [(c.label, c.fs, c.unit) for c in rec.channels] == SC4001_CHANNELS
  assert rec.channels[0].n_samples == 7_950_000 and rec.channels[3].n_samples == 79_500
  assert rec.duration == 79_500.0 and rec.duration / 3600 == pytest.approx(22.08, abs=0.01)
  assert rec.segments == [Segment(0.0, 79_500.0)]
  assert rec.start_datetime == datetime.datetime(1989, 4, 24, 16, 13)
  assert rec.embedded_annotations == []
  assert rec.warnings == []


def test_sc4001_samples_match_mne(sc4001):
  """Cross-check scaling and channel offsets against an independent reader (MNE)."""
  mne = pytest.importorskip("mne")
  rec = open_recording(sc4001[0])
  raw = mne.io.read_raw_edf(sc4001[0], preload=False, verbose="error")
  for label in ("EEG Fpz-Cz", "EOG horizontal"):
    ours = rec.read(label)
    assert ours.shape == (7_950_000,) and ours.dtype == np.float64
    theirs = raw.get_data(picks=[label], start=3_000_000, stop=3_030_000)[0] * 1e6  # V -> uV
    np.testing.assert_allclose(ours[3_000_000:3_030_000], theirs, atol=1e-6)
  temp = rec.read("Temp rectal")
  assert temp.shape == (79_500,) and 34.0 <= temp.min() and temp.max() <= 40.0
  assert 36.0 < np.median(temp) < 38.0  # a plausible rectal temperature in degC


def test_round_trip_edf_and_edf_plus_c(tmp_path):
  rng = np.random.default_rng(0)
  eeg = rng.normal(0, 40, 30 * 128)
  spo2 = 90 + 5 * rng.random(30)
  path = write_edf(tmp_path / "a.edf", {"EEG C4-A1": (128.0, eeg), "SpO2": (1.0, spo2)},
                   record_duration=1.0)
  rec = open_recording(path)
  assert rec.format == "edf" and rec.duration == 30.0
  assert rec.channels == [ChannelInfo("EEG C4-A1", 128.0, "uV", 3840),
                          ChannelInfo("SpO2", 1.0, "uV", 30)]
  # 16-bit quantisation: at most half a digital step of error.
  step = (eeg.max() - eeg.min()) / 65535
  np.testing.assert_allclose(rec.read("EEG C4-A1"), eeg, atol=step)
  np.testing.assert_allclose(rec.read("SpO2"), spo2, atol=(spo2.max() - spo2.min()) / 65535)

  path = write_edf(tmp_path / "b.edf", {"ECG": (256.0, rng.normal(size=10 * 256))},
                   record_duration=2.0,
                   annotations=[(3.0, 10.0, "Obstructive apnea"), (1.5, None, "Lights off")])
  rec = open_recording(path)
  assert rec.format == "edf+c" and rec.duration == 10.0
  assert [c.label for c in rec.channels] == ["ECG"]  # annotation signal is not a channel
  assert rec.embedded_annotations == [(1.5, 0.0, "Lights off"), (3.0, 10.0, "Obstructive apnea")]
  # Picklable without dragging the memory map along.
  clone = pickle.loads(pickle.dumps(rec))
  np.testing.assert_array_equal(clone.read("ECG"), rec.read("ECG"))


def test_start_datetime_edf_plus_four_digit_year_and_subsecond(tmp_path):
  import edfio  # pylint: disable=import-outside-toplevel

  sig = edfio.EdfSignal(np.zeros(200), sampling_frequency=100.0, label="ECG")
  edf = edfio.Edf([sig], recording=edfio.Recording(startdate=datetime.date(2031, 5, 6)),
                  starttime=datetime.time(23, 59, 58, 250_000), annotations=())
  edf.write(tmp_path / "s.edf")
  rec = open_recording(tmp_path / "s.edf")
  assert rec.format == "edf+c"
  assert rec.start_datetime == datetime.datetime(2031, 5, 6, 23, 59, 58, 250_000)
  set_field(tmp_path / "s.edf", "reserved", "")
  header = read_edf_header(tmp_path / "s.edf")
  header = dataclasses.replace(header, startdate="xx.xx.xx")
  assert start_datetime(header) is None


def test_edf_plus_d_segments(tmp_path):
  rng = np.random.default_rng(1)
  data = rng.normal(0, 10, 6 * 100)
  path = write_edf(tmp_path / "d.edf", {"EEG": (100.0, data), "SpO2": (1.0, 90 + np.arange(6.0))},
                   annotations=[(0.0, None, "x" * 40)])
  make_discontinuous(path, [0, 1, 2, 10, 11, 20.5], [(10.5, "Lights off")])
  rec = open_recording(path)
  assert rec.format == "edf+d"
  assert rec.segments == [Segment(0.0, 3.0), Segment(10.0, 2.0), Segment(20.5, 1.0)]
  assert rec.duration == 21.5
  step = (data.max() - data.min()) / 65535
  np.testing.assert_allclose(rec.read("EEG", 0), data[:300], atol=step)
  np.testing.assert_allclose(rec.read("EEG", 1), data[300:500], atol=step)
  np.testing.assert_allclose(rec.read("SpO2", 2), [95.0], atol=1e-3)
  assert rec.embedded_annotations == [(10.5, 0.0, "Lights off")]
  with pytest.raises(PSGError, match=r"d\.edf: channel 'EEG': segment 3 out of range"):
    rec.read("EEG", 3)


def test_edf_plus_d_overlapping_records_rejected(tmp_path):
  path = write_edf(tmp_path / "o.edf", {"EEG": (10.0, np.zeros(30))},
                   annotations=[(0.0, None, "x" * 20)])
  make_discontinuous(path, [0, 5, 5.5])
  with pytest.raises(PSGError, match="data record 2 starts at 5.5.* before record 1 ends"):
    open_recording(path)


# --- bad input -------------------------------------------------------------------------------


@pytest.fixture
def small_edf(tmp_path):
  rng = np.random.default_rng(2)
  return write_edf(tmp_path / "small.edf",
                   {"EEG Fpz-Cz": (100.0, rng.normal(size=1000)),
                    "Resp oro-nasal": (10.0, rng.normal(size=100))})


def _raises(path, pattern, channel=None, call=open_recording):
  with pytest.raises(PSGError) as info:
    call(path)
  err = info.value
  assert str(err).startswith(f"{path}: "), str(err)
  if channel is not None:
    assert str(err).startswith(f"{path}: channel '{channel}': "), str(err)
    assert err.channel == channel
  assert err.path == str(path)
  assert pattern in err.message, err.message
  return err


def test_empty_file(tmp_path):
  (tmp_path / "e.edf").write_bytes(b"")
  _raises(tmp_path / "e.edf", "empty file")


def test_missing_file(tmp_path):
  _raises(tmp_path / "nope.edf", "file not found")


def test_not_edf_bytes(tmp_path):
  (tmp_path / "t.edf").write_text("onset,duration,label\n0,30,Sleep stage W\n" * 20)
  _raises(tmp_path / "t.edf", "not an EDF file")
  (tmp_path / "b.edf").write_bytes(b"\xffBIOSEMI" + b"\0" * 300)
  _raises(tmp_path / "b.edf", "BDF (24-bit) files are not supported")


def test_unknown_extension(tmp_path, small_edf):
  other = tmp_path / "small.txt"
  other.write_bytes(small_edf.read_bytes())
  _raises(other, "unknown signal file extension '.txt'")
  bdf = tmp_path / "x.bdf"
  bdf.write_bytes(b"")
  _raises(bdf, "BDF")


def test_truncated_file(small_edf):
  data = small_edf.read_bytes()
  small_edf.write_bytes(data[:-100])
  _raises(small_edf, "truncated file: header declares 10 data records")
  small_edf.write_bytes(data[:200])
  _raises(small_edf, "truncated header")


def test_record_count_mismatch(small_edf):
  _, _, record_bytes = header_info(small_edf)
  with open(small_edf, "ab") as f:
    f.write(b"\0" * record_bytes)  # one whole extra record the header does not count
  _raises(small_edf, "header declares 10 data records but the file holds 11")
  set_field(small_edf, "num_records", "0")
  _raises(small_edf, "header declares 0 data records")


def test_record_count_minus_one(small_edf):
  set_field(small_edf, "num_records", "-1")
  rec = open_recording(small_edf)  # a whole number of records: count inferred, with a warning
  assert rec.duration == 10.0
  assert rec.warnings == ["header record count is -1; inferred 10 records from the file size"]
  with open(small_edf, "ab") as f:
    f.write(b"\0\0\0")
  _raises(small_edf, "header record count is -1 (recording never finalised)")


def test_trailing_bytes_are_only_a_warning(small_edf):
  with open(small_edf, "ab") as f:
    f.write(b"\n")  # what the sleepless copy of SC4001 carried
  rec = open_recording(small_edf)
  assert rec.warnings == ["ignored 1 trailing byte(s) after the last data record"]
  assert rec.read("EEG Fpz-Cz").shape == (1000,)


def test_bad_header_fields(small_edf):
  set_field(small_edf, "header_bytes", "999")
  _raises(small_edf, "header size field says 999 bytes but 2 signals need 768")
  set_field(small_edf, "header_bytes", "768")
  set_field(small_edf, "record_duration", "abc")
  _raises(small_edf, "header field 'data record duration' is not a number: 'abc'")


@pytest.mark.parametrize("field,value,message", [
    ("physical_min", "5", "physical minimum == maximum (5)"),
    ("digital_min", "32767", "digital minimum 32767 >= maximum 32767"),
])
def test_degenerate_channel_ranges(small_edf, field, value, message):
  set_field(small_edf, field, value, signal=1, num_signals=2)
  if field == "physical_min":
    set_field(small_edf, "physical_max", value, signal=1, num_signals=2)
  rec = open_recording(small_edf)  # other channels stay readable
  assert rec.read("EEG Fpz-Cz").shape == (1000,)
  _raises(small_edf, message, channel="Resp oro-nasal",
          call=lambda p: rec.read("Resp oro-nasal"))


def test_unknown_channel(small_edf):
  rec = open_recording(small_edf)
  _raises(small_edf, "no such channel", channel="C3-M2", call=lambda p: rec.read("C3-M2"))


def test_edf_plus_without_annotation_signal(small_edf):
  set_field(small_edf, "reserved", "EDF+C")
  _raises(small_edf, "EDF+C file without an 'EDF Annotations' signal")


# --- laziness ------------------------------------------------------------------------------

_LAZY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from sleepfm_jax.data.recording import open_recording

    def rss():
      with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in
                (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}
    base = rss()["VmRSS"]
    rec = open_recording(sys.argv[1])
    after_open = rss()["VmRSS"]
    sums = []
    for label in ("ch00", "ch07", "ch19"):
      x = rec.read(label)
      sums.append([len(x), float(x.sum())])
      del x
    print(json.dumps({"base": base, "after_open": after_open, "peak": rss()["VmHWM"],
                      "reads": sums, "n": len(rec.channels), "duration": rec.duration}))
""")


def test_reading_is_lazy_and_per_channel(tmp_path):
  """An 8-h, 20-channel 256-Hz EDF (295 MB): opening costs ~nothing; a channel costs ~its size."""
  n_ch, fs, rec_s, hours = 20, 256, 30, 8
  path = write_edf(tmp_path / "big.edf",
                   {f"ch{i:02d}": (float(fs), np.zeros(fs * rec_s)) for i in range(n_ch)},
                   record_duration=float(rec_s))
  header_bytes, _, record_bytes = header_info(path)
  n_records = hours * 3600 // rec_s
  set_field(path, "num_records", str(n_records))
  os.truncate(path, header_bytes + n_records * record_bytes)  # sparse: no disk, fast
  size = path.stat().st_size
  assert size > 290e6
  env = dict(os.environ, PYTHONPATH=str(REPO))
  out = subprocess.run([sys.executable, "-c", _LAZY_SCRIPT, str(path)], env=env, check=True,
                       capture_output=True, text=True, timeout=120)
  r = json.loads(out.stdout)
  n = fs * 3600 * hours
  assert r["n"] == n_ch and r["duration"] == hours * 3600.0
  assert [len_ for len_, _ in r["reads"]] == [n] * 3
  channel_bytes = n * 8  # one channel as float64: 59 MB
  assert r["after_open"] - r["base"] < 8e6, r
  # Peak = one float64 channel + its int16 copy + the pages of that channel in the memory map
  # (+ slack), far below the 295-MB file; reading all of it would need 4x the file as float64.
  assert r["peak"] - r["base"] < 2 * channel_bytes, r
  assert r["peak"] - r["base"] < 0.45 * size, r


def test_read_edf_header_only_reads_header(small_edf):
  header = read_edf_header(small_edf)
  assert header.num_records == 10 and header.record_duration == 1.0
  assert [s.label for s in header.signals] == ["EEG Fpz-Cz", "Resp oro-nasal"]
  assert [s.offset for s in header.signals] == [0, 100]


def test_edf_plus_c_with_broken_first_timekeeping_is_tolerated(tmp_path):
  path = write_edf(tmp_path / "c.edf", {"ECG": (10.0, np.arange(30.0))},
                   annotations=[(0.0, None, "x" * 20)])
  header_bytes, _, _ = header_info(path)
  raw = bytearray(path.read_bytes())
  ann_offset = header_bytes + 2 * 10  # the annotation signal follows 10 ECG samples
  raw[ann_offset : ann_offset + 4] = b"junk"
  path.write_bytes(bytes(raw))
  rec = open_recording(path)
  assert rec.warnings and rec.warnings[0].startswith("start offset unknown, using 0")
  np.testing.assert_allclose(rec.read("ECG"), np.arange(30.0), atol=1e-3)
  d = tmp_path / "d.edf"
  d.write_bytes(bytes(raw[:192]) + b"EDF+D".ljust(44) + bytes(raw[236:]))
  _raises(d, "data record 0 has no timekeeping annotation", channel="EDF Annotations")
