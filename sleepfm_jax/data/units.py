"""Signal units: physical (calibrated, as the header defines them) or raw (the ADC counts stored).

Every reader returns physical values; a channel set to "raw" is turned back into the digital
values the file stores, through the header's gain and offset (`RawRecording.digital_scale`):

  digital = physical * gain + offset
  EDF:  gain = (digital max - digital min) / (physical max - physical min),
        offset = digital min - physical min * gain
  WFDB: gain = the ADC gain (units per physical unit), offset = the baseline

The original SleepFM fed raw counts: its extraction loads the CinC-2018 `.mat` `val` array (int16)
and nothing scales it. Per the CinC-2018 headers, EEG/EOG/EMG and the respiratory belts are
`1/uV` (raw = physical), but SaO2 is `655.35(-32768)/%` (95 % becomes 29,490) and ECG `1000/mV`.
A checkpoint only understands the units it was trained on, so stores and checkpoints record the
units of every channel, and the exporter refuses to mix them.

The setting (`PreprocessConfig.units`) is "physical", "raw", or a dict {modality or canonical
channel: "physical" | "raw"} (a channel entry overrides its modality's; unnamed channels are
physical). numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sleepfm_jax.data.channels import MODALITIES, Montage

UNITS = ("physical", "raw")
DEFAULT = "physical"  # also what every store and checkpoint written before the setting used


def validate(spec: Any) -> None:
  """Raises ValueError unless `spec` is a unit name or a {modality/channel: unit name} dict."""
  values = spec.values() if isinstance(spec, Mapping) else [spec]
  bad = [v for v in values if v not in UNITS]
  if bad:
    raise ValueError(f"units must be one of {UNITS} or a dict of them per modality or channel, "
                     f"got {spec!r}")


def for_channel(spec: Any, modality: str, channel: str) -> str:
  """The units of one canonical channel under the setting `spec`."""
  if not isinstance(spec, Mapping):
    return spec or DEFAULT
  return spec.get(channel) or spec.get(modality) or DEFAULT


def resolve(spec: Any, montage: Montage) -> dict[str, str]:
  """{canonical channel: units} for every channel of `montage`."""
  return {c: for_channel(spec, m, c) for m in MODALITIES for c in montage.channels(m)}


def to_digital(x: np.ndarray, gain: float, offset: float) -> np.ndarray:
  """Physical samples -> the file's digital values (float64, rounded to integers; NaN stays)."""
  y = np.asarray(x, dtype=np.float64) * gain
  y += offset
  return np.rint(y, out=y)


def of_store(store) -> dict[str, str]:
  """{channel: units} of a `WindowStore`: its recordings' record, else its preprocessing setting."""
  units = resolve((store.index.get("preprocessing") or {}).get("units"), store.montage)
  for r in store.recordings:
    units.update(r.get("units") or {})
  return units


def of_checkpoint(meta: Mapping[str, Any]) -> dict[str, str]:
  """{channel: units} of the input channels a checkpoint was trained on (from its meta)."""
  spec = (meta.get("preprocessing") or {}).get("units")
  return {c: for_channel(spec, m, c) for m, chans in meta["channels"].items() for c in chans}


def check_same(checkpoint_units: Mapping[str, str], store_units: Mapping[str, str],
               channels: Mapping[str, Any], *, checkpoint: str, store: str) -> None:
  """Refuses inputs in other units than the checkpoint was trained on, for the channels it reads.

  Raises:
    ValueError: naming the channels, both units and how to fix it.
  """
  wrong = {c: (store_units.get(c, DEFAULT), checkpoint_units.get(c, DEFAULT))
           for m in channels for c in channels[m]
           if store_units.get(c, DEFAULT) != checkpoint_units.get(c, DEFAULT)}
  if wrong:
    detail = ", ".join(f"{c} is {have} in the store, {want} for the checkpoint"
                       for c, (have, want) in wrong.items())
    raise ValueError(f"{store}: the store's units differ from those the checkpoint {checkpoint} "
                     f"was trained on ({detail}); preprocess the recordings again with the "
                     "checkpoint's `units` setting (sleepfm_jax.embed on the signal files does)")
