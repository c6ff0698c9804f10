"""Annotations: real Sleep-EDF hypnogram and slpdb .st files, CSV/TSV and EDF+ TAL, SDB labels."""

import collections

import edfio
import numpy as np
import pytest

from sleepfm_jax.data.annotations import (
    RESPIRATORY_KINDS,
    STAGES,
    Event,
    crop_to_duration,
    event_kind,
    read_annotations,
    sdb_labels,
    stage_code,
)
from sleepfm_jax.data.errors import PSGError
from sleepfm_jax.data.wfdb_io import quiet_wfdb

# --- Sleep-EDF SC4001 --------------------------------------------------------------------------


def test_sc4001_hypnogram(sc4001):
  ann = read_annotations(sc4001[1])
  assert ann.epoch_onset == 0.0 and ann.n_epochs == 2880  # 86,400 s of hypnogram
  assert ann.stages.dtype == np.int8
  assert ann.stage_counts() == {"W": 1997, "N1": 58, "N2": 250, "N3": 220, "REM": 125}
  assert ann.excluded == {"unscored '?'": 230}
  raw = collections.Counter(ann.stage_raw)
  assert raw["Sleep stage 3"] == 101 and raw["Sleep stage 4"] == 119
  assert ann.events == [] and ann.respiratory_scored is False
  assert ann.unknown == {} and ann.issues == []
  assert (ann.sdb() == -1).all()  # Sleep-EDF scores no respiratory events: never an invented 0
  runs = edfio.read_edf(sc4001[1]).annotations
  assert len(runs) == 154

  cropped, counts = crop_to_duration(ann, 79_500.0)
  assert cropped.n_epochs == 2650 and cropped.epoch_onset == 0.0
  assert cropped.stage_counts() == {"W": 1997, "N1": 58, "N2": 250, "N3": 220, "REM": 125}
  assert sum(cropped.stage_counts().values()) == 2650
  assert cropped.excluded == {}
  assert counts == {"Sleep stage ?": 230}


# --- slpdb .st -------------------------------------------------------------------------------

# Raw stage tokens per record (counted straight from wfdb.rdann aux notes) and the apnea/hypopnea
# codes from the data README.
SLPDB = {
    "slp01a": (240, {"4": 66, "3": 47, "2": 105, "W": 7, "1": 1, "MT": 1, "R": 13},
               {"H": 23, "HA": 15}),
    "slp01b": (360, {"2": 128, "W": 180, "1": 27, "R": 25},
               {"H": 19, "HA": 40, "X": 2, "CA": 1, "CAA": 4}),
    "slp02a": (360, {"2": 206, "MT": 8, "W": 44, "1": 18, "3": 5, "4": 2, "R": 77},
               {"H": 10, "X": 87}),
    "slp02b": (270, {"2": 119, "W": 107, "1": 14, "MT": 1, "R": 29},
               {"H": 2, "X": 40, "OA": 1}),
    "slp03": (720, {"2": 312, "W": 151, "1": 105, "R": 74, "3": 78},
              {"H": 96, "HA": 117, "X": 37, "OA": 3, "CA": 6, "CAA": 6}),
    "slp04": (720, {"W": 162, "1": 60, "2": 442, "3": 33, "R": 23}, {"H": 1, "X": 350}),
    "slp14": (714, {"W": 321, "1": 188, "2": 126, "MT": 1, "3": 30, "4": 12, "R": 36},
              {"H": 6, "HA": 80, "X": 97, "OA": 1}),
    "slp16": (694, {"W": 316, "1": 108, "2": 181, "R": 65, "3": 22, "4": 2},
              {"H": 5, "HA": 64, "X": 224, "CA": 3, "CAA": 23}),
    "slp32": (640, {"W": 394, "1": 27, "2": 159, "3": 43, "4": 17},
              {"H": 1, "X": 105, "OA": 12}),
}
_RK_TO_AASM = {"W": "W", "1": "N1", "2": "N2", "3": "N3", "4": "N3", "R": "REM"}
_RESP_CODES = {"H", "HA", "OA", "X", "CA", "CAA"}


