r"""Preprocesses PSG recordings into a window store.

  python experiments/preprocess.py --input=/data/sleep-edf --out=/data/store \
      --config=sleepedf --config.workers=4

Inputs are a folder (searched recursively), files, or a manifest CSV
(`signal_path,annotation_path,subject_id[,recording_id]`). `--config` is a preset of the package's
`configs/preprocess.py` (default, synthetic, sleepedf, paper) or FILE.py[:ARG]. Prints a summary;
the full report is written to <out>/report.json. Exit status 1 when no recording could be
processed.

Several hosts (docs/multihost.md): with `--distributed` (or the coordinator flags) every process of
the job takes its share of the recordings (`--num_shards`/`--shard_index` default to the process
count and index), writes them into `<out>.parts/`, and process 0 merges the parts into one store
once all are done. Without a job, run each shard with explicit `--num_shards=N --shard_index=i`,
then once `--merge`.
"""

import os

from absl import app, flags

from sleepfm_jax import cli
from sleepfm_jax.data import discovery, sharded
from sleepfm_jax.data import preprocess as pp
from sleepfm_jax.data.store import StoreError

FLAGS = flags.FLAGS
_CONFIG = cli.define_config("preprocess", "default", "Preprocessing config (preset or file).")
_INPUT = flags.DEFINE_multi_string("input", None, "Folder(s) or file(s) to preprocess.")
_MANIFEST = flags.DEFINE_string("manifest", None, "Manifest CSV; replaces --input pairing.")
_OUT = flags.DEFINE_string("out", None, "Output store folder.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing store at --out.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", None, "Split the recordings over this many hosts (default: the process count of "
    "a --distributed job, else 1).")
_SHARD_INDEX = flags.DEFINE_integer(
    "shard_index", None, "This host's shard (default: the process index of a --distributed job).")
_MERGE = flags.DEFINE_bool("merge", False, "Only merge the finished parts in <out>.parts into "
                           "the store at --out (after every shard has run).")
cli.define_distributed_flags()
_SDB_FOR = flags.DEFINE_multi_string(
    "sdb_scored_for", [], "RECORDING_ID_OR_FOLDER=auto|yes|no: whether respiratory events were "
    "scored, for one recording or every recording under a folder (repeatable).")
cli.define_renamed("output", "out")
cli.require("out")


def _job():
  """(num_shards, shard_index, barrier or None): from the flags, else from jax.distributed."""
  if not (FLAGS.coordinator_address or FLAGS.distributed):
    if (_NUM_SHARDS.value or 1) > 1 and _SHARD_INDEX.value is None:
      raise app.UsageError("--num_shards without a job (--distributed) needs --shard_index")
    return _NUM_SHARDS.value or 1, _SHARD_INDEX.value or 0, None
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.training import sharding  # pylint: disable=import-outside-toplevel

  jax.config.update("jax_platforms", "cpu")  # preprocessing needs no accelerator
  sharding.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                  FLAGS.process_id, auto=FLAGS.distributed)
  n = jax.process_count() if _NUM_SHARDS.value is None else _NUM_SHARDS.value
  i = jax.process_index() if _SHARD_INDEX.value is None else _SHARD_INDEX.value
  return n, i, multihost_utils.sync_global_devices


def _merge() -> int:
  report = sharded.merge_shards(_OUT.value, overwrite=_OVERWRITE.value)
  print(f"merged {report['parts']} part(s)\n{pp.format_summary(report)}")
  print(f"report: {os.path.join(_OUT.value, 'report.json')}")
  return 0 if report["files"]["ok"] else 1


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.start(jax=False)
  if _MERGE.value:
    return _merge()
  if not _INPUT.value and not _MANIFEST.value:
    raise app.UsageError("give --input or --manifest")
  settings = _CONFIG.value.to_dict()
  pairs = [v.rsplit("=", 1) for v in _SDB_FOR.value]
  if any(len(pair) != 2 for pair in pairs):
    raise app.UsageError("--sdb_scored_for takes RECORDING_ID_OR_FOLDER=auto|yes|no")
  settings["sdb_scored_for"] = {**settings.get("sdb_scored_for", {}), **dict(pairs)}
  cfg = pp.PreprocessConfig.from_dict(settings)
  inputs = _INPUT.value or None
  specs, unpaired = discovery.discover(inputs, manifest=_MANIFEST.value)
  print(f"found {len(specs)} recording(s), {len(unpaired)} unpaired file(s)")
  n, i, barrier = _job()
  if n > 1:
    report = sharded.preprocess_shard(specs, _OUT.value, cfg, num_shards=n, shard_index=i,
                                      overwrite=_OVERWRITE.value, unpaired=unpaired,
                                      progress=_PROGRESS.value)
    print(f"shard {i} of {n}: {pp.format_summary(report)}")
    if barrier is None:
      print(f"part written to {sharded.part_dir(_OUT.value, i, n)}; once every shard has run: "
            "--merge")
      return 0 if report["files"]["ok"] else 1
    barrier("preprocess: every shard written")
    code = 0
    if i == 0:
      try:
        code = _merge()
      except StoreError as e:  # the other processes still reach the barrier below
        print(f"merge failed: {e}")
        code = 1
    barrier("preprocess: parts merged")
    import jax  # pylint: disable=import-outside-toplevel

    jax.distributed.shutdown()  # leave the job now, not from an exit handler
    return code
  report = pp.preprocess(specs, _OUT.value, cfg, overwrite=_OVERWRITE.value, unpaired=unpaired,
                         progress=_PROGRESS.value)
  print(pp.format_summary(report))
  print(f"report: {os.path.join(_OUT.value, 'report.json')}")
  return 0 if report["files"]["ok"] else 1


if __name__ == "__main__":
  cli.run(main)
