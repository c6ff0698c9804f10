"""Cohort presets and layouts: documented channel labels resolve, NSRR and CinC-2018 folder layouts
are discovered and preprocessed (files written here), and respiratory scoring can be overridden."""

import edfio
import numpy as np
import pytest

from sleepfm_jax.configs import preprocess as preprocess_configs
from sleepfm_jax.data import cohorts
from sleepfm_jax.data import preprocess as pp
from sleepfm_jax.data.channels import CANONICAL, MODALITIES, Montage, harmonise
from sleepfm_jax.data.discovery import RecordingSpec, discover
from sleepfm_jax.data.recording import ChannelInfo
from sleepfm_jax.data.store import WindowStore
from sleepfm_jax.data.wfdb_io import wfdb  # imported there with its pandas warnings silenced

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")

EVERY_SLOT = Montage(**{m: tuple(n for n, (mod, _) in CANONICAL.items() if mod == m)
                        for m in MODALITIES})

# EDF labels as each cohort's montage documentation lists them → the slot they fill.
DOCUMENTED = {
    "shhs": {"SaO2": "SpO2", "H.R.": None, "EEG(sec)": "C3-M2", "ECG": "ECG", "EMG": "Chin",
             "EOG(L)": "E1-M2", "EOG(R)": "E2-M1", "EEG": "C4-M1", "THOR RES": "Thorax",
             "ABDO RES": "Abdomen", "POSITION": None, "LIGHT": None, "NEW AIR": "Airflow",
             "OX STAT": None},
    "mesa": {"EKG": "ECG", "E1": "E1-M2", "E2": "E2-M1", "Chin": "Chin", "EEG1": None,
             "EEG2": None, "EEG3": "C4-M1", "Flow": "NasalPressure", "Snore": None,
             "Thor": "Thorax", "Abdo": "Abdomen", "Leg": None, "Aux_AC": "Airflow", "Pos": None,
             "Pleth": None, "OxStatus": None, "SpO2": "SpO2", "HR": None},
    "mros": {"C3": None, "C4": None, "A1": None, "A2": None, "LOC": "E1-M2", "ROC": "E2-M1",
             "ECG L": None, "ECG R": None, "L Chin": None, "R Chin": None, "Airflow": "Airflow",
             "SUM": None, "Thoracic": "Thorax", "Abdominal": "Abdomen", "SAO2": "SpO2",
             "Cannula Flow": "NasalPressure", "Position": None},
    "cfs": {"C3": "C3-M2", "C4": "C4-M1", "LOC": "E1-M2", "ROC": "E2-M1", "ECG1": "ECG",
            "EMG1": "Chin", "Airflow": "Airflow", "Thor Effort": "Thorax",
            "Abdo Effort": "Abdomen", "SpO2": "SpO2", "Nasal Pres": "NasalPressure"},
    "chat": {"F3": "F3-M2", "F4": "F4-M1", "C3": "C3-M2", "C4": "C4-M1", "O1": "O1-M2",
             "O2": "O2-M1", "E1": "E1-M2", "E2": "E2-M1", "Lchin": "Chin", "ECG1": "ECG",
             "Airflow": "Airflow", "Cannula Flow": "NasalPressure", "Chest": "Thorax",
             "ABD": "Abdomen", "SpO2": "SpO2", "EtCO2": None},
    "ccshs": {"C3": None, "C4": None, "LOC": "E1-M2", "ROC": "E2-M1", "ABDO EFFORT": "Abdomen",
              "THOR EFFORT": "Thorax", "SpO2": "SpO2", "AIRFLOW": "Airflow",
              "NASAL PRES": "NasalPressure", "PULSE": None},
    "cinc2018": {"F3-M2": "F3-M2", "F4-M1": "F4-M1", "C3-M2": "C3-M2", "C4-M1": "C4-M1",
                 "O1-M2": "O1-M2", "O2-M1": "O2-M1", "E1-M2": "E1-M2", "Chin1-Chin2": "Chin",
                 "ABD": "Abdomen", "CHEST": "Thorax", "AIRFLOW": "Airflow", "SaO2": "SpO2",
                 "ECG": "ECG"},
    "sleepedf": {"EEG Fpz-Cz": "Fpz-Cz", "EEG Pz-Oz": "Pz-Oz", "EOG horizontal": "EOG",
                 "Resp oro-nasal": "Airflow", "EMG submental": "Chin", "Temp rectal": None},
    "slpdb": {"ECG": "ECG", "BP": None, "EEG (C4-A1)": "C4-M1", "EEG (O2-A1)": "O2-M1",
              "EEG (C3-O1)": None, "Resp (nasal)": "Airflow", "Resp (chest)": "Thorax",
              "Resp (sum)": None, "EOG": "EOG", "EMG": "Chin"},
}


