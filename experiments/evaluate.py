r"""Evaluates exported embeddings (and baseline predictions) and writes a report.

  python experiments/evaluate.py --embeddings=loo:runs/loo/emb,pairwise:runs/pw/emb \
      --task=staging,sdb,retrieval --folds=5 --label_fractions=0.01,0.1,1.0 \
      --predictions=cnn:runs/cnn/staging_predictions.npz --out=runs/eval

Writes `<out>/report.md`, `<out>/report.json`, `<out>/plots/*.png` and the probes' out-of-fold
predictions as `<out>/predictions/<source>_<task>_<feature>_<fraction>.npz` (the predictions format,
`sleepfm_jax.evaluation.predictions`). Numpy + scikit-learn only: no accelerator needed.
"""

from __future__ import annotations

import pathlib

from absl import app, flags, logging

from sleepfm_jax.evaluation import probes, report, suite
from sleepfm_jax.evaluation.embeddings import load_embeddings
from sleepfm_jax.evaluation.predictions import load_predictions

_EMBEDDINGS = flags.DEFINE_string(
    "embeddings", "", "Export directories, comma-separated, optionally named: 'loo:DIR1,pw:DIR2'.")
_PREDICTIONS = flags.DEFINE_string(
    "predictions", "", "Predictions files (CNN / spectral baselines), 'name:FILE.npz,...'.")
_TASK = flags.DEFINE_list("task", ["staging", "sdb", "retrieval"],
                          "Tasks: staging, sdb, retrieval.")
_FEATURES = flags.DEFINE_list("features", list(probes.FEATURE_KINDS),
                              "Feature kinds to probe: bas, ecg, resp, concat, combined, a+b.")
_FOLDS = flags.DEFINE_integer("folds", 5, "Outer cross-validation folds (grouped by subject).")
_INNER_FOLDS = flags.DEFINE_integer("inner_folds", 3, "Inner folds for choosing C.")
_C_GRID = flags.DEFINE_list("c_grid", ["0.001", "0.01", "0.1", "1", "10"], "C values.")
_MAX_ITER = flags.DEFINE_integer("max_iter", probes.ProbeConfig.max_iter,
                                 "lbfgs iteration cap (non-convergence is reported).")
_CLASS_WEIGHT = flags.DEFINE_enum("class_weight", "balanced", ["balanced", "none"],
                                  "LogisticRegression class weighting.")
_GAP = flags.DEFINE_integer("gap", 10, "Windows dropped between train/test blocks (one subject).")
_LABEL_FRACTIONS = flags.DEFINE_list("label_fractions", ["1.0"],
                                     "Fractions of training labels, e.g. 0.01,0.1,1.0.")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 1000, "Bootstrap replicates for 95% CIs (0: none).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of folds, label subsampling, bootstrap, retrieval.")
_CANDIDATES = flags.DEFINE_integer("retrieval_candidates", 1000,
                                   "Candidates per retrieval query (0: all windows).")
_METRICS_JSONL = flags.DEFINE_string("metrics_jsonl", None,
                                     "Training metrics JSONL to plot training curves from.")
_TSNE_POINTS = flags.DEFINE_integer("tsne_points", 2000, "Windows in the t-SNE plot.")
_BLAS_THREADS = flags.DEFINE_integer("blas_threads", 1, "BLAS threads per fit (0: default).")
_SCALER = flags.DEFINE_enum(
    "scaler", probes.ProbeConfig.scaler, list(probes.SCALERS),
    "StandardScaler fit on every window of the outer training fold ('fold', labels unused) or on "
    "its labelled windows at the label fraction only ('labelled').")
_OUT = flags.DEFINE_string("out", None, "Output folder for the report.", required=True)


def main(argv):
  del argv
  if not _EMBEDDINGS.value and not _PREDICTIONS.value:
    raise app.UsageError("give --embeddings and/or --predictions")
  embeddings = {name: load_embeddings(path)
                for name, path in suite.parse_named(_EMBEDDINGS.value).items()}
  predictions = {name: load_predictions(path)
                 for name, path in suite.parse_named(_PREDICTIONS.value).items()}
  config = suite.SuiteConfig(
      tasks=tuple(_TASK.value), features=tuple(_FEATURES.value),
      label_fractions=suite.fractions(_LABEL_FRACTIONS.value),
      probe=probes.ProbeConfig(
          c_grid=tuple(float(c) for c in _C_GRID.value), max_iter=_MAX_ITER.value,
          class_weight=None if _CLASS_WEIGHT.value == "none" else _CLASS_WEIGHT.value,
          outer_folds=_FOLDS.value, inner_folds=_INNER_FOLDS.value, gap=_GAP.value,
          seed=_SEED.value, scaler=_SCALER.value, blas_threads=_BLAS_THREADS.value or None),
      n_boot=_BOOTSTRAP.value, boot_seed=_SEED.value,
      retrieval_candidates=_CANDIDATES.value or None)
  result = suite.run_suite(embeddings, predictions, config, log=logging.info)
  out = pathlib.Path(_OUT.value)
  for entry in result.entries:
    if entry.feature != "external":
      name = report.slug(f"{entry.source}_{entry.task}_{entry.feature}_{entry.label_fraction:g}")
      entry.predictions.save(out / "predictions" / f"{name}.npz")
  paths = report.write_report(out, result, metrics_jsonl=_METRICS_JSONL.value,
                              tsne_points=_TSNE_POINTS.value)
  logging.info("report: %s", paths["markdown"])
  print(paths["markdown"])


if __name__ == "__main__":
  app.run(main)
