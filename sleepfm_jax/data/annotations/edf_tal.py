"""EDF+ annotation files (TAL): Sleep-EDF `*-Hypnogram.edf`, AASM exports, EDF+ signal files.

Labels are free text: R&K (`Sleep stage W|1|2|3|4|R|?`, `Movement time`) or AASM (`Sleep stage
N1`, `N2`, `REM`, `Wake`, ...) stages, and events such as `Obstructive apnea`, `Hypopnea`,
`Arousal`, `SpO2 desaturation`. Stage annotations are (onset, duration, label) runs.
"""

from __future__ import annotations

from sleepfm_jax.data.annotations import core
from sleepfm_jax.data.errors import PSGError

FORMAT = "edf"
EXTENSIONS = (".edf",)


def read(path: str, epoch_len: float) -> core.Annotations:
  import edfio  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.data.edf import ANNOTATION_LABEL, read_edf_header  # pylint: disable=C0415

  header = read_edf_header(path)
  if not header.annotation_signals:
    raise PSGError(path, f"no '{ANNOTATION_LABEL}' signal: not an EDF+ annotation file")
  try:
    anns = edfio.read_edf(path, header_encoding="latin-1").annotations
  except Exception as e:
    raise PSGError(path, f"malformed EDF+ annotations: {e}", ANNOTATION_LABEL) from e
  return core.from_records(((a.onset, a.duration, a.text) for a in anns), path,
                           epoch_len=epoch_len)