@pytest.mark.parametrize("cohort", sorted(DOCUMENTED))
def test_documented_labels_resolve(cohort):
  labels = list(DOCUMENTED[cohort])
  cmap = harmonise(labels, EVERY_SLOT, cohorts.merged_aliases(cohort, None))
  assert {lab: cmap.canonical.get(lab) for lab in labels} == DOCUMENTED[cohort]
  assert set(cohorts.PRESETS) == set(DOCUMENTED)


def test_rate_unit_and_rereference_notes():
  infos = [ChannelInfo("EEG", 125.0, "uV", 1), ChannelInfo("EEG(sec)", 100.0, "uV", 1),
           ChannelInfo("ECG", 250.0, "uV", 1), ChannelInfo("SaO2", 1.0, "%", 1)]
  cmap = harmonise([i.label for i in infos], EVERY_SLOT, cohorts.merged_aliases("shhs", None))
  assert cohorts.check("shhs", infos, cmap) == [
      "EEG(sec) (C3-M2): 100 Hz; the shhs preset expects 125 or 128 Hz",
      "ECG (ECG): unit 'uV'; the shhs preset expects 'mV' (not converted)"]
  mros = [ChannelInfo("C3", 256.0, "uV", 1), ChannelInfo("LOC", 256.0, "µV", 1)]
  cmap = harmonise(["C3", "LOC"], EVERY_SLOT, cohorts.merged_aliases("mros", None))
  assert cohorts.check("mros", mros, cmap) == [
      "C3: recorded against Fpz: C3-M2 = C3 - A2; not aliased (needs re-referencing)"]
  chat = [ChannelInfo("C3", 128.0, "uV", 1)]
  cmap = harmonise(["C3"], EVERY_SLOT, cohorts.merged_aliases("chat", {"C3": "C4-M1"}))
  assert cmap.canonical == {"C3": "C4-M1"}  # the user's alias wins over the preset's
  assert cohorts.check("chat", chat, cmap) == [
      "C3 (C4-M1): 128 Hz, below the chat minimum of 200 Hz"]
  with pytest.raises(ValueError, match="unknown cohort preset 'nope'"):
    pp.PreprocessConfig(cohort="nope")


def test_subject_ids_join_visits():
  assert [cohorts.subject_id(r) for r in ("shhs1-200001", "shhs2-200001", "mros-visit2-aa0001",
                                          "chat-followup-300004", "mesa-sleep-0001")] == [
      "shhs-200001", "shhs-200001", "mros-aa0001", "chat-300004", None]


# --- the NSRR layout, end to end ----------------------------------------------------------------

SHHS_CHANNELS = [  # label, Hz, unit (SHHS1 montage; EMG deliberately in mV, EOG(R) at 100 Hz)
    ("SaO2", 1, "%"), ("H.R.", 1, "bpm"), ("EEG(sec)", 125, "uV"), ("ECG", 125, "mV"),
    ("EMG", 125, "mV"), ("EOG(L)", 50, "uV"), ("EOG(R)", 100, "uV"), ("EEG", 125, "uV"),
    ("THOR RES", 10, ""), ("ABDO RES", 10, ""), ("NEW AIR", 10, ""), ("OX STAT", 1, "")]
