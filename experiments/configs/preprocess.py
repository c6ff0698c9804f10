"""Preprocessing presets: `--config=experiments/configs/preprocess.py:<preset>`.

Presets:
  default   montage "standard" (7 BAS, ECG, 4 respiratory), robust normalisation, float16.
  synthetic the project's SYNTHETIC nights (experiments/make_synthetic.py): as default, and every
            night counts as scored for respiratory events (also those with no event at all).
  sleepedf  montage "sleepedf" (Fpz-Cz, Pz-Oz, EOG, Chin; Airflow): Sleep-EDF cassette recordings,
            cropped to the sleep period +- 30 min (crop_wake_minutes).
  paper     the original SleepFM's inputs (`preprocess.ORIGINAL_INPUTS`): montage "paper", raw ADC
            counts (not physical units), no normalisation, float32, FFT resampling over the whole
            recording, windows aligned as its extraction cuts them (docs/model.md, "Fidelity").
  shhs, mesa, mros, cfs, chat, ccshs, cinc2018, slpdb
            as default with that cohort preset (`sleepfm_jax.data.cohorts`: channel labels,
            expected rates and units) and its montage ("paper" for cinc2018).

Any field can be overridden on the command line, e.g. `--config.workers=4 --config.dtype=float32`.
The fields are those of `sleepfm_jax.data.preprocess.PreprocessConfig` (see docs/store.md).
"""

import ml_collections

from sleepfm_jax.data import cohorts
from sleepfm_jax.data import preprocess as preprocess_lib

COHORTS = tuple(c for c in cohorts.PRESETS if c != "sleepedf")  # "sleepedf" is the preset below
PRESETS = ("default", "synthetic", "sleepedf", "paper", *COHORTS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "default"
  if preset not in PRESETS:
    raise ValueError(f"unknown preprocessing preset {preset!r}; one of {PRESETS}")
  c = ml_collections.ConfigDict()
  c.sample_rate = 256
  c.window_seconds = 30.0
  c.montage = "standard"
  c.aliases = ml_collections.ConfigDict()  # raw label -> canonical name ("" ignores the channel)
  c.dtype = "float16"
  c.normalise = "robust"
  # {modality or channel: {"bandpass": (lo, hi), "notch": f0}}
  c.filters = ml_collections.ConfigDict()
  c.drop_unscored = True
  c.crop_wake_minutes = None  # minutes of wake kept around the sleep period (None: everything)
  c.sdb_scored = "auto"
  c.sdb_scored_for = ml_collections.ConfigDict()  # {recording id or folder: "auto"|"yes"|"no"}
  c.cohort = ""  # a name of sleepfm_jax.data.cohorts.PRESETS
  c.workers = 1
  c.flat_tol = 1e-6
  c.clip_fraction = 0.5
  c.quality_exempt = ("SpO2",)
  c.units = "physical"  # or "raw": the file's digital values (see sleepfm_jax/data/units.py)
  c.resampler = "polyphase"  # or "fft"
  c.alignment = "epoch"  # or "original"
  if preset == "synthetic":
    c.sdb_scored = "yes"
  elif preset == "sleepedf":
    c.montage = "sleepedf"
    c.crop_wake_minutes = 30.0  # the cassette recordings are ~22 h, ~75 % of it out of bed
  elif preset == "paper":
    c.montage = "paper"
    c.update(preprocess_lib.ORIGINAL_INPUTS)
  elif preset in COHORTS:
    c.cohort = preset
    c.montage = cohorts.PRESETS[preset].montage
  return c
