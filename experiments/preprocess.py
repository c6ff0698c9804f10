r"""Preprocesses PSG recordings into a window store.

  python experiments/preprocess.py --input=/data/sleep-edf --out=/data/store \
      --config=sleepedf --config.workers=4

Inputs are a folder (searched recursively), files, or a manifest CSV
(`signal_path,annotation_path,subject_id[,recording_id]`). `--config` is a preset of the package's
`configs/preprocess.py` (default, synthetic, sleepedf, paper) or FILE.py[:ARG]. Prints a summary;
the full report is written to <out>/report.json. Exit status 1 when no recording could be
processed.
"""

import os

from absl import app, flags

from sleepfm_jax import cli
from sleepfm_jax.data import discovery
from sleepfm_jax.data import preprocess as pp

_CONFIG = cli.define_config("preprocess", "default", "Preprocessing config (preset or file).")
_INPUT = flags.DEFINE_multi_string("input", None, "Folder(s) or file(s) to preprocess.")
_MANIFEST = flags.DEFINE_string("manifest", None, "Manifest CSV; replaces --input pairing.")
_OUT = flags.DEFINE_string("out", None, "Output store folder.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing store at --out.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
cli.define_renamed("output", "out")
cli.require("out")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.start(jax=False)
  if not _INPUT.value and not _MANIFEST.value:
    raise app.UsageError("give --input or --manifest")
  cfg = pp.PreprocessConfig.from_dict(_CONFIG.value.to_dict())
  inputs = _INPUT.value or None
  specs, unpaired = discovery.discover(inputs, manifest=_MANIFEST.value)
  print(f"found {len(specs)} recording(s), {len(unpaired)} unpaired file(s)")
  report = pp.preprocess(specs, _OUT.value, cfg, overwrite=_OVERWRITE.value, unpaired=unpaired,
                         progress=_PROGRESS.value)
  print(pp.format_summary(report))
  print(f"report: {os.path.join(_OUT.value, 'report.json')}")
  return 0 if report["files"]["ok"] else 1


if __name__ == "__main__":
  cli.run(main)