NSRR_STAGES = [("Wake|0", 0, 90), ("Stage 1 sleep|1", 90, 30), ("Stage 2 sleep|2", 120, 120),
               ("Stage 3 sleep|3", 240, 60), ("REM sleep|5", 300, 60), ("Unscored|9", 360, 30),
               ("Wake|0", 390, 240)]  # the last run ends 30 s past the 600-s signal


def _shhs_edf(path, seconds=600, seed=0):
  rng = np.random.default_rng(seed)
  path.parent.mkdir(parents=True, exist_ok=True)
  edfio.Edf([edfio.EdfSignal(rng.standard_normal(int(fs * seconds)) * 20 + (95 if u == "%" else 0),
                             fs, label=lab, physical_dimension=u)
             for lab, fs, u in SHHS_CHANNELS]).write(path)


def _nsrr(path):
  ev = [("Stages|Stages", c, s, d) for c, s, d in NSRR_STAGES] + [
      ("Respiratory|Respiratory", "Obstructive apnea|Obstructive Apnea", 130, 15),
      ("Respiratory|Respiratory", "Hypopnea|Hypopnea", 305, 20),
      ("Arousals|Arousals", "Arousal|Arousal ()", 320, 5),
      ("Neurological|Neurological", "Bruxism|Bruxism", 200, 3)]
  body = "".join(f"<ScoredEvent><EventType>{t}</EventType><EventConcept>{c}</EventConcept>"
                 f"<Start>{s}</Start><Duration>{d}</Duration></ScoredEvent>\n" for t, c, s, d in ev)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("<PSGAnnotation><EpochLength>30</EpochLength><ScoredEvents>\n" + body
                  + "</ScoredEvents></PSGAnnotation>\n")


def _profusion(path, stages=(0, 0, 1, 2, 2, 2, 3, 3, 5, 5, 0, 0)):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("<CMPStudyConfig><EpochLength>30</EpochLength><ScoredEvents>"
                  "<ScoredEvent><Name>Central Apnea</Name><Start>100</Start><Duration>12</Duration>"
                  "</ScoredEvent></ScoredEvents><SleepStages>"
                  + "".join(f"<SleepStage>{s}</SleepStage>" for s in stages)
                  + "</SleepStages></CMPStudyConfig>")


@pytest.fixture(scope="module")
def nsrr_tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("shhs") / "polysomnography"
  for visit in ("shhs1", "shhs2"):
    _shhs_edf(root / "edfs" / visit / f"{visit}-200001.edf", seed=len(visit))
    _profusion(root / "annotations-events-profusion" / visit / f"{visit}-200001-profusion.xml")
  _nsrr(root / "annotations-events-nsrr" / "shhs1" / "shhs1-200001-nsrr.xml")
  return root


def test_nsrr_layout_discovery(nsrr_tree):
  for where in (nsrr_tree, nsrr_tree / "edfs"):  # the whole tree, or the signal folder only
    specs, unpaired = discover(where)
    got = {s.recording_id: (s.subject_id, s.annotation_path[len(str(nsrr_tree)) + 1:])
           for s in specs}
    assert got == {
        "shhs1-200001": ("shhs-200001", "annotations-events-nsrr/shhs1/shhs1-200001-nsrr.xml"),
        "shhs2-200001": ("shhs-200001",
                         "annotations-events-profusion/shhs2/shhs2-200001-profusion.xml")}
    prof = nsrr_tree / "annotations-events-profusion/shhs1/shhs1-200001-profusion.xml"
    assert unpaired == [(str(prof), (
        f"alternate annotation file not used: {nsrr_tree}/annotations-events-nsrr/shhs1/"
        f"shhs1-200001-nsrr.xml was preferred for {nsrr_tree}/edfs/shhs1/shhs1-200001.edf "
        "(NSRR XML is preferred over Profusion XML)"))]


