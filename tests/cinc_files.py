"""CinC-2018-format records for tests, and the original SleepFM's extraction of their windows.

A PhysioNet/CinC Challenge 2018 record is a WFDB header `<name>.hea` with 13 signals at 200 Hz in
one MATLAB v4 file `<name>.mat` (variable `val`, int16, 13 x N: a 24-byte MAT header followed by the
samples interleaved frame by frame, i.e. WFDB format 16 with byte offset 24), and the sleep stages
in `<name>-arousal.mat` (HDF5: one 0/1 vector per stage under `data/sleep_stages`). The header
gains are those of the challenge data: EEG, EOG, chin EMG and the respiratory channels `1/uV`,
SaO2 `655.35(-32768)/%` and ECG `1000/mV`.

`original_windows` cuts windows the way the original `0_extract_pretraining_data.py`
(rthapa84/sleepfm-codebase) does, step by step with MNE, so that tests can compare this project's
preprocessing against it. Kept beside the tests (MNE is a test dependency).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

import numpy as np
import scipy.io
import scipy.signal

FS = 200
CHANNELS = ("F3-M2", "F4-M1", "C3-M2", "C4-M1", "O1-M2", "O2-M1", "E1-M2", "Chin1-Chin2", "ABD",
            "CHEST", "AIRFLOW", "SaO2", "ECG")
# label -> (ADC gain per physical unit, baseline, unit), as in the challenge's headers.
GAINS = {c: (1.0, 0, "uV") for c in CHANNELS}
GAINS["SaO2"] = (655.35, -32768, "%")
GAINS["ECG"] = (1000.0, 0, "mV")
# `data/sleep_stages` keys in the order h5py lists them (by name): the original indexes this order.
STAGE_KEYS = ("nonrem1", "nonrem2", "nonrem3", "rem", "undefined", "wake")
UNDEFINED = STAGE_KEYS.index("undefined")
# The original's channel groups (config.CHANNEL_DATA) in its encoders' input order.
ORIGINAL_GROUPS = {"resp": ("CHEST", "SaO2", "ABD"),
                   "bas": ("C3-M2", "C4-M1", "O1-M2", "O2-M1", "E1-M2"), "ecg": ("ECG",)}
_CSV_LABEL = {"wake": "W", "nonrem1": "N1", "nonrem2": "N2", "nonrem3": "N3", "rem": "REM"}
_EVENT_ID = {"wake": 1, "nonrem1": 2, "nonrem2": 3, "nonrem3": 4, "rem": 5}


def to_digital(label: str, physical: np.ndarray) -> np.ndarray:
  """Physical values -> int16 ADC counts through the channel's gain and baseline (rounded;
  -32768, WFDB's invalid-sample code in format 16, is avoided)."""
  gain, baseline, _ = GAINS[label]
  return np.clip(np.rint(np.asarray(physical) * gain + baseline), -32767, 32767).astype(np.int16)


def write_record(folder: str | pathlib.Path, name: str,
                 physical: Mapping[str, np.ndarray]) -> pathlib.Path:
  """Writes `<name>.hea` and `<name>.mat` as the challenge ships them; returns the `.hea` path.

  Args:
    folder: where to write.
    name: record name.
    physical: the 13 `CHANNELS` in physical units (uV, %, mV), same length, at 200 Hz.
  """
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  val = np.stack([to_digital(c, physical[c]) for c in CHANNELS])
  scipy.io.savemat(folder / f"{name}.mat", {"val": val}, format="4")  # 24-byte header, int16
  lines = [f"{name} {len(CHANNELS)} {FS} {val.shape[1]}"]
  for c, row in zip(CHANNELS, val, strict=True):
    gain, baseline, unit = GAINS[c]
    gain_text = f"{gain:g}" + (f"({baseline})" if baseline else "")
    checksum = int(np.sum(row, dtype=np.int64)) & 0xFFFF
    checksum -= 0x10000 if checksum >= 0x8000 else 0
    lines.append(f"{name}.mat 16+24 {gain_text}/{unit} 16 0 {row[0]} {checksum} 0 {c}")
  path = folder / f"{name}.hea"
  path.write_text("\n".join(lines) + "\n")
  return path


def stage_runs(stages: np.ndarray) -> list[tuple[int, int, int]]:
  """(first sample, end sample, `STAGE_KEYS` index) of each run of equal per-sample stages."""
  change = np.flatnonzero(np.diff(stages)) + 1
  starts = np.concatenate([[0], change])
  ends = np.concatenate([change, [stages.size]])
  return [(int(a), int(b), int(stages[a])) for a, b in zip(starts, ends, strict=True)]


def write_stage_csv(path: str | pathlib.Path, stages: np.ndarray) -> pathlib.Path:
  """The per-sample stages as `onset,duration,label` runs (undefined runs left out)."""
  rows = ["onset,duration,label"]
  for a, b, k in stage_runs(stages):
    if k != UNDEFINED:
      rows.append(f"{a / FS:.6f},{(b - a) / FS:.6f},{_CSV_LABEL[STAGE_KEYS[k]]}")
  pathlib.Path(path).write_text("\n".join(rows) + "\n")
  return pathlib.Path(path)