@pytest.mark.parametrize("name", sorted(SLPDB))
def test_slpdb_stages_and_events(slpdb_dir, name):
  n_epochs, raw_stages, resp_codes = SLPDB[name]
  ann = read_annotations(slpdb_dir / f"{name}.st")
  assert ann.n_epochs == n_epochs
  assert collections.Counter(ann.stage_raw) == raw_stages
  expected = dict.fromkeys(STAGES, 0)
  for token, count in raw_stages.items():
    if token in _RK_TO_AASM:
      expected[_RK_TO_AASM[token]] += count
  assert ann.stage_counts() == expected
  assert ann.excluded == ({"movement time": raw_stages["MT"]} if "MT" in raw_stages else {})
  resp = collections.Counter(e.raw for e in ann.events if e.kind in RESPIRATORY_KINDS)
  assert resp == resp_codes
  assert ann.respiratory_scored is True
  assert all(e.duration == 30.0 for e in ann.events)

  # SDB, checked against the aux notes directly: 1 exactly where the epoch's note has a code.
  with quiet_wfdb():
    import wfdb  # pylint: disable=import-outside-toplevel

    st = wfdb.rdann(str(slpdb_dir / name), "st")
  onsets = st.sample / st.fs
  idx = np.round((onsets - ann.epoch_onset) / 30.0).astype(int)
  expected_sdb = np.zeros(n_epochs, dtype=np.int8)
  for k, note in zip(idx, st.aux_note, strict=True):
    if _RESP_CODES & set(note.split()[1:]):
      expected_sdb[k] = 1
  np.testing.assert_array_equal(ann.sdb(), expected_sdb)


def test_slpdb_epoch_grid(slpdb_dir):
  # slp14 and slp16 start scoring 3 and 13 minutes into the record; the others at sample 1 (≈ 0).
  assert read_annotations(slpdb_dir / "slp14.st").epoch_onset == 180.0
  assert read_annotations(slpdb_dir / "slp16.st").epoch_onset == 780.0
  ann = read_annotations(slpdb_dir / "slp01a.st")
  assert ann.epoch_onset == 0.0
  kinds = collections.Counter(e.kind for e in ann.events)
  assert kinds == {"hypopnea": 38, "leg_movement": 214}


# --- stage and event vocabularies --------------------------------------------------------------


@pytest.mark.parametrize("label,code", [
    ("Sleep stage W", 0), ("Sleep stage 1", 1), ("Sleep stage 2", 2), ("Sleep stage 3", 3),
    ("Sleep stage 4", 3), ("Sleep stage R", 4), ("Sleep stage ?", -1), ("Movement time", -1),
    ("Sleep stage N1", 1), ("Sleep stage N2", 2), ("Sleep stage N3", 3), ("N1", 1), ("N3", 3),
    ("REM", 4), ("Wake", 0), ("W", 0), ("R", 4), ("MT", -1), ("sleep_stage_n2", 2),
    ("Stage 2 sleep|2", 2), ("REM sleep|5", 4), ("Unscored", -1),
    ("Obstructive apnea", None), ("Arousal", None), ("Lights off", None), ("", None),
])
def test_stage_code(label, code):
  assert stage_code(label) == code


@pytest.mark.parametrize("label,kind", [
    ("Obstructive apnea", "obstructive_apnea"), ("Obstructive Apnea", "obstructive_apnea"),
    ("Apnea Obstructive", "obstructive_apnea"), ("OSA", "obstructive_apnea"),
    ("Central apnea", "central_apnea"), ("Apnea Central", "central_apnea"),
    ("Mixed apnea", "mixed_apnea"), ("Apnea", "apnea"), ("Hypopnea", "hypopnea"),
    ("Obstructive Hypopnea", "hypopnea"), ("Arousal", "arousal"), ("EEG arousal", "arousal"),
    ("RERA", "arousal"), ("SpO2 desaturation", "desaturation"), ("Desaturation", "desaturation"),
    ("Limb movement", "leg_movement"), ("Lights off", "other"), ("Movement", "other"),
])
def test_event_kind(label, kind):
  assert event_kind(label) == kind


# --- CSV / TSV ---------------------------------------------------------------------------------

CSV = """\
# SYNTHETIC test annotations
# respiratory_scored: true
onset,duration,label
0,90,Sleep stage W
90,60,Sleep stage 1
150,120,Sleep stage N2
270,30,Sleep stage ?
300,30,Movement time
330,60,Sleep stage R
100,15,Obstructive apnea
175,30,Hypopnea
240,5,Arousal
395,10,Central apnea
"""