def test_nsrr_layout_preprocessed_with_the_shhs_preset(nsrr_tree, tmp_path):
  specs, unpaired = discover(nsrr_tree)
  cfg = {"cohort": "shhs", "sample_rate": 32, "dtype": "float32"}
  report = pp.preprocess(specs, tmp_path / "store", cfg, unpaired=unpaired, progress=False)
  assert report["files"] == {"total": 2, "ok": 2, "skipped": 0, "unpaired": 0,
                             "alternate_annotations": 1}
  r1, r2 = report["recordings"]
  assert r1["missing_channels"] == {"bas": ["O1-M2", "O2-M1"]}
  st = WindowStore(tmp_path / "store")
  cmap = st.recordings[0]["channel_map"]["assignments"]
  assert cmap == {"bas": ["EEG(sec)", "EEG", None, None, "EOG(L)", "EOG(R)", "EMG"],
                  "ecg": ["ECG"], "resp": ["NEW AIR", "THOR RES", "ABDO RES", "SaO2"]}
  assert "EMG (Chin): unit 'mV'; the shhs preset expects 'uV' (not converted)" in r1["notes"]
  assert "EOG(R) (E2-M1): 100 Hz; the shhs preset expects 50 or 64 Hz" in r1["notes"]
  assert ("shhs1-200001-nsrr.xml: 1 annotated epoch(s) and 0 event(s) lie outside the signal "
          "(0 to 600 s): not used") in r1["notes"]
  # NSRR: W W W N1 N2 N2 N2 N2 N3 N3 REM REM ? W W W W W W W (+1 cropped) → 19 windows, 1 excluded.
  b = st.get_batch(st.indices_for_recording("shhs1-200001"))
  np.testing.assert_array_equal(b["stage"], [0, 0, 0, 1, 2, 2, 2, 2, 3, 3, 4, 4] + [0] * 7)
  np.testing.assert_array_equal(np.flatnonzero(b["sdb"] == 1), [4, 10])
  assert r1["excluded"] == {"cropped past signal end": 1, "unscored": 1}
  assert report["unknown_annotations"] == {"Bruxism|Bruxism": 1}
  b2 = st.get_batch(st.indices_for_recording("shhs2-200001"))  # Profusion: 12 epochs
  np.testing.assert_array_equal(b2["stage"], [0, 0, 1, 2, 2, 2, 3, 3, 4, 4, 0, 0])
  np.testing.assert_array_equal(np.flatnonzero(b2["sdb"] == 1), [3])
  assert report["respiratory_unscored"] == []
  summary = pp.format_summary(report)
  assert "1 Profusion XML file(s) not used: the recording's NSRR XML is preferred" in summary
  assert "unknown annotation labels (kept as 'other', never mapped): 'Bruxism|Bruxism' 1" in summary


# --- CinC-2018, the released SleepFM's channels -----------------------------------------------

CINC = [("F3-M2", "uV"), ("F4-M1", "uV"), ("C3-M2", "uV"), ("C4-M1", "uV"), ("O1-M2", "uV"),
        ("O2-M1", "uV"), ("E1-M2", "uV"), ("Chin1-Chin2", "uV"), ("ABD", "uV"), ("CHEST", "uV"),
        ("AIRFLOW", "uV"), ("SaO2", "%"), ("ECG", "mV")]


