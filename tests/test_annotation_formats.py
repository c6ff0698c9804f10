"""Annotation formats of the large cohorts: NSRR and Profusion XML (the real study in both formats,
and files written here in today's NSRR vocabulary), CinC-2018 `.arousal` and slpdb `.st` quirks
(files written with wfdb.wrann), and the bad input each must name."""

import collections
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import REPO, require_real_data

from sleepfm_jax.data.annotations import (
    ANNOTATION_FORMATS,
    RESPIRATORY_KINDS,
    annotation_format,
    read_annotations,
)
from sleepfm_jax.data.errors import PSGError
from sleepfm_jax.data.wfdb_io import wfdb  # imported there with its pandas warnings silenced

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")

NSRR_REAL = REPO.parent / "shared" / "data" / "annotations-real" / "nsrr-translator"


@pytest.fixture(scope="module")
def study():
  """The real study 100022: (Profusion annotations, NSRR translator annotations)."""
  d = require_real_data(NSRR_REAL)
  return read_annotations(d / "100022.xml"), read_annotations(d / "100022_Compumedics.xml")


def test_formats_are_found_by_module():
  assert set(ANNOTATION_FORMATS) == {"csv", "edf", "wfdb", "nsrr-xml", "profusion-xml",
                                     "cinc-arousal"}


# --- the real study, both formats --------------------------------------------------------------


def test_profusion_real(study):
  ann, _ = study
  assert annotation_format(NSRR_REAL / "100022.xml") == "profusion-xml"
  assert ann.epoch_onset == 0.0 and ann.n_epochs == 1051
  assert ann.stage_counts() == {"W": 171, "N1": 61, "N2": 571, "N3": 119, "REM": 129}
  assert collections.Counter(ann.stage_raw) == {
      "Wake|0": 171, "Stage 1 sleep|1": 61, "Stage 2 sleep|2": 571, "Stage 3 sleep|3": 119,
      "REM sleep|5": 129}
  assert ann.excluded == {} and ann.unknown == {} and ann.issues == []
  assert collections.Counter(e.raw for e in ann.events) == {
      "Hypopnea": 175, "Arousal ()": 142, "SpO2 desaturation": 125, "Obstructive Apnea": 23,
      "SpO2 artifact": 16}
  assert collections.Counter(e.kind for e in ann.events) == {
      "hypopnea": 175, "arousal": 142, "desaturation": 125, "obstructive_apnea": 23, "other": 16}
  assert ann.respiratory_scored
  # The stage integers, counted straight from the XML.
  root = ET.parse(NSRR_REAL / "100022.xml").getroot()
  raw = [s.text for s in root.iter("SleepStage")]
  np.testing.assert_array_equal(ann.stages, [{"0": 0, "1": 1, "2": 2, "3": 3, "5": 4}[v]
                                             for v in raw])


def test_nsrr_sdo_real(study):
  _, ann = study
  assert annotation_format(NSRR_REAL / "100022_Compumedics.xml") == "nsrr-xml"
  assert ann.epoch_onset == 0.0 and ann.n_epochs == 1050
  assert ann.stage_counts() == {"W": 170, "N1": 61, "N2": 571, "N3": 119, "REM": 129}
  assert ann.excluded == {} and ann.unknown == {} and ann.issues == []
  assert collections.Counter(e.raw for e in ann.events) == {
      "SDO:HypopneaFinding": 175, "SDO:SleepArousalFinding": 142,
      "SDO:HemoglobinOxygenDesaturationFinding": 125, "SDO:ObstructiveApneaFinding": 23,
      "Oximetry Artifact Event": 16}  # "Recording Start Time" is not an event
  root = ET.parse(NSRR_REAL / "100022_Compumedics.xml").getroot()
  runs = [e for e in root.iter("ScoredEvent") if e.findtext("EventConcept").startswith(
      ("SDO:WakeState", "SDO:NonRapidEyeMovementSleep", "SDO:RapidEyeMovementSleep"))]
  assert len(runs) == 240 and sum(float(e.findtext("Duration")) for e in runs) == 1050 * 30


