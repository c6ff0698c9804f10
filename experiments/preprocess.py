r"""Preprocesses PSG recordings into a window store.

  python experiments/preprocess.py --input=/data/sleep-edf --output=/data/store \
      --config=experiments/configs/preprocess.py:sleepedf --config.workers=4

Inputs are a folder (searched recursively), files, or a manifest CSV
(`signal_path,annotation_path,subject_id[,recording_id]`). Prints a summary; the full report is
written to <output>/report.json. Exit status 1 when no recording could be processed.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from sleepfm_jax.data import discovery
from sleepfm_jax.data import preprocess as pp

_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "preprocess.py")
_CONFIG = config_flags.DEFINE_config_file("config", f"{_CONFIGS}:default",
                                          "Preprocessing config (file:preset).")
_INPUT = flags.DEFINE_multi_string("input", None, "Folder(s) or file(s) to preprocess.")
_MANIFEST = flags.DEFINE_string("manifest", None, "Manifest CSV; replaces --input pairing.")
_OUTPUT = flags.DEFINE_string("output", None, "Output store folder.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing store at --output.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
_SDB_FOR = flags.DEFINE_multi_string(
    "sdb_scored_for", [], "RECORDING_ID_OR_FOLDER=auto|yes|no: whether respiratory events were "
    "scored, for one recording or every recording under a folder (repeatable).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
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
  report = pp.preprocess(specs, _OUTPUT.value, cfg, overwrite=_OVERWRITE.value, unpaired=unpaired,
                         progress=_PROGRESS.value)
  print(pp.format_summary(report))
  print(f"report: {os.path.join(_OUTPUT.value, 'report.json')}")
  return 0 if report["files"]["ok"] else 1


if __name__ == "__main__":
  app.run(main)
