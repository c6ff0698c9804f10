"""Preprocessing presets: ``--config=preprocess.py:PRESET`` (file in this package).

Presets
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

The fields and their defaults are those of `sleepfm_jax.data.preprocess.PreprocessConfig` (see
docs/store.md); `base_config()` copies them and every preset only overrides it. Any field can be
overridden on the command line, e.g. `--config.workers=4 --config.dtype=float32`.
"""

import dataclasses

import ml_collections

from sleepfm_jax.configs import common
from sleepfm_jax.data import cohorts
from sleepfm_jax.data.preprocess import ORIGINAL_INPUTS, PreprocessConfig

COHORTS = tuple(c for c in cohorts.PRESETS if c != "sleepedf")  # "sleepedf" is the preset below
PRESETS = ("default", "synthetic", "sleepedf", "paper", *COHORTS)


def base_config() -> ml_collections.ConfigDict:
  """`PreprocessConfig()`'s fields and defaults as a ConfigDict (dict fields as ConfigDicts)."""
  defaults = PreprocessConfig()
  return ml_collections.ConfigDict({f.name: getattr(defaults, f.name)
                                    for f in dataclasses.fields(PreprocessConfig)})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  opts = common.parse_arg(arg, PRESETS)
  c = base_config()
  if opts.preset == "synthetic":
    c.sdb_scored = "yes"
  elif opts.preset == "sleepedf":
    c.montage = "sleepedf"
    c.crop_wake_minutes = 30.0  # the cassette recordings are ~22 h, ~75 % of it out of bed
  elif opts.preset == "paper":
    c.montage = "paper"
    c.update(ORIGINAL_INPUTS)
  elif opts.preset in COHORTS:
    c.cohort = opts.preset
    c.montage = cohorts.PRESETS[opts.preset].montage
  return c