def test_the_two_formats_agree(study):
  prof, nsrr = study
  # Same stages epoch for epoch, one epoch apart: this early translator counted the first
  # <SleepStage> out of its first run (the run is one epoch short and every later run starts
  # 30 s early; CompumedicsTranslatorFactory.parseStaging at the file's source commit).
  np.testing.assert_array_equal(nsrr.stages, prof.stages[1:])
  assert np.count_nonzero(nsrr.stages != prof.stages[:1050]) == 239  # compared by time
  # Events are in the same time base and identical.
  key = lambda a, kinds: [(e.onset, e.duration, e.kind) for e in a.events if e.kind in kinds]
  assert key(nsrr, RESPIRATORY_KINDS) == key(prof, RESPIRATORY_KINDS)
  assert len(key(prof, RESPIRATORY_KINDS)) == 198
  for kinds in ({"arousal"}, {"desaturation"}, {"other"}):
    assert key(nsrr, kinds) == key(prof, kinds)
  np.testing.assert_array_equal(nsrr.sdb(), prof.sdb()[:1050])
  assert int(np.count_nonzero(prof.sdb() == 1)) == 327


# --- NSRR XML as cohorts ship it today (name|code), written here --------------------------------

_NSRR_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n<PSGAnnotation>\n'
              "<SoftwareVersion>x</SoftwareVersion>\n")


def _nsrr_xml(events, epoch_length="30"):
  rows = [_NSRR_HEAD, f"<EpochLength>{epoch_length}</EpochLength>\n<ScoredEvents>\n"]
  for etype, concept, start, duration in events:
    t = f"<EventType>{etype}</EventType>" if etype else ""
    rows.append(f"<ScoredEvent>{t}<EventConcept>{concept}</EventConcept><Start>{start}</Start>"
                f"<Duration>{duration}</Duration></ScoredEvent>\n")
  rows.append("</ScoredEvents>\n</PSGAnnotation>\n")
  return "".join(rows)


STAGES = "Stages|Stages"
TODAY = [
    ("", "Recording Start Time", 0, 600),
    (STAGES, "Wake|0", 0, 60), (STAGES, "Stage 1 sleep|1", 60, 30),
    (STAGES, "Stage 2 sleep|2", 90, 90), (STAGES, "Stage 3 sleep|3", 180, 30),
    (STAGES, "Stage 4 sleep|4", 210, 60), (STAGES, "REM sleep|5", 270, 60),
    (STAGES, "Movement|6", 330, 30), (STAGES, "Unscored|9", 360, 30),
    (STAGES, "Artifact|10", 390, 30), (STAGES, "Wake|0", 420, 30),
    ("Respiratory|Respiratory", "Obstructive apnea|Obstructive Apnea", 95.5, 12.2),
    ("Respiratory|Respiratory", "Hypopnea|Hypopnea", 150, 20),
    ("Respiratory|Respiratory", "Central apnea|Central Apnea", 215, 11),
    ("Respiratory|Respiratory", "Mixed apnea|Mixed Apnea", 280, 14),
    ("Respiratory|Respiratory", "SpO2 desaturation|SpO2 desaturation", 160, 25),
    ("Respiratory|Respiratory", "SpO2 artifact|SpO2 artifact", 10, 5),
    ("Arousals|Arousals", "Arousal|Arousal ()", 170, 6),
    ("Arousals|Arousals", "ASDA arousal|Arousal (ASDA)", 300, 4),
    ("Limb Movement|Limb Movement", "Limb movement - left|Limb Movement (Left)", 40, 2),
    ("Neurological|Neurological", "Bruxism|Bruxism", 100, 3),
]


