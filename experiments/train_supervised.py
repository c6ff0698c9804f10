r"""End-to-end supervised CNN baseline, trained from scratch in every outer fold of the probes.

  # the recordings a pretraining run held out, with the channels its encoders saw
  python experiments/train_supervised.py --config=demo \
      --store=runs/demo/stores/synthetic --split_from_checkpoint=runs/demo/pretrain_loo \
      --task=staging,sdb --label_fractions=0.01,0.1,1.0 --out=runs/demo/cnn
  python experiments/train_supervised.py --config=paper \
      --store=/data/stores/shhs_256hz --recordings=... --out=runs/paper/cnn

`--config` is a preset of the package's `configs/supervised.py` (demo, paper) or FILE.py[:ARG].
Writes `<out>/<task>_<fraction>.npz` (predictions format v1), `<out>/summary.json` and
`<out>/logs/<task>_<fraction>/fold_<f>/metrics.jsonl`; score with
`experiments/evaluate.py --predictions=cnn:<out>/staging_1.npz`. Windows, outer folds and
label subsets are those the embedding probes use on an export of the same recordings
(docs/evaluation.md, "Baselines").
"""

from absl import app, flags, logging

from sleepfm_jax import cli

_CONFIG = cli.define_config("supervised", "demo")
_STORE = flags.DEFINE_string("store", None, "Window store.", required=True)
_RECORDINGS = flags.DEFINE_list("recordings", None, "Recording ids (default: all).")
_SPLIT_FROM = cli.define_split_from_checkpoint_flag()
_TASK = flags.DEFINE_list("task", ["staging", "sdb"], "Tasks: staging, sdb.")
cli.define_probe_flags(("folds", "gap", "seed"))
cli.define_label_fractions_flag()
_NAME = flags.DEFINE_string("name", "cnn", "Name stored in the predictions files.")
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
cli.define_cpu_devices_flag()
cli.define_compilation_cache_flag()


def main(argv):
  del argv
  if _RECORDINGS.value and _SPLIT_FROM.value:
    raise app.UsageError("give --recordings or --split_from_checkpoint, not both")
  cli.start()
  import jax  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.evaluation import suite  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.training import runs, supervised  # pylint: disable=import-outside-toplevel

  recordings, channels, extra = _RECORDINGS.value, None, {}
  if _SPLIT_FROM.value:
    recordings, channels, extra = runs.downstream_selection(_SPLIT_FROM.value, _STORE.value)
  logging.info("devices: %s", jax.devices())
  supervised.run(
      _STORE.value, _CONFIG.value, tuple(_TASK.value), recordings=recordings, channels=channels,
      probe_config=cli.probe_config(),
      label_fractions=suite.fractions(flags.FLAGS.label_fractions), out_dir=_OUT.value,
      name=_NAME.value, meta=extra, log=logging.info)
  print(f"{_OUT.value}/summary.json")


if __name__ == "__main__":
  cli.run(main)
