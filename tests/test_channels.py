"""Channel alias table, label normalisation, montages and the harmonisation report."""

import json

import pytest
from conftest import REPO

from sleepfm_jax.data.channels import (
    AUXILIARY,
    CANONICAL,
    MODALITIES,
    MONTAGES,
    REASON_UNKNOWN,
    ChannelMap,
    Montage,
    alias_table_markdown,
    canonical_name,
    harmonise,
    normalise_label,
)
from sleepfm_jax.data.recording import open_recording

# Labels the synthetic generator writes, and other labels from real files.
REQUIRED = {
    "C3-M2": ["C3-M2", "EEG C3-A2", "C3:M2"],
    "C4-M1": ["C4-M1", "EEG C4-A1", "C4-A1", "EEG C4-M1", "EEG (C4-A1)"],
    "O1-M2": ["O1-M2", "EEG O1-A2"],
    "O2-M1": ["O2-M1", "EEG O2-A1", "EEG (O2-A1)"],
    "F4-M1": ["F4:M1"],
    "E1-M2": ["E1-M2", "EOG E1-A2", "LOC"],
    "E2-M1": ["E2-M1", "EOG E2-A1", "ROC", "EOG (right)"],
    "Chin": ["Chin1-Chin2", "EMG Chin", "EMG submental", "EMG"],
    "ECG": ["ECG", "EKG", "ECG II"],
    "Airflow": ["Airflow", "Resp oro-nasal", "Flow Therm", "Resp (nasal)"],
    "NasalPressure": ["PFlow", "Nasal Pressure"],
    "Thorax": ["THOR RES", "Chest", "Effort THO", "Resp chest", "Resp (chest)"],
    "Abdomen": ["ABDO RES", "ABD", "Effort ABD", "Resp abdomen"],
    "SpO2": ["SpO2", "SaO2", "SpO2 %"],
    "Fpz-Cz": ["EEG Fpz-Cz"],
    "Pz-Oz": ["EEG Pz-Oz"],
    "EOG": ["EOG horizontal", "EOG"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_aliases(name):
  for label in REQUIRED[name]:
    assert canonical_name(label) == name, label


def test_every_table_alias_maps_to_its_canonical_name():
  for name, (modality, aliases) in CANONICAL.items():
    assert modality in MODALITIES
    for alias in (name, *aliases):
      assert canonical_name(alias) == name, alias
  for label in AUXILIARY:
    assert canonical_name(label) is None, label


@pytest.mark.parametrize("label,key", [
    ("EEG C4-A1", "c4m1"), ("C4:M1", "c4m1"), ("  c4 - m1 ", "c4m1"), ("EEG (C4-A1)", "c4m1"),
    ("EOG E1-A2", "e1m2"), ("SpO2 %", "spo2"), ("EMG", "emg"), ("Resp oro-nasal", "oronasal"),
    ("ECG1-ECG2", "ecg1ecg2"),
])
def test_normalise_label(label, key):
  assert normalise_label(label) == key


def test_case_whitespace_punctuation_tolerance():
  for label in ("eeg c3-a2", "EEG  C3 - A2", "C3/M2", "c3_m2", "EEG-C3-M2", "C3-M2 "):
    assert canonical_name(label) == "C3-M2", label
  assert canonical_name("thor res") == "Thorax"
  assert canonical_name("Pleth") is None and canonical_name("C3") is None


def test_sc4001_sleepedf_montage(sc4001):
  labels = [c.label for c in open_recording(sc4001[0]).channels]
  cmap = harmonise(labels, MONTAGES["sleepedf"])
  assert cmap.assignments == {
      "bas": ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "EMG submental"],
      "ecg": [],
      "resp": ["Resp oro-nasal"],
  }
  assert [raw for raw, _ in cmap.ignored] == ["Temp rectal", "Event marker"]
  assert all("auxiliary channel" in reason for _, reason in cmap.ignored)
  assert cmap.missing == {"bas": [], "ecg": [], "resp": []}
  assert cmap.missing_modalities == ["ecg"]
  report = json.loads(json.dumps(cmap.to_dict()))
  assert {m["label"]: m["canonical"] for m in report["mapped"]} == {
      "EEG Fpz-Cz": "Fpz-Cz", "EEG Pz-Oz": "Pz-Oz", "EOG horizontal": "EOG",
      "Resp oro-nasal": "Airflow", "EMG submental": "Chin"}
  assert ChannelMap.from_dict(report) == cmap

  # The paper montage has none of these channels.
  paper = harmonise(labels, MONTAGES["paper"])
  assert paper.missing_modalities == ["bas", "ecg", "resp"]
  assert dict(paper.ignored)["EEG Fpz-Cz"] == "Fpz-Cz (bas) is not in the montage"


def test_harmonise_reasons_and_duplicates():
  labels = ["EEG C3-A2", "C3-M2", "Mystery 7", "Position", "EEG Fpz-Cz", "EKG", "SaO2", "Pleth",
            "ABD"]
  cmap = harmonise(labels, MONTAGES["paper"])
  assert cmap.assignments == {
      "bas": ["EEG C3-A2", None, None, None, None],
      "ecg": ["EKG"],
      "resp": [None, "SaO2", "ABD"],
  }
  assert cmap.ignored == [
      ("C3-M2", "duplicate: C3-M2 is already filled by 'EEG C3-A2'"),
      ("Mystery 7", REASON_UNKNOWN),
      ("Position", "auxiliary channel (body position), not used"),
      ("EEG Fpz-Cz", "Fpz-Cz (bas) is not in the montage"),
      ("Pleth", "auxiliary channel (plethysmogram), not used"),
  ]
  assert cmap.missing == {"bas": ["C4-M1", "O1-M2", "O2-M1", "E1-M2"], "ecg": [],
                          "resp": ["Thorax"]}
  assert cmap.missing_modalities == []


def test_user_aliases_take_precedence():
  labels = ["EEG C3-A2", "Chan 4", "EKG"]
  cmap = harmonise(labels, MONTAGES["paper"],
                   aliases={"Chan 4": "C4-M1", "EEG C3-A2": "O1-M2", "ekg": None})
  assert cmap.assignments["bas"] == [None, "Chan 4", "EEG C3-A2", None, None]
  assert cmap.ignored == [("EKG", "ignored by user alias")]  # matched by normalised key
  assert cmap.missing_modalities == ["ecg", "resp"]
  with pytest.raises(ValueError, match="not a canonical name"):
    harmonise(labels, MONTAGES["paper"], aliases={"Chan 4": "C4"})


def test_montages():
  assert MONTAGES["paper"].to_dict() == {
      "bas": ["C3-M2", "C4-M1", "O1-M2", "O2-M1", "E1-M2"], "ecg": ["ECG"],
      "resp": ["Thorax", "SpO2", "Abdomen"]}
  assert MONTAGES["sleepedf"].channels("ecg") == ()
  assert len(MONTAGES["standard"].channels("bas")) == 7
  assert Montage.from_dict(MONTAGES["standard"].to_dict()) == MONTAGES["standard"]
  with pytest.raises(ValueError, match="belongs to resp"):
    Montage(bas=("SpO2",), ecg=(), resp=())
  with pytest.raises(ValueError, match="not a canonical name"):
    Montage(bas=("C3",), ecg=(), resp=())
  with pytest.raises(ValueError, match="appears twice"):
    Montage(bas=("C3-M2", "C3-M2"), ecg=(), resp=())
  with pytest.raises(ValueError, match="unknown modality"):
    MONTAGES["paper"].channels("eeg")


def test_docs_alias_table_matches_code():
  doc = (REPO / "docs" / "data.md").read_text()
  assert alias_table_markdown() in doc, "regenerate the table: channels.alias_table_markdown()"
