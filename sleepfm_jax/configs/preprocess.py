"""Preprocessing presets: ``--config=preprocess.py:PRESET`` (file in this package).

Presets
  default   montage "standard" (7 BAS, ECG, 4 respiratory), robust normalisation, float16.
  synthetic the project's SYNTHETIC nights (experiments/make_synthetic.py): as default, and every
            night counts as scored for respiratory events (also those with no event at all).
  sleepedf  montage "sleepedf" (Fpz-Cz, Pz-Oz, EOG, Chin; Airflow): Sleep-EDF cassette recordings.
  paper     the original SleepFM: montage "paper", no normalisation (raw physical units), float32.

The fields and their defaults are those of `sleepfm_jax.data.preprocess.PreprocessConfig` (see
docs/store.md); `base_config()` copies them and every preset only overrides it. Any field can be
overridden on the command line, e.g. `--config.workers=4 --config.dtype=float32`.
"""

import dataclasses

import ml_collections

from sleepfm_jax.configs import common
from sleepfm_jax.data.preprocess import PreprocessConfig

PRESETS = ("default", "synthetic", "sleepedf", "paper")


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
  elif opts.preset == "paper":
    c.montage = "paper"
    c.normalise = "none"
    c.dtype = "float32"  # raw physical units: keep full precision
  return c

