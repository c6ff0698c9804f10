"""Preprocessing presets: `--config=experiments/configs/preprocess.py:<preset>`.

Presets:
  default   montage "standard" (7 BAS, ECG, 4 respiratory), robust normalisation, float16.
  synthetic the project's SYNTHETIC nights (experiments/make_synthetic.py): as default, and every
            night counts as scored for respiratory events (also those with no event at all).
  sleepedf  montage "sleepedf" (Fpz-Cz, Pz-Oz, EOG, Chin; Airflow): Sleep-EDF cassette recordings,
            cropped to the sleep period +- 30 min (crop_wake_minutes).
  paper     the original SleepFM: montage "paper", no normalisation (raw physical units), float32.

Any field can be overridden on the command line, e.g. `--config.workers=4 --config.dtype=float32`.
The fields are those of `sleepfm_jax.data.preprocess.PreprocessConfig` (see docs/store.md).
"""

import ml_collections

PRESETS = ("default", "synthetic", "sleepedf", "paper")


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
  c.workers = 1
  c.flat_tol = 1e-6
  c.clip_fraction = 0.5
  c.quality_exempt = ("SpO2",)
  if preset == "synthetic":
    c.sdb_scored = "yes"
  elif preset == "sleepedf":
    c.montage = "sleepedf"
    c.crop_wake_minutes = 30.0  # the cassette recordings are ~22 h, ~75 % of it out of bed
  elif preset == "paper":
    c.montage = "paper"
    c.normalise = "none"
    c.dtype = "float32"  # raw physical units: keep full precision
  return c