def test_cinc_layout_with_the_paper_montage(tmp_path):
  rec = tmp_path / "training" / "tr03-0005"
  rec.mkdir(parents=True)
  fs, seconds = 200, 330
  rng = np.random.default_rng(1)
  wfdb.wrsamp("tr03-0005", fs=fs, units=[u for _, u in CINC], sig_name=[n for n, _ in CINC],
              p_signal=rng.standard_normal((fs * seconds, len(CINC))) * 10 + 50,
              fmt=["16"] * len(CINC), write_dir=str(rec))
  # As PhysioNet ships it: signals in a .mat (a 24-byte MATLAB v4 header, then format 16) and the
  # challenge's own -arousal.mat beside the WFDB .arousal file (not read).
  (rec / "tr03-0005.mat").write_bytes(b"\0" * 24 + (rec / "tr03-0005.dat").read_bytes())
  (rec / "tr03-0005.dat").unlink()
  hea = rec / "tr03-0005.hea"
  hea.write_text(hea.read_text().replace("tr03-0005.dat 16 ", "tr03-0005.mat 16+24 "))
  (rec / "tr03-0005-arousal.mat").write_bytes(b"\0" * 64)
  notes = [(10, "W"), (70, "N2"), (100, "(resp_obstructiveapnea"), (115, "resp_obstructiveapnea)"),
           (130, "N3"), (190, "R"), (250, "W")]
  wfdb.wrann("tr03-0005", "arousal", np.array([t * fs for t, _ in notes]), ['"'] * len(notes),
             aux_note=[n for _, n in notes], fs=fs, write_dir=str(rec))
  specs, unpaired = discover(tmp_path / "training")
  assert specs == [RecordingSpec("tr03-0005", "tr03-0005", str(rec / "tr03-0005.hea"),
                                 str(rec / "tr03-0005.arousal"))] and unpaired == []
  cfg = {**preprocess_configs.get_config("cinc2018").to_dict(), "sample_rate": 32}
  assert cfg["montage"] == "paper" and cfg["cohort"] == "cinc2018"
  report = pp.preprocess(specs, tmp_path / "store", cfg, progress=False)
  r = report["recordings"][0]
  assert r["status"] == "ok" and [n for n in r["notes"] if "preset" in n] == []
  st = WindowStore(tmp_path / "store")
  assert st.recordings[0]["channel_map"]["assignments"] == {
      "bas": ["C3-M2", "C4-M1", "O1-M2", "O2-M1", "E1-M2"], "ecg": ["ECG"],
      "resp": ["CHEST", "SaO2", "ABD"]}
  b = st.get_batch(np.arange(len(st)))
  # Scoring starts at 10 s; the last W holds to the record's end (330 s): 10 whole epochs.
  np.testing.assert_array_equal(b["stage"], [0, 0, 2, 2, 3, 3, 4, 4, 0, 0])
  np.testing.assert_array_equal(b["start"][:2], [10.0, 40.0])
  np.testing.assert_array_equal(np.flatnonzero(b["sdb"] == 1), [3])


# --- respiratory scoring: stage-only records and the override --------------------------------


def _slpdb_record(folder, name, notes):
  folder.mkdir(parents=True, exist_ok=True)
  fs = 250
  rng = np.random.default_rng(2)
  wfdb.wrsamp(name, fs=fs, units=["mV", "mV", "l"], sig_name=["ECG", "EEG (C4-A1)",
                                                               "Resp (nasal)"],
              p_signal=rng.standard_normal((fs * 30 * len(notes), 3)), fmt=["16"] * 3,
              write_dir=str(folder))
  wfdb.wrann(name, "st", np.arange(len(notes)) * 7500, ['"'] * len(notes), aux_note=notes,
             fs=fs, write_dir=str(folder))


def test_stage_only_records_and_the_override(tmp_path):
  _slpdb_record(tmp_path / "a", "slp77", ["W", "1", "2 L", "2", "R"])
  _slpdb_record(tmp_path / "b" / "deep", "slp78", ["W", "2 H", "2", "R"])
  specs, _ = discover(tmp_path)
  cfg = {"cohort": "slpdb", "sample_rate": 32, "dtype": "float32"}
  report = pp.preprocess(specs, tmp_path / "s1", cfg, progress=False)
  assert report["respiratory_unscored"] == ["slp77"]
  r77 = report["recordings"][0]
  assert "slp77.st: stages but no respiratory event code (H HA OA X CA CAA) in any note: " \
         "respiratory events count as not scored (SDB labels -1); set sdb_scored_for to " \
         "override" in r77["notes"]
  assert ("respiratory events not scored (the annotations say so; sdb_scored_for overrides): SDB "
          "labels are -1") in r77["notes"]
  assert "respiratory events not scored in 1 recording(s)" in pp.format_summary(report)
  st = WindowStore(tmp_path / "s1")
  assert (st.get_batch(st.indices_for_recording("slp77"))["sdb"] == -1).all()

  for override in ({"slp77": "yes"}, {str(tmp_path / "a"): "yes"}):
    report = pp.preprocess(specs, tmp_path / "s2", {**cfg, "sdb_scored_for": override},
                           progress=False, overwrite=True)
    assert report["respiratory_unscored"] == []
    st = WindowStore(tmp_path / "s2")
    np.testing.assert_array_equal(st.get_batch(st.indices_for_recording("slp77"))["sdb"], [0] * 5)
    np.testing.assert_array_equal(st.get_batch(st.indices_for_recording("slp78"))["sdb"],
                                  [0, 1, 0, 0])


