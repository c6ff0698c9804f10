"""Sleep-stage hypnograms and scored events → per-epoch stage and SDB labels.

`read_annotations(path)` is the one entry point. Each file format is one module of this package
that defines

* `FORMAT`: its name (what `read_annotations(..., fmt=...)` takes),
* `EXTENSIONS`: the file extensions it reads (lower case, with the dot),
* `read(path, epoch_len) -> Annotations`,
* optionally `sniff(path) -> bool`, when several formats share an extension (e.g. `.xml`).

Modules are found by name (every module here except `core` and `_`-prefixed helpers), so adding a
format means adding one file. `core` holds what every format shares: the `Annotations` object, the
stage and event vocabularies of free-text labels, SDB labels and cropping.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from types import ModuleType

from sleepfm_jax.data.annotations.core import (  # noqa: F401  (the package's public API)
    CONFLICT_REASON,
    EPOCH_SECONDS,
    EVENT_KINDS,
    GAP_REASON,
    RESPIRATORY_KINDS,
    STAGES,
    STRICT_TOLERANCE,
    Annotations,
    Event,
    StageRun,
    assemble,
    crop_to_duration,
    event_kind,
    exclusion_reason,
    from_records,
    sdb_labels,
    stage_code,
)
from sleepfm_jax.data.errors import PSGError


def _format_modules() -> dict[str, ModuleType]:
  modules = {}
  for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if info.name == "core" or info.name.startswith("_"):
      continue
    module = importlib.import_module(f"{__name__}.{info.name}")
    if module.FORMAT in modules:
      raise ImportError(f"annotation format {module.FORMAT!r} defined twice")
    modules[module.FORMAT] = module
  return modules


FORMATS: dict[str, ModuleType] = _format_modules()
ANNOTATION_FORMATS = tuple(FORMATS)
ANNOTATION_EXTENSIONS = tuple(sorted({e for m in FORMATS.values() for e in m.EXTENSIONS}))


def _candidates(path: str) -> list[ModuleType]:
  ext = os.path.splitext(path)[1].lower()
  return [m for m in FORMATS.values() if ext in m.EXTENSIONS]


def annotation_format(path: str | os.PathLike) -> str | None:
  """The format name of an annotation file by its extension (and, where formats share an
  extension, its content), or None when no format reads it."""
  candidates = _candidates(os.fspath(path))
  if len(candidates) == 1:
    return candidates[0].FORMAT
  return next((m.FORMAT for m in candidates if m.sniff(os.fspath(path))), None)


def read_annotations(
    path: str | os.PathLike, fmt: str = "auto", epoch_len: float = EPOCH_SECONDS
) -> Annotations:
  """Reads an annotation file of any supported format (see docs/data.md for the table).

  Args:
    path: the annotation file.
    fmt: "auto" (by extension, and by content for `.xml`) or one of `ANNOTATION_FORMATS`.
    epoch_len: epoch length in seconds.

  Raises:
    PSGError: unknown format, unreadable or malformed file (naming the position), or no stage
      annotations.
  """
  path = os.fspath(path)
  if fmt == "auto":
    candidates = _candidates(path)
    if not candidates:
      raise PSGError(path, "unknown annotation file extension; supported: "
                     + ", ".join(ANNOTATION_EXTENSIONS))
    if not os.path.isfile(path):
      raise PSGError(path, "file not found")
    fmt = annotation_format(path)
    if fmt is None:
      raise PSGError(path, "content matches none of the annotation formats of its extension ("
                     + ", ".join(m.FORMAT for m in candidates) + ")")
  if fmt == "tsv":
    fmt = "csv"
  if fmt not in FORMATS:
    raise PSGError(path, f"unknown annotation format {fmt!r}; one of {ANNOTATION_FORMATS}")
  return FORMATS[fmt].read(path, epoch_len)
