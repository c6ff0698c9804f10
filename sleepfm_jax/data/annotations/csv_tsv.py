"""CSV/TSV annotation files: an `onset,duration,label` header, one row per stage run or event.

Comment lines start with `#`; `# respiratory_scored: true|false` states whether respiratory events
were scored (without it: scored exactly when the file holds an apnea or hypopnea).
"""

from __future__ import annotations

import csv
import os
import re

from sleepfm_jax.data.annotations import core
from sleepfm_jax.data.errors import PSGError

FORMAT = "csv"
EXTENSIONS = (".csv", ".tsv")

_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


def _body(path: str, lines: list[str]) -> tuple[list[tuple[int, str]], bool | None]:
  """(numbered non-comment lines, the respiratory_scored comment's value or None)."""
  scored = None
  body = []
  for lineno, line in enumerate(lines, 1):
    stripped = line.strip()
    if not stripped:
      continue
    if stripped.startswith("#"):
      m = re.match(r"#\s*respiratory_scored\s*[:=]\s*(\S+)", stripped, re.I)
      if m:
        value = m.group(1).lower()
        if value not in _TRUE | _FALSE:
          raise PSGError(path, f"line {lineno}: respiratory_scored must be true or false")
        scored = value in _TRUE
      continue
    body.append((lineno, line))
  return body, scored


def read(path: str, epoch_len: float) -> core.Annotations:
  if not os.path.isfile(path):
    raise PSGError(path, "file not found")
  with open(path, newline="", encoding="utf-8-sig") as f:
    body, scored = _body(path, f.read().splitlines())
  if not body:
    raise PSGError(path, "empty annotation file (no header row)")
  delimiter = "\t" if "\t" in body[0][1] else ","
  rows = list(csv.reader([line for _, line in body], delimiter=delimiter))
  header = [c.strip().lower() for c in rows[0]]
  if not {"onset", "duration", "label"} <= set(header):
    raise PSGError(
        path, f"line {body[0][0]}: expected a header with onset, duration, label; got {rows[0]}"
    )
  col = {name: header.index(name) for name in ("onset", "duration", "label")}
  records = []
  for (lineno, _), row in zip(body[1:], rows[1:], strict=True):
    try:
      onset = float(row[col["onset"]])
      dur_text = row[col["duration"]].strip()
      duration = float(dur_text) if dur_text else 0.0
      label = row[col["label"]]
    except (IndexError, ValueError):
      raise PSGError(path, f"line {lineno}: cannot parse {row}") from None
    if duration < 0:
      raise PSGError(path, f"line {lineno}: negative duration {duration}")
    records.append((onset, duration, label))
  return core.from_records(records, path, respiratory_scored=scored, epoch_len=epoch_len)