def test_nsrr_today_vocabulary(tmp_path):
  path = tmp_path / "shhs1-200001-nsrr.xml"
  path.write_text(_nsrr_xml(TODAY))
  ann = read_annotations(path)
  np.testing.assert_array_equal(ann.stages, [0, 0, 1, 2, 2, 2, 3, 3, 3, 4, 4, -1, -1, -1, 0])
  assert ann.excluded == {"artifact": 1, "movement time": 1, "unscored": 1}
  assert collections.Counter(e.kind for e in ann.events) == {
      "obstructive_apnea": 1, "hypopnea": 1, "central_apnea": 1, "mixed_apnea": 1,
      "desaturation": 1, "arousal": 2, "leg_movement": 1, "other": 2}
  assert ann.unknown == {"Bruxism|Bruxism": 1}  # counted, kept as "other", never guessed
  bruxism = [e for e in ann.events if e.raw == "Bruxism|Bruxism"]
  assert bruxism[0].kind == "other"
  assert ann.respiratory_scored
  # apnea 95.5-107.7 -> epoch 3; hypopnea 150-170 -> 5; central 215-226 -> 7; mixed 280-294 -> 9
  np.testing.assert_array_equal(ann.sdb(), [0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0])
  assert ann.summary()["unknown"] == {"Bruxism|Bruxism": 1}


def test_nsrr_unknown_stage_concept_leaves_a_gap(tmp_path):
  path = tmp_path / "x.xml"
  path.write_text(_nsrr_xml([(STAGES, "Wake|0", 0, 30), (STAGES, "Stage 5 sleep|7", 30, 30),
                             (STAGES, "REM sleep|5", 60, 30)]))
  ann = read_annotations(path)
  np.testing.assert_array_equal(ann.stages, [0, -1, 4])
  assert ann.excluded == {"unscored (gap)": 1} and ann.unknown == {"Stage 5 sleep|7": 1}
  assert ann.issues == ["line 7: unknown stage concept 'Stage 5 sleep|7': its epochs are left "
                        "unscored"]
  assert not ann.respiratory_scored and (ann.sdb() == -1).all()


def _line_of(text, needle):
  return text[:text.index(needle)].count("\n") + 1


@pytest.mark.parametrize("events,epoch_length,needle,message", [
    ([(STAGES, "Wake|0", 0, 45)], "30", "Wake|0",
     "stage annotation 'Wake|0' at 0 s lasts 45 s, not a whole number of 30-s epochs"),
    ([(STAGES, "Wake|0", 0, 30), (STAGES, "REM sleep|5", 40, 30)], "30", "REM",
     "stage annotation 'REM sleep|5' at 40 s is not on the 30-s epoch grid"),
    ([(STAGES, "Wake|0", 0, 30)], "20", "<EpochLength>",
     "<EpochLength> is 20 s; these annotations are read on 30-s epochs"),
    ([(STAGES, "Wake|0", "abc", 30)], "30", "Wake|0", "<Start> is not a number: 'abc'"),
    ([(STAGES, "Wake|0", 0, -30)], "30", "Wake|0", "negative <Duration> -30"),
])
def test_nsrr_bad_input_names_the_line(tmp_path, events, epoch_length, needle, message):
  path = tmp_path / "bad.xml"
  text = _nsrr_xml(events, epoch_length)
  path.write_text(text)
  with pytest.raises(PSGError) as info:
    read_annotations(path)
  line = _line_of(text, f"<ScoredEvent><EventType>{STAGES}</EventType><EventConcept>{needle}"
                  if needle != "<EpochLength>" else needle)
  assert str(info.value).startswith(f"{path}: line {line}: {message}")


def test_overlapping_stage_runs_are_reported(tmp_path):
  path = tmp_path / "o.xml"
  path.write_text(_nsrr_xml([(STAGES, "Wake|0", 0, 90), (STAGES, "Stage 2 sleep|2", 60, 60),
                             (STAGES, "Stage 2 sleep|2", 90, 30)]))
  ann = read_annotations(path)
  np.testing.assert_array_equal(ann.stages, [0, 0, -1, 2])
  assert ann.excluded == {"conflicting stage annotations": 1}
  assert ann.issues == [
      "stage annotations 'Wake|0' (line 6) and 'Stage 2 sleep|2' (line 7) overlap on 1 epoch(s) "
      "from 60 s (conflicting stages: those epochs are excluded)",
      "stage annotations 'Stage 2 sleep|2' (line 7) and 'Stage 2 sleep|2' (line 8) overlap on 1 "
      "epoch(s) from 90 s (same stage: kept)"]


