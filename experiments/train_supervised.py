r"""End-to-end supervised CNN baseline, trained from scratch in every outer fold of the probes.

  # the recordings a pretraining run held out, with the channels its encoders saw
  python experiments/train_supervised.py --config=experiments/configs/supervised.py:demo \
      --store=runs/demo/stores/synthetic --split_from_checkpoint=runs/demo/pretrain_loo \
      --task=staging,sdb --label_fractions=0.01,0.1,1.0 --out=runs/demo/cnn
  python experiments/train_supervised.py --config=experiments/configs/supervised.py:paper \
      --store=/data/stores/shhs_256hz --recordings=... --out=runs/paper/cnn

Writes `<out>/<task>_<fraction>.npz` (predictions format v1), `<out>/summary.json` and
`<out>/logs/<task>_<fraction>/fold_<f>/metrics.jsonl`; score with
`experiments/evaluate.py --predictions=cnn:<out>/staging_1.npz`. Windows, outer folds and
label subsets are those the embedding probes use on an export of the same recordings
(docs/evaluation.md, "Baselines").
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/supervised.py:demo", "Config file and preset.",
    lock_config=True)
_STORE = flags.DEFINE_string("store", None, "Window store.", required=True)
_RECORDINGS = flags.DEFINE_list("recordings", None, "Recording ids (default: all).")
_SPLIT_FROM = flags.DEFINE_string(
    "split_from_checkpoint", None,
    "A pretraining work directory (or checkpoint in it): use its held-out 'downstream' "
    "recordings and its input channels.")
_TASK = flags.DEFINE_list("task", ["staging", "sdb"], "Tasks: staging, sdb.")
_FOLDS = flags.DEFINE_integer("folds", 5, "Outer folds (grouped by subject).")
_GAP = flags.DEFINE_integer("gap", 10, "Windows dropped between train/test blocks (one subject).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of folds and label subsampling (as the probes').")
_LABEL_FRACTIONS = flags.DEFINE_list("label_fractions", ["1.0"], "e.g. 0.01,0.1,1.0.")
_NAME = flags.DEFINE_string("name", "cnn", "Name stored in the predictions files.")
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None, "Simulate this many CPU devices (testing sharding on one machine).")


def main(argv):
  del argv
  from sleepfm_jax.training import hostmem  # pylint: disable=import-outside-toplevel
  hostmem.retain_freed_memory()  # before JAX starts its CPU client (see hostmem.py)
  if _RECORDINGS.value and _SPLIT_FROM.value:
    raise app.UsageError("give --recordings or --split_from_checkpoint, not both")
  import jax  # pylint: disable=import-outside-toplevel

  if _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  from sleepfm_jax.training import runs, supervised  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.evaluation import probes, suite  # pylint: disable=import-outside-toplevel

  recordings, channels, extra = _RECORDINGS.value, None, {}
  if _SPLIT_FROM.value:
    recordings, channels, extra = runs.downstream_selection(_SPLIT_FROM.value, _STORE.value)
  logging.info("devices: %s", jax.devices())
  supervised.run(
      _STORE.value, _CONFIG.value, tuple(_TASK.value), recordings=recordings, channels=channels,
      probe_config=probes.ProbeConfig(outer_folds=_FOLDS.value, gap=_GAP.value, seed=_SEED.value),
      label_fractions=suite.fractions(_LABEL_FRACTIONS.value), out_dir=_OUT.value,
      name=_NAME.value, meta=extra, log=logging.info)
  print(f"{_OUT.value}/summary.json")


if __name__ == "__main__":
  app.run(main)