def test_sdb_scored_mode_precedence(tmp_path):
  spec = RecordingSpec("r1", "s", str(tmp_path / "x" / "y" / "r1.edf"), None)
  mode = lambda d, default="auto": pp.sdb_scored_mode(
      pp.PreprocessConfig(sdb_scored=default, sdb_scored_for=d), spec)[0]
  assert mode({}) == "auto" and mode({}, "no") == "no"
  assert mode({str(tmp_path / "x"): "yes"}) == "yes"
  assert mode({str(tmp_path / "x"): "yes", str(tmp_path / "x" / "y"): "no"}) == "no"
  assert mode({str(tmp_path / "x" / "y"): "no", "r1": "yes"}) == "yes"
  assert mode({str(tmp_path / "other"): "yes"}, "no") == "no"
  with pytest.raises(ValueError, match="sdb_scored_for values"):
    pp.PreprocessConfig(sdb_scored_for={"r1": "maybe"})


def test_real_study_in_the_nsrr_layout(tmp_path):
  """The real scored study (both XML files, linked into an SHHS-style tree) with a signal file
  written here for its 31,530 s: NSRR preferred and reported, exact windows and labels."""
  from conftest import REPO, require_real_data  # pylint: disable=import-outside-toplevel

  real = require_real_data(REPO.parent / "shared" / "data" / "annotations-real" / "nsrr-translator")
  root = tmp_path / "polysomnography"
  for folder, name, src in (("annotations-events-nsrr", "shhs1-100022-nsrr.xml",
                             "100022_Compumedics.xml"),
                            ("annotations-events-profusion", "shhs1-100022-profusion.xml",
                             "100022.xml")):
    (root / folder / "shhs1").mkdir(parents=True)
    (root / folder / "shhs1" / name).symlink_to(real / src)
  seconds, rng = 31530, np.random.default_rng(3)
  (root / "edfs" / "shhs1").mkdir(parents=True)
  edfio.Edf([edfio.EdfSignal(rng.standard_normal(seconds * fs) * 20, fs, label=lab,
                             physical_dimension="uV")
             for lab, fs in (("EEG", 8), ("EEG(sec)", 8), ("SaO2", 1))]).write(
      root / "edfs" / "shhs1" / "shhs1-100022.edf")
  cfg = {"cohort": "shhs", "sample_rate": 8, "dtype": "float32", "montage": "paper"}
  specs, unpaired = discover(root)
  assert [s.annotation_path for s in specs] == [
      str(root / "annotations-events-nsrr" / "shhs1" / "shhs1-100022-nsrr.xml")]
  assert unpaired[0][1].endswith("(NSRR XML is preferred over Profusion XML)")
  report = pp.preprocess(specs, tmp_path / "nsrr", cfg, unpaired=unpaired, progress=False)
  assert report["windows"] == 1050 and report["excluded"] == {}
  assert report["stage_counts"] == {"W": 170, "N1": 61, "N2": 571, "N3": 119, "REM": 129}
  assert report["recordings"][0]["sdb_positive"] == 327
  assert report["unknown_annotations"] == {} and report["respiratory_unscored"] == []
  (root / "annotations-events-nsrr" / "shhs1" / "shhs1-100022-nsrr.xml").unlink()
  specs, unpaired = discover(root)
  assert unpaired == [] and specs[0].annotation_path.endswith("shhs1-100022-profusion.xml")
  report = pp.preprocess(specs, tmp_path / "profusion", cfg, progress=False)
  assert report["windows"] == 1051 and report["excluded"] == {}
  assert report["stage_counts"] == {"W": 171, "N1": 61, "N2": 571, "N3": 119, "REM": 129}
  assert report["recordings"][0]["sdb_positive"] == 327