def test_malformed_and_unknown_xml(tmp_path):
  path = tmp_path / "cut.xml"
  text = _nsrr_xml(TODAY)
  path.write_text(text[: text.index("<Start>95.5")])  # cut inside an event
  with pytest.raises(PSGError, match=r"cut.xml: malformed XML at line 17, column \d+: "
                     "no element found"):
    read_annotations(path)
  other = tmp_path / "other.xml"
  other.write_text("<?xml version='1.0'?>\n<Something><EpochLength>30</EpochLength></Something>")
  with pytest.raises(PSGError, match="content matches none of the annotation formats of its "
                     r"extension \(nsrr-xml, profusion-xml\)"):
    read_annotations(other)
  with pytest.raises(PSGError, match="root element is <Something>, not <CMPStudyConfig>"):
    read_annotations(other, fmt="profusion-xml")


def test_profusion_written(tmp_path):
  path = tmp_path / "p.xml"
  stages = [0, 0, 1, 2, 3, 4, 5, 6, 9, 10, 7, 0]
  path.write_text(
      "<CMPStudyConfig>\n<EpochLength>30</EpochLength>\n<ScoredEvents>\n"
      "<ScoredEvent><Name>Obstructive Apnea</Name><Start>31.5</Start><Duration>12</Duration>"
      "</ScoredEvent>\n<ScoredEvent><Name>Mystery Event</Name><Start>100</Start>"
      "<Duration>2</Duration></ScoredEvent>\n</ScoredEvents>\n<SleepStages>\n"
      + "".join(f"<SleepStage>{s}</SleepStage>\n" for s in stages)
      + "</SleepStages>\n</CMPStudyConfig>\n")
  ann = read_annotations(path)
  np.testing.assert_array_equal(ann.stages, [0, 0, 1, 2, 3, 3, 4, -1, -1, -1, -1, 0])
  assert ann.excluded == {"artifact": 1, "movement time": 1, "unscored": 1, "unscored (gap)": 1}
  assert ann.unknown == {"Mystery Event": 1, "SleepStage 7": 1}
  assert ann.issues == ["line 18 (epoch 10): unknown stage value '7': the epoch is left unscored"]
  np.testing.assert_array_equal(ann.sdb(), [0, 1] + [0] * 10)


# --- CinC-2018 .arousal (WFDB) -----------------------------------------------------------------

FS = 200


def _cinc(tmp_path, notes, seconds=300, name="tr03-0005"):
  """Writes a 2-channel record and its .arousal file; returns the .arousal path."""
  wfdb.wrsamp(name, fs=FS, units=["uV", "mV"], sig_name=["C3-M2", "ECG"],
              p_signal=np.zeros((FS * seconds, 2)), fmt=["16", "16"], write_dir=str(tmp_path))
  sample = np.array([int(round(t * FS)) for t, _ in notes])
  wfdb.wrann(name, "arousal", sample, symbol=['"'] * len(notes),
             aux_note=[n for _, n in notes], fs=FS, write_dir=str(tmp_path))
  return tmp_path / f"{name}.arousal"


CINC = [(0, "W"), (60, "N1"), (90, "N2"), (95, "(resp_obstructiveapnea"),
        (112, "resp_obstructiveapnea)"), (150, "(resp_hypopnea"), (155, "(arousal_rera"),
        (168, "resp_hypopnea)"), (170, "arousal_rera)"), (180, "N3"), (240, "R"),
        (245, "(resp_partialobstructive"), (262, "resp_partialobstructive)"), (250, "(mystery"),
        (251, "mystery)"), (270, "W")]


