"""Discovery: pairing signal and annotation files, subject ids, manifests, unpaired reports."""

import numpy as np
import pytest
from psg_files import write_edf

from sleepfm_jax.data.discovery import RecordingSpec, discover, recording_id_for, subject_id_for


def test_real_data_folder(sc4001, slpdb_dir):
  specs, unpaired = discover(slpdb_dir.parent)
  assert unpaired == []
  by_id = {s.recording_id: s for s in specs}
  assert sorted(by_id) == ["SC4001E0", "slp01a", "slp01b", "slp02a", "slp02b", "slp03", "slp04",
                           "slp14", "slp16", "slp32"]
  assert by_id["SC4001E0"] == RecordingSpec("SC4001E0", "SC00", str(sc4001[0]), str(sc4001[1]))
  assert by_id["slp01b"] == RecordingSpec("slp01b", "slp01", str(slpdb_dir / "slp01b.hea"),
                                          str(slpdb_dir / "slp01b.st"))
  assert len({s.subject_id for s in specs}) == 8  # slp01a/b and slp02a/b share subjects


@pytest.mark.parametrize("rid,subject", [
    ("SC4001E0", "SC00"), ("SC4812G0", "SC81"), ("ST7011J0", "ST01"), ("slp01a", "slp01"),
    ("slp32", "slp32"), ("sub-003_night-1", "sub-003"), ("sub-abc", "sub-abc"),
    ("patient42", "patient42"),
])
def test_subject_ids(rid, subject):
  assert subject_id_for(rid) == subject


def test_recording_id():
  assert recording_id_for("/x/SC4001E0-PSG.edf") == "SC4001E0"
  assert recording_id_for("/x/night_PSG.edf") == "night"
  assert recording_id_for("/x/slp01a.hea") == "slp01a"


def _touch(folder, *names):
  for name in names:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_pairing_rules(tmp_path):
  _touch(tmp_path,
         "SC4011E0-PSG.edf", "SC4011EH-Hypnogram.edf",  # Sleep-EDF: scorer letter differs
         "SC4012E0-PSG.edf",                             # no hypnogram
         "ST7011J0-PSG.edf", "ST7011JP-Hypnogram.edf",
         "sub-003_night-1.edf", "sub-003_night-1.csv",
         "sub-003_night-2.edf", "sub-003_night-2-annotations.edf", "sub-003_night-2.tsv",
         "rec1.hea", "rec1.st", "rec1.dat",
         "orphan.csv", "notes.xml", "readme.txt",
         "deeper/sub-004_night-1.edf", "deeper/sub-004_night-1.tsv",
         "other/sub-003_night-1.edf")
  specs, unpaired = discover(tmp_path)
  got = {s.recording_id: (s.subject_id, s.annotation_path and s.annotation_path[len(
      str(tmp_path)) + 1:]) for s in specs}
  assert got == {
      "SC4011E0": ("SC01", "SC4011EH-Hypnogram.edf"),
      "SC4012E0": ("SC01", None),
      "ST7011J0": ("ST01", "ST7011JP-Hypnogram.edf"),
      "sub-003_night-1": ("sub-003", "sub-003_night-1.csv"),
      "sub-003_night-2": ("sub-003", "sub-003_night-2-annotations.edf"),
      "sub-004_night-1": ("sub-004", "deeper/sub-004_night-1.tsv"),
      "rec1": ("rec1", "rec1.st"),
  }
  rel = [(p[len(str(tmp_path)) + 1:], reason) for p, reason in unpaired]
  assert rel == [
      ("notes.xml", "annotation file without a matching signal file"),
      ("orphan.csv", "annotation file without a matching signal file"),
      ("other/sub-003_night-1.edf",
       f"duplicate recording id 'sub-003_night-1' (also {tmp_path}/sub-003_night-1.edf)"),
      ("sub-003_night-2.tsv",
       f"alternate annotation file not used: {tmp_path}/sub-003_night-2-annotations.edf was "
       f"preferred for {tmp_path}/sub-003_night-2.edf"),
  ]

  specs, unpaired = discover([tmp_path / "SC4012E0-PSG.edf", tmp_path / "rec1"],
                             require_annotations=True)
  assert [s.recording_id for s in specs] == ["rec1"]
  assert unpaired == [(str(tmp_path / "SC4012E0-PSG.edf"), "no annotation file found")]
  with pytest.raises(FileNotFoundError):
    discover(tmp_path / "missing")


def test_annotation_only_edf_is_sniffed(tmp_path):
  """An EDF+ file with no ordinary signals is an annotation file whatever its name."""
  import edfio  # pylint: disable=import-outside-toplevel

  write_edf(tmp_path / "night.edf", {"ECG": (10.0, np.zeros(100))})
  edfio.Edf([], annotations=[edfio.EdfAnnotation(0, 30, "Sleep stage W")]).write(
      tmp_path / "night-scoring.edf")
  specs, unpaired = discover(tmp_path)
  assert [s.recording_id for s in specs] == ["night"]
  assert unpaired == [(str(tmp_path / "night-scoring.edf"),
                       "annotation file without a matching signal file")]


def test_manifest_overrides_rules(tmp_path):
  _touch(tmp_path, "data/a.edf", "data/a_scoring.csv", "data/b.edf")
  manifest = tmp_path / "manifest.csv"
  manifest.write_text(
      "signal_path,annotation_path,subject_id,recording_id\n"
      "data/a.edf,data/a_scoring.csv,patient-1,night-a\n"
      "data/b.edf,,patient-1,\n"
      "data/c.edf,,patient-2,\n"
      "data/b.edf,data/missing.csv,patient-3,x\n"
  )
  specs, unpaired = discover(None, manifest=str(manifest))
  assert specs == [
      RecordingSpec("night-a", "patient-1", str(tmp_path / "data/a.edf"),
                    str(tmp_path / "data/a_scoring.csv")),
      RecordingSpec("b", "patient-1", str(tmp_path / "data/b.edf"), None),
  ]
  assert unpaired == [
      (str(tmp_path / "data/c.edf"), "signal file not found (manifest line 4)"),
      (str(tmp_path / "data/missing.csv"), "annotation file not found (manifest line 5)"),
  ]