def _original_events(stages: np.ndarray) -> list[tuple[int, int, int]]:
  """(onset, duration, stage) in samples, as the original's `process_labels_to_events` derives
  them: the first run from sample 0, one sample longer than the run; each later run from one
  sample after its first sample, with the run's length (the last run one sample shorter); a
  single-sample run at the very end is lost."""
  n = stages.size
  events, start, lab, i = [], 0, stages[0], 0
  while i < n - 1:
    while stages[i] == lab and i < n - 1:
      i += 1
    events.append((start, i + 1 - start, int(lab)))
    lab, start = stages[i], i + 1
  return events


def original_windows(hea: str | pathlib.Path, stages: np.ndarray,
                     sfreq: float = 256.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The windows the original extraction saves for a record, in its order.

  Follows `0_extract_pretraining_data.py`: the `.mat` `val` array as is (raw int16 counts); both
  signals and per-sample stages cut at the first change of the "undefined" stage + 1 sample; MNE
  `RawArray` with the stage runs as annotations, `Raw.resample(sfreq=256)` (FFT over the whole
  cut recording); `events_from_annotations(chunk_duration=30)` with the five stage names;
  `Epochs(tmin=0, tmax=30 - 1/256, baseline=None, event_repeated="drop").drop_bad()`; windows kept
  only when all 13 channels are present; the no-op `scipy.signal.resample` to 7680 samples.

  Args:
    hea: the record's header (the `.mat` beside it is read with `scipy.io.loadmat`).
    stages: [N] per-sample `STAGE_KEYS` indices (what the original reads from `-arousal.mat`).

  Returns:
    (windows [n, 13, 7680] float64 in `CHANNELS` order, start [n] seconds from the recording
    start, stage [n] `STAGE_KEYS` index).
  """
  import mne  # pylint: disable=import-outside-toplevel

  hea = pathlib.Path(hea)
  header = hea.read_text().split("\n")
  fs = int(header[0].split()[2])
  names = [line.split()[8] for line in header[1:] if line.strip()]
  val = scipy.io.loadmat(hea.with_suffix(".mat"))["val"]
  onehot = np.eye(len(STAGE_KEYS))[stages]
  cut = int(np.flatnonzero(np.diff(onehot, axis=0)[:, UNDEFINED] != 0)[0] + 1) + 1
  val, stages = val[:, cut:], stages[cut:]
  raw = mne.io.RawArray(val, mne.create_info(names, fs, ch_types="eeg"), verbose="error")
  events = np.array(_original_events(stages))
  raw.set_annotations(mne.Annotations(onset=events[:, 0] / fs, duration=events[:, 1] / fs,
                                      description=[STAGE_KEYS[k] for k in events[:, 2]]))
  raw.resample(sfreq=sfreq, verbose="error")
  ev, _ = mne.events_from_annotations(raw, event_id=_EVENT_ID, chunk_duration=30.0,
                                      verbose="error")
  present = {v: k for k, v in _EVENT_ID.items() if v in set(ev[:, 2])}
  epochs = mne.Epochs(raw, ev, event_id={k: v for v, k in present.items()}, tmin=0.0,
                      tmax=30.0 - 1.0 / sfreq, baseline=None, event_repeated="drop",
                      verbose="error").drop_bad(verbose="error")
  idx = [names.index(c) for c in CHANNELS if c in names]
  out, starts, labels = [], [], []
  for (sample, _, code), epoch in zip(epochs.events, epochs, strict=True):
    data = epoch[idx]
    if data.shape[0] != len(CHANNELS):
      continue  # the original drops a window when any of its 13 channels is missing
    out.append(scipy.signal.resample(data, int(data.shape[1] * 256 / sfreq), axis=1))
    starts.append(cut / fs + sample / sfreq)
    labels.append(STAGE_KEYS.index(present[code]))
  return np.array(out), np.array(starts), np.array(labels)


def modality_inputs(windows: np.ndarray) -> dict[str, np.ndarray]:
  """The original dataset's per-encoder inputs ([n, C, T] float32) from `original_windows`."""
  return {m: windows[:, [CHANNELS.index(c) for c in chans]].astype(np.float32)
          for m, chans in ORIGINAL_GROUPS.items()}


def synthetic_signals(n_samples: int, seed: int = 0) -> dict[str, np.ndarray]:
  """The 13 `CHANNELS` at 200 Hz in physical units, from the project's SYNTHETIC generator (F3/F4,
  which it does not draw, are scaled copies of C3/C4)."""
  from sleepfm_jax.data import synthetic  # pylint: disable=import-outside-toplevel

  params = synthetic.sample_subject(0, seed, "standard", missing_prob=0.0, distractor_prob=0.0)
  epochs = -(-n_samples // (30 * FS))
  night = synthetic.generate_night(params, hours=epochs * 30 / 3600, seed=seed,
                                   rates={g: FS for g in synthetic.DEFAULT_RATES})
  source = {"C3-M2": "C3-M2", "C4-M1": "C4-M1", "O1-M2": "O1-M2", "O2-M1": "O2-M1",
            "E1-M2": "E1-M2", "Chin1-Chin2": "Chin", "ABD": "Abdomen", "CHEST": "Thorax",
            "AIRFLOW": "Airflow", "SaO2": "SpO2", "ECG": "ECG"}
  out = {c: night.channel(name)[0][:n_samples].astype(np.float64) for c, name in source.items()}
  out["F3-M2"] = 0.9 * out["C3-M2"]
  out["F4-M1"] = 0.9 * out["C4-M1"]
  return {c: out[c] for c in CHANNELS}
