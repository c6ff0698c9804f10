r"""Spectral-feature baseline: classical per-window features → the probes' logistic regression.

  # the recordings a pretraining run held out (its splits.json), its input channels
  python experiments/spectral_baseline.py --store=runs/demo/stores/synthetic \
      --split_from_checkpoint=runs/demo/pretrain_loo --task=staging,sdb \
      --label_fractions=0.01,0.1,1.0 --out=runs/demo/spectral
  # chosen recordings
  python experiments/spectral_baseline.py --store=STORE --recordings=SC4001E0,SC4011E0 --out=OUT

Writes `<out>/<task>_<fraction>.npz` (predictions format v1) and `<out>/summary.json`; score them
with `experiments/evaluate.py --predictions=spectral:<out>/staging_1.npz`. Windows, outer folds
and label subsets are those the embedding probes use on an export of the same recordings
(docs/evaluation.md, "Baselines"). Numpy + scikit-learn; jax is imported only to recompute the
split of a run that predates splits.json.
"""

from absl import app, flags, logging

from sleepfm_jax.evaluation import baselines, probes, suite

_STORE = flags.DEFINE_string("store", None, "Window store.", required=True)
_RECORDINGS = flags.DEFINE_list("recordings", None, "Recording ids (default: all).")
_SPLIT_FROM = flags.DEFINE_string(
    "split_from_checkpoint", None,
    "A pretraining work directory (or checkpoint in it): use its held-out 'downstream' "
    "recordings and its input channels.")
_TASK = flags.DEFINE_list("task", ["staging", "sdb"], "Tasks: staging, sdb.")
_FOLDS = flags.DEFINE_integer("folds", 5, "Outer folds (grouped by subject).")
_INNER_FOLDS = flags.DEFINE_integer("inner_folds", 3, "Inner folds for choosing C.")
_C_GRID = flags.DEFINE_list("c_grid", ["0.001", "0.01", "0.1", "1", "10"], "C values.")
_MAX_ITER = flags.DEFINE_integer("max_iter", probes.ProbeConfig.max_iter,
                                 "lbfgs iteration cap.")
_GAP = flags.DEFINE_integer("gap", 10, "Windows dropped between train/test blocks (one subject).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of folds and label subsampling.")
_LABEL_FRACTIONS = flags.DEFINE_list("label_fractions", ["1.0"], "e.g. 0.01,0.1,1.0.")
_BLAS_THREADS = flags.DEFINE_integer("blas_threads", 1, "BLAS threads per fit (0: default).")
_NAME = flags.DEFINE_string("name", "spectral", "Name stored in the predictions files.")
_SCALER = flags.DEFINE_enum(
    "scaler", probes.ProbeConfig.scaler, list(probes.SCALERS),
    "StandardScaler fit on every window of the outer training fold ('fold', labels unused) or on "
    "its labelled windows at the label fraction only ('labelled').")
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)


def main(argv):
  del argv
  if _RECORDINGS.value and _SPLIT_FROM.value:
    raise app.UsageError("give --recordings or --split_from_checkpoint, not both")
  recordings, channels, extra = _RECORDINGS.value, None, {}
  if _SPLIT_FROM.value:
    from sleepfm_jax.training import runs  # pylint: disable=import-outside-toplevel

    recordings, channels, extra = runs.downstream_selection(_SPLIT_FROM.value, _STORE.value)
  config = probes.ProbeConfig(
      c_grid=tuple(float(c) for c in _C_GRID.value), max_iter=_MAX_ITER.value,
      outer_folds=_FOLDS.value, inner_folds=_INNER_FOLDS.value, gap=_GAP.value, seed=_SEED.value,
      scaler=_SCALER.value, blas_threads=_BLAS_THREADS.value or None)
  results = baselines.spectral_baseline(
      _STORE.value, tuple(_TASK.value), recordings=recordings, channels=channels, config=config,
      label_fractions=suite.fractions(_LABEL_FRACTIONS.value), name=_NAME.value, meta=extra,
      log=logging.info)
  path = baselines.save_results(_OUT.value, results, store=_STORE.value, recordings=recordings,
                                **extra)
  print(path)


if __name__ == "__main__":
  app.run(main)
