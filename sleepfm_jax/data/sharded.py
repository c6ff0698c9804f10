"""Host-sharded preprocessing: every host of a job writes its own recordings, one merge builds
the store.

Shard `i` of `n` takes every n-th recording (recordings sorted by id) and writes an ordinary window
store into `<out>.parts/part-0000i-of-0000n/`. Once every part is complete (its `index.json`
written), `merge_shards(out)` moves the parts' shard folders into `<out>/shards/`, writes one
`index.json` and one `report.json` for all of them and removes `<out>.parts/`. The result is the
store a single process would have written: the same index and the same shard files byte for
byte; the report differs only in timings.

numpy only: the process index and count come from the caller (`experiments/preprocess.py` asks
`jax.distributed`, this module never imports jax).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from sleepfm_jax.data import discovery
from sleepfm_jax.data import preprocess as pp
from sleepfm_jax.data.channels import Montage
from sleepfm_jax.data.store import StoreError, StoreWriter

_PART = re.compile(r"^part-(\d{5})-of-(\d{5})$")
# Index fields every part must agree on (they describe the store, not its recordings).
_SHARED = ("format", "version", "sample_rate", "window_seconds", "samples", "dtype", "montage",
           "preprocessing", "stages")


def parts_dir(out_dir: str | os.PathLike) -> pathlib.Path:
  """Where the parts of store `out_dir` are written: the sibling folder `<out_dir>.parts`."""
  out = pathlib.Path(out_dir)
  return out.with_name(out.name + ".parts")


def part_dir(out_dir: str | os.PathLike, shard_index: int, num_shards: int) -> pathlib.Path:
  return parts_dir(out_dir) / f"part-{shard_index:05d}-of-{num_shards:05d}"


def shard_specs(specs: Sequence[discovery.RecordingSpec], num_shards: int,
                shard_index: int) -> list[discovery.RecordingSpec]:
  """This shard's recordings: every `num_shards`-th one of `specs` sorted by recording id."""
  if num_shards < 1 or not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index {shard_index} is not in [0, num_shards={num_shards})")
  return sorted(specs, key=lambda s: s.recording_id)[shard_index::num_shards]


def preprocess_shard(
    specs: Sequence[discovery.RecordingSpec],
    out_dir: str | os.PathLike,
    config: pp.PreprocessConfig | Mapping[str, Any] | None = None,
    *,
    num_shards: int,
    shard_index: int,
    overwrite: bool = False,
    unpaired: Sequence[tuple[str, str]] = (),
    progress: bool = True,
) -> dict:
  """Preprocesses this shard's recordings of `specs` into its part of store `out_dir`; returns the
  part's report. Every shard should be given the same `specs` (e.g. the same discovery)."""
  out = pathlib.Path(out_dir)
  if not overwrite and out.is_dir() and any(out.iterdir()):
    raise StoreError(f"{out}: output folder is not empty (pass overwrite=True to replace an "
                     "existing window store when the parts are merged)")
  mine = shard_specs(specs, num_shards, shard_index)
  return pp.preprocess(mine, part_dir(out_dir, shard_index, num_shards), config,
                       overwrite=overwrite, unpaired=unpaired, progress=progress)


def _parts(out_dir: pathlib.Path) -> list[pathlib.Path]:
  root = parts_dir(out_dir)
  found = sorted(p for p in root.iterdir() if _PART.match(p.name)) if root.is_dir() else []
  if not found:
    raise StoreError(f"{root}: no parts to merge (part-IIIII-of-NNNNN folders)")
  counts = {int(_PART.match(p.name).group(2)) for p in found}
  if len(counts) != 1:
    raise StoreError(f"{root}: parts of different shard counts {sorted(counts)}")
  n = counts.pop()
  want = [part_dir(out_dir, i, n) for i in range(n)]
  missing = [str(p) for p in want if not (p / "index.json").is_file()]
  if missing:
    raise StoreError(f"{root}: {len(missing)} of {n} part(s) missing or unfinished (no "
                     f"index.json): {missing}")
  return want


def merge_shards(out_dir: str | os.PathLike, *, overwrite: bool = False) -> dict:
  """Merges the complete parts of store `out_dir` into it; returns the merged report.

  Raises:
    StoreError: a part missing or unfinished, parts written with different settings, or a
      recording id in two parts.
  """
  out = pathlib.Path(out_dir)
  parts = _parts(out)
  indices = [json.loads((p / "index.json").read_text()) for p in parts]
  reports = [json.loads((p / "report.json").read_text()) for p in parts]
  for p, index in zip(parts[1:], indices[1:], strict=True):
    differ = [k for k in _SHARED if index.get(k) != indices[0].get(k)]
    if differ:
      raise StoreError(f"{p}: written with other settings than {parts[0]}: {differ}")
  owner: dict[str, pathlib.Path] = {}
  for p, index in zip(parts, indices, strict=True):
    for r in index["recordings"]:
      if r["recording_id"] in owner:
        raise StoreError(f"recording {r['recording_id']!r} is in {owner[r['recording_id']]} and "
                         f"{p}")
      owner[r["recording_id"]] = p
  first = indices[0]
  writer = StoreWriter(out, montage=Montage.from_dict(first["montage"]),
                       sample_rate=first["sample_rate"], window_seconds=first["window_seconds"],
                       dtype=first["dtype"], preprocessing=first["preprocessing"],
                       overwrite=overwrite)
  for rid, p in sorted(owner.items()):
    os.replace(p / "shards" / rid, out / "shards" / rid)
    writer.register(json.loads((out / "shards" / rid / "recording.json").read_text()))
  results = [r for rep in reports for r in rep["recordings"]]
  unpaired = sorted({(u["path"], u["reason"]) for rep in reports for u in rep["unpaired"]})
  cfg = pp.PreprocessConfig.from_dict(reports[0]["config"])
  report = pp.summarise(results, cfg, unpaired, max(rep["elapsed_s"] for rep in reports), str(out))
  report["parts"] = len(parts)
  writer.finalize(report)
  shutil.rmtree(parts_dir(out))
  return report
