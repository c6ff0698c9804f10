r"""Spectral-feature baseline: classical per-window features → the probes' logistic regression.

  # the recordings a pretraining run held out (its splits.json), its input channels
  python experiments/spectral_baseline.py --store=runs/demo/stores/synthetic \
      --split_from_checkpoint=runs/demo/pretrain_loo --task=staging,sdb \
      --label_fractions=0.01,0.1,1.0 --out=runs/demo/spectral
  # chosen recordings
  python experiments/spectral_baseline.py --store=STORE --recordings=SC4001E0,SC4011E0 --out=OUT
  # cardiorespiratory only: staging from the ECG and respiratory channels' features
  python experiments/spectral_baseline.py --store=STORE --modalities=ecg,resp --out=OUT

Writes `<out>/<task>_<fraction>.npz` (predictions format v1) and `<out>/summary.json`; score them
with `experiments/evaluate.py --predictions=spectral:<out>/staging_1.npz`. Windows, outer folds
and label subsets are those the embedding probes use on an export of the same recordings
(docs/evaluation.md, "Baselines"). Numpy + scikit-learn only (a run's splits are read by the
numpy-only `training.runs`); the probe flags' defaults are `evaluation.probes.ProbeConfig`'s.
"""

from absl import app, flags, logging

from sleepfm_jax import cli
from sleepfm_jax.evaluation import baselines, suite
from sleepfm_jax.training import runs

_STORE = flags.DEFINE_string("store", None, "Window store.", required=True)
_RECORDINGS = flags.DEFINE_list("recordings", None, "Recording ids (default: all).")
_SPLIT_FROM = cli.define_split_from_checkpoint_flag()
_TASK = flags.DEFINE_list("task", ["staging", "sdb"], "Tasks: staging, sdb.")
_MODALITIES = flags.DEFINE_list(
    "modalities", None, "Only these modalities' channels (bas, ecg, resp); default all. The "
    "other feature groups are zeros with their indicator 0.")
cli.define_probe_flags(("folds", "inner_folds", "c_grid", "max_iter", "gap", "seed", "scaler",
                        "blas_threads"))
cli.define_label_fractions_flag()
_NAME = flags.DEFINE_string("name", "spectral", "Name stored in the predictions files.")
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)


def main(argv):
  del argv
  cli.start(jax=False)
  if _RECORDINGS.value and _SPLIT_FROM.value:
    raise app.UsageError("give --recordings or --split_from_checkpoint, not both")
  recordings, channels, extra = _RECORDINGS.value, None, {}
  if _SPLIT_FROM.value:
    recordings, channels, extra = runs.downstream_selection(_SPLIT_FROM.value, _STORE.value)
  results = baselines.spectral_baseline(
      _STORE.value, tuple(_TASK.value), recordings=recordings, channels=channels,
      modalities=_MODALITIES.value,
      config=cli.probe_config(), label_fractions=suite.fractions(flags.FLAGS.label_fractions),
      name=_NAME.value, meta=extra, log=logging.info)
  path = baselines.save_results(_OUT.value, results, store=_STORE.value, recordings=recordings,
                                **extra)
  print(path)


if __name__ == "__main__":
  cli.run(main)