def test_csv_annotations(tmp_path):
  path = tmp_path / "a.csv"
  path.write_text(CSV)
  ann = read_annotations(path)
  np.testing.assert_array_equal(ann.stages, [0, 0, 0, 1, 1, 2, 2, 2, 2, -1, -1, 4, 4])
  assert ann.excluded == {"movement time": 1, "unscored '?'": 1}
  assert ann.respiratory_scored
  assert ann.events[0] == Event(100.0, 15.0, "obstructive_apnea", "Obstructive apnea")
  assert [e.kind for e in ann.events] == ["obstructive_apnea", "hypopnea", "arousal",
                                          "central_apnea"]
  # Apnea 100-115 -> epoch 3; hypopnea 175-205 -> epochs 5 and 6; arousal is not SDB; the central
  # apnea at 395 s lies after the last epoch (ends 390 s).
  np.testing.assert_array_equal(ann.sdb(), [0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0])
  assert ann.summary()["events"] == {"arousal": 1, "central_apnea": 1, "hypopnea": 1,
                                     "obstructive_apnea": 1}

  tsv = tmp_path / "a.tsv"
  tsv.write_text(CSV.replace(",", "\t"))
  ann2 = read_annotations(tsv)
  np.testing.assert_array_equal(ann2.stages, ann.stages)
  assert ann2.events == ann.events


def test_csv_respiratory_scored_flag(tmp_path):
  path = tmp_path / "b.csv"
  path.write_text("onset,duration,label\n0,60,Sleep stage W\n60,30,Sleep stage 2\n")
  ann = read_annotations(path)
  assert not ann.respiratory_scored and (ann.sdb() == -1).all()  # nothing says it was scored
  path.write_text("# respiratory_scored: true\n" + path.read_text())
  ann = read_annotations(path)
  assert ann.respiratory_scored and (ann.sdb() == 0).all()  # scored, and no event: a real 0
  path.write_text("# respiratory_scored: maybe\nonset,duration,label\n0,30,W\n")
  with pytest.raises(PSGError, match="line 1: respiratory_scored must be true or false"):
    read_annotations(path)


def test_csv_stage_markers_without_duration(tmp_path):
  path = tmp_path / "m.csv"
  path.write_text("onset,duration,label\n0,,W\n30,1,N1\n60,0,N2\n90,30,REM\n")
  np.testing.assert_array_equal(read_annotations(path).stages, [0, 1, 2, 4])


def test_csv_run_not_a_whole_number_of_epochs_is_reported(tmp_path):
  path = tmp_path / "r.csv"
  path.write_text("onset,duration,label\n0,45,Sleep stage W\n60,30,Sleep stage 2\n")
  ann = read_annotations(path)
  np.testing.assert_array_equal(ann.stages, [0, -1, 2])
  assert ann.issues == ["stage annotation 'Sleep stage W' at 0 s lasts 45 s, not a whole number "
                        "of 30-s epochs: 1 epoch(s) labelled"]


def test_csv_gaps_and_conflicts(tmp_path):
  path = tmp_path / "c.csv"
  path.write_text("onset,duration,label\n30,30,Sleep stage W\n90,60,Sleep stage 2\n"
                  "120,30,Sleep stage 3\n")
  ann = read_annotations(path)
  assert ann.epoch_onset == 30.0
  np.testing.assert_array_equal(ann.stages, [0, -1, 2, -1])
  assert ann.excluded == {"conflicting stage annotations": 1, "unscored (gap)": 1}


@pytest.mark.parametrize("text,message", [
    ("time,label\n0,W\n", "expected a header with onset, duration, label"),
    ("onset,duration,label\n0,30,Sleep stage W\nabc,30,W\n", "line 3: cannot parse"),
    ("onset,duration,label\n0,30,Sleep stage W\n45,30,Sleep stage 2\n", "not on the 30-s epoch"),
    ("onset,duration,label\n0,30,Arousal\n", "no sleep-stage annotations"),
    ("# only a comment\n", "empty annotation file"),
    ("onset,duration,label\n0,-30,W\n", "line 2: negative duration"),
])
def test_csv_errors(tmp_path, text, message):
  path = tmp_path / "bad.csv"
  path.write_text(text)
  with pytest.raises(PSGError, match=message) as info:
    read_annotations(path)
  assert str(info.value).startswith(f"{path}: ")


def test_unknown_annotation_format(tmp_path):
  with pytest.raises(PSGError, match="unknown annotation file extension"):
    read_annotations(tmp_path / "a.foo")
  with pytest.raises(PSGError, match="file not found"):
    read_annotations(tmp_path / "a.csv")


# --- EDF+ TAL (AASM-style labels and events) ---------------------------------------------------