def test_cinc_arousal(tmp_path):
  path = _cinc(tmp_path, sorted(CINC), seconds=315)
  assert annotation_format(path) == "cinc-arousal"
  ann = read_annotations(path)
  # The W at sample 0 holds for two epochs (wfdb.rdann drops notes at sample 0; not this reader).
  assert "W" not in wfdb.rdann(str(tmp_path / "tr03-0005"), "arousal").aux_note[:1]
  np.testing.assert_array_equal(ann.stages, [0, 0, 1, 2, 2, 2, 3, 3, 4, 0])
  assert [(e.onset, e.duration, e.kind, e.raw) for e in ann.events] == [
      (95.0, 17.0, "obstructive_apnea", "resp_obstructiveapnea"),
      (150.0, 18.0, "hypopnea", "resp_hypopnea"), (155.0, 15.0, "arousal", "arousal_rera"),
      (245.0, 17.0, "hypopnea", "resp_partialobstructive"), (250.0, 1.0, "other", "mystery")]
  assert ann.unknown == {"mystery": 1}
  # The last W runs from 270 s to the record's end at 315 s: one whole epoch, 15 s left over.
  assert ann.issues == ["annotation 16 (sample 54000): the last stage 'W' ends with the record "
                        "at 315 s; its trailing 15 s are not an epoch"]
  np.testing.assert_array_equal(ann.sdb(), [0, 0, 0, 1, 0, 1, 0, 0, 1, 0])


@pytest.mark.parametrize("notes,message", [
    ([(0, "W"), (30, "(resp_hypopnea"), (60, "N2")],
     "annotation 2 (sample 6000, 30 s): '(resp_hypopnea' is never closed (no 'resp_hypopnea)')"),
    ([(0, "W"), (30, "resp_hypopnea)"), (60, "N2")],
     "annotation 2 (sample 6000, 30 s): 'resp_hypopnea)' closes an event that was never opened"),
    ([(0, "W"), (45, "N2")],
     "annotation 1 (sample 0): stage annotation 'W' at 0 s lasts 45 s, not a whole number"),
    ([(30, "(resp_hypopnea"), (40, "resp_hypopnea)")], "no sleep-stage annotations"),
])
def test_cinc_bad_input(tmp_path, notes, message):
  path = _cinc(tmp_path, notes)
  with pytest.raises(PSGError) as info:
    read_annotations(path)
  assert str(info.value).startswith(f"{path}: {message}")


def test_cinc_needs_the_header(tmp_path):
  path = _cinc(tmp_path, [(0, "W"), (30, "N1")])
  (tmp_path / "tr03-0005.hea").unlink()
  with pytest.raises(PSGError, match="no .hea beside the file: the last stage holds until"):
    read_annotations(path)


# --- slpdb .st quirks ------------------------------------------------------------------------


def _st(tmp_path, name, notes):
  sample = 1 + 7500 * np.arange(len(notes))
  wfdb.wrann(name, "st", sample, symbol=['"'] * len(notes), aux_note=notes, fs=250,
             write_dir=str(tmp_path))
  return tmp_path / f"{name}.st"


def test_st_nul_padded_notes(tmp_path):
  path = _st(tmp_path, "slp37", ["W\x00", "2 H\x00\x00", "R OA\x00", "3 ZZ\x00", "4"])
  ann = read_annotations(path)
  np.testing.assert_array_equal(ann.stages, [0, 2, 4, 3, 3])
  assert [(e.kind, e.raw) for e in ann.events] == [
      ("hypopnea", "H"), ("obstructive_apnea", "OA"), ("other", "ZZ")]
  assert ann.unknown == {"ZZ": 1} and ann.respiratory_scored and ann.issues == []
  np.testing.assert_array_equal(ann.sdb(), [0, 1, 1, 0, 0])


def test_st_without_respiratory_codes_is_unscored(tmp_path):
  path = _st(tmp_path, "slp66", ["W", "1 L", "2 LA", "2", "R A"])
  ann = read_annotations(path)
  assert ann.stage_counts() == {"W": 1, "N1": 1, "N2": 2, "N3": 0, "REM": 1}
  assert not ann.respiratory_scored and (ann.sdb() == -1).all()
  assert ann.issues == ["stages but no respiratory event code (H HA OA X CA CAA) in any note: "
                        "respiratory events count as not scored (SDB labels -1); set "
                        "sdb_scored_for to override"]
