"""Host-sharded preprocessing: parts written shard by shard (in one process, and by a 2-process
jax.distributed job through the command line) merge into the store one process writes."""

import json
import pathlib

import pytest

from sleepfm_jax.configs import preprocess as preprocess_configs
from sleepfm_jax.data import discovery, sharded
from sleepfm_jax.data.store import StoreError, WindowStore

# The settings conftest's synthetic_store was written with (one process, given no unpaired files:
# the reports are compared without them, and the merged list is checked on its own).
CONFIG = {"sample_rate": 32, "montage": "standard", "dtype": "float32", "sdb_scored": "yes"}
TIMINGS = ("elapsed_s", "seconds", "output", "parts", "unpaired", "alternate_annotations")


def _without(obj, keys=TIMINGS):
  if isinstance(obj, dict):
    return {k: _without(v, keys) for k, v in obj.items() if k not in keys}
  if isinstance(obj, list):
    return [_without(v, keys) for v in obj]
  return obj


def assert_same_store(a: pathlib.Path, b: pathlib.Path) -> None:
  """Same index, same shard files byte for byte, same report but for timings and paths."""
  assert json.loads((a / "index.json").read_text()) == json.loads((b / "index.json").read_text())
  files = lambda root: sorted(p.relative_to(root) for p in (root / "shards").rglob("*")
                              if p.is_file())
  assert files(a) == files(b) and files(a)
  for rel in files(a):
    assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
  ra, rb = (json.loads((x / "report.json").read_text()) for x in (a, b))
  assert _without(ra) == _without(rb)


def _unpaired(report):
  return [(u["path"], u["reason"]) for u in report["unpaired"]]


def test_two_shards_and_merge_equal_one_process(synthetic_store, tmp_path):
  single = pathlib.Path(synthetic_store)
  specs, unpaired = discovery.discover([str(single.parent / "edf")])
  out = tmp_path / "store"
  assert [s.recording_id for s in sharded.shard_specs(specs, 2, 1)] == sorted(
      s.recording_id for s in specs)[1::2]
  for i in (1, 0):  # any order; each part is an ordinary store of its own recordings
    report = sharded.preprocess_shard(specs, out, CONFIG, num_shards=2, shard_index=i,
                                      unpaired=unpaired, progress=False)
    assert report["files"]["ok"] == 3
    assert len(WindowStore(sharded.part_dir(out, i, 2)).recording_ids) == 3
  merged = sharded.merge_shards(out)
  assert merged["parts"] == 2 and not sharded.parts_dir(out).exists()
  assert _unpaired(merged) == unpaired and len(unpaired) == 6  # once each, not once per part
  assert_same_store(single, out)
  with pytest.raises(StoreError, match="no parts to merge"):
    sharded.merge_shards(out)


def test_merge_refuses_incomplete_or_mismatched_parts(synthetic_store, tmp_path):
  specs, _ = discovery.discover([str(pathlib.Path(synthetic_store).parent / "edf")])
  specs = specs[:2]
  out = tmp_path / "store"
  sharded.preprocess_shard(specs, out, CONFIG, num_shards=2, shard_index=0, progress=False)
  with pytest.raises(StoreError, match=r"1 of 2 part\(s\) missing or unfinished"):
    sharded.merge_shards(out)
  sharded.preprocess_shard(specs, out, {**CONFIG, "sample_rate": 16}, num_shards=2,
                           shard_index=1, progress=False)
  with pytest.raises(StoreError, match=r"written with other settings .*'sample_rate'"):
    sharded.merge_shards(out)
  (out / "x").mkdir(parents=True)
  with pytest.raises(StoreError, match="output folder is not empty"):
    sharded.preprocess_shard(specs, out, CONFIG, num_shards=2, shard_index=1, progress=False)
  with pytest.raises(ValueError, match="shard_index 2 is not in"):
    sharded.shard_specs(specs, 2, 2)


@pytest.mark.multiprocess
def test_two_process_job_through_the_cli(synthetic_store, tmp_path):
  """`--num_shards/--shard_index` default to the job's process count and index; process 0
  merges once both parts are written."""
  from multiprocess import REPO, run_processes  # pylint: disable=import-outside-toplevel

  single = pathlib.Path(synthetic_store)
  assert preprocess_configs.get_config("synthetic").sdb_scored == CONFIG["sdb_scored"]
  out = tmp_path / "store"
  logs = run_processes(
      REPO / "experiments" / "preprocess.py",
      [f"--input={single.parent / 'edf'}", f"--out={out}", "--noprogress",
       "--config=synthetic",
       "--config.sample_rate=32", "--config.dtype=float32"],
      log_dir=tmp_path / "logs", num_processes=2, local_devices=1, timeout=300,
      coordinator_flag="--coordinator_address")
  assert ["shard 0 of 2: files: 3 ok" in logs[0], "shard 1 of 2: files: 3 ok" in logs[1]] == [
      True, True]
  assert ["merged 2 part(s)" in log for log in logs] == [True, False]
  assert_same_store(single, out)
  _, unpaired = discovery.discover([str(single.parent / "edf")])
  assert _unpaired(json.loads((out / "report.json").read_text())) == unpaired