def test_edf_plus_aasm_hypnogram_with_events(tmp_path):
  anns = [edfio.EdfAnnotation(o, d, t) for o, d, t in [
      (0.0, 60.0, "Sleep stage W"), (60.0, 30.0, "Sleep stage N1"), (90.0, 90.0, "Sleep stage N2"),
      (180.0, 30.0, "Sleep stage N3"), (210.0, 30.0, "Sleep stage R"),
      (95.0, 12.0, "Obstructive Apnea"), (150.0, 20.0, "Hypopnea"), (200.0, 3.0, "Arousal"),
      (205.0, 15.0, "SpO2 desaturation"), (10.0, None, "Lights off"),
  ]]
  edfio.Edf([], annotations=anns).write(tmp_path / "h-annotations.edf")
  ann = read_annotations(tmp_path / "h-annotations.edf")
  np.testing.assert_array_equal(ann.stages, [0, 0, 1, 2, 2, 2, 3, 4])
  assert ann.respiratory_scored
  assert collections.Counter(e.kind for e in ann.events) == {
      "obstructive_apnea": 1, "hypopnea": 1, "arousal": 1, "desaturation": 1, "other": 1}
  # apnea 95-107 -> epoch 3; hypopnea 150-170 -> epoch 5
  np.testing.assert_array_equal(ann.sdb(), [0, 0, 0, 1, 0, 1, 0, 0])
  assert ann.unknown == {"Lights off": 1}  # kind "other": counted, not mapped


def test_edf_annotation_file_errors(tmp_path):
  edfio.Edf([edfio.EdfSignal(np.zeros(10), 1.0, label="ECG")]).write(tmp_path / "x.edf")
  with pytest.raises(PSGError, match="no 'EDF Annotations' signal"):
    read_annotations(tmp_path / "x.edf")
  (tmp_path / "y.edf").write_bytes(b"")
  with pytest.raises(PSGError, match="empty file"):
    read_annotations(tmp_path / "y.edf")


# --- SDB labels and cropping -------------------------------------------------------------------


def test_sdb_labels_boundaries():
  ev = [
      Event(29.0, 2.0, "hypopnea", "H"),         # epochs 0 and 1
      Event(90.0, 30.0, "central_apnea", "CA"),  # exactly epoch 3, not epoch 4
      Event(150.0, 0.0, "mixed_apnea", "MA"),    # zero duration: the epoch holding its onset, 5
      Event(200.0, 60.0, "arousal", "A"),        # not respiratory
      Event(-40.0, 20.0, "apnea", "Apnea"),      # before epoch 0
      Event(400.0, 10.0, "apnea", "Apnea"),      # after the last epoch
  ]
  np.testing.assert_array_equal(sdb_labels(ev, 0.0, 8), [1, 1, 0, 1, 0, 1, 0, 0])
  np.testing.assert_array_equal(sdb_labels(ev, 10.0, 3), [1, 0, 1])  # grid shifted by 10 s
  np.testing.assert_array_equal(sdb_labels(ev, 0.0, 4, scored=False), [-1] * 4)
  assert sdb_labels(ev, 0.0, 8).dtype == np.int8


def test_crop_drops_events_past_the_end(tmp_path):
  path = tmp_path / "d.csv"
  path.write_text("onset,duration,label\n-30,150,Sleep stage 2\n120,60,Sleep stage ?\n"
                  "-10,20,Hypopnea\n85,30,Obstructive apnea\n130,5,Obstructive apnea\n")
  ann = read_annotations(path)
  assert ann.epoch_onset == -30.0 and ann.n_epochs == 7
  cropped, counts = crop_to_duration(ann, 100.0)
  # Kept: epochs starting at 0, 30, 60 (the one at -30 starts before the signal; 90 ends past it).
  assert cropped.epoch_onset == 0.0 and cropped.n_epochs == 3
  assert counts == {"Sleep stage 2": 2, "Sleep stage ?": 2, "event: Obstructive apnea": 1}
  assert cropped.events == [Event(0.0, 10.0, "hypopnea", "Hypopnea"),
                            Event(85.0, 15.0, "obstructive_apnea", "Obstructive apnea")]
  np.testing.assert_array_equal(cropped.sdb(), [1, 0, 1])
  empty, counts = crop_to_duration(ann, 10.0)
  assert empty.n_epochs == 0 and sum(v for k, v in counts.items() if "event" not in k) == 7
