r"""Evaluates exported embeddings (and baseline predictions) and writes a report.

  python experiments/evaluate.py --embeddings=loo:runs/loo/emb,pairwise:runs/pw/emb \
      --task=staging,sdb,retrieval --folds=5 --label_fractions=0.01,0.1,1.0 \
      --predictions=cnn:runs/cnn/staging_1.npz --out=runs/eval

Writes `<out>/report.md`, `<out>/report.json`, `<out>/plots/*.png` and the probes' out-of-fold
predictions as `<out>/predictions/<source>_<task>_<feature>_<fraction>.npz` (the predictions format,
`sleepfm_jax.evaluation.predictions`). Numpy + scikit-learn only: no accelerator needed. The probe
flags' defaults are those of `evaluation.probes.ProbeConfig`, the others those of
`evaluation.suite.SuiteConfig`.
"""

from __future__ import annotations

import pathlib

from absl import app, flags, logging

from sleepfm_jax import cli
from sleepfm_jax.evaluation import probes, report, suite
from sleepfm_jax.evaluation.embeddings import load_embeddings
from sleepfm_jax.evaluation.predictions import load_predictions

_DEFAULT = suite.SuiteConfig()
_EMBEDDINGS = flags.DEFINE_string(
    "embeddings", "", "Export directories, comma-separated, optionally named: 'loo:DIR1,pw:DIR2'.")
_PREDICTIONS = flags.DEFINE_string(
    "predictions", "", "Predictions files (CNN / spectral baselines), 'name:FILE.npz,...'.")
_TASK = flags.DEFINE_list("task", list(_DEFAULT.tasks), "Tasks: staging, sdb, retrieval.")
_FEATURES = flags.DEFINE_list("features", list(probes.FEATURE_KINDS),
                              "Feature kinds to probe: bas, ecg, resp, concat, combined, a+b.")
cli.define_probe_flags()
cli.define_label_fractions_flag()
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", _DEFAULT.n_boot,
                                  "Bootstrap replicates for 95% CIs (0: none).")
_CANDIDATES = flags.DEFINE_integer("retrieval_candidates", _DEFAULT.retrieval_candidates,
                                   "Candidates per retrieval query (0: all windows).")
_METRICS_JSONL = flags.DEFINE_string("metrics_jsonl", None,
                                     "Training metrics JSONL to plot training curves from.")
_TSNE_POINTS = flags.DEFINE_integer("tsne_points", 2000, "Windows in the t-SNE plot.")
_OUT = flags.DEFINE_string("out", None, "Output folder for the report.", required=True)


def main(argv):
  del argv
  cli.start(jax=False)
  if not _EMBEDDINGS.value and not _PREDICTIONS.value:
    raise app.UsageError("give --embeddings and/or --predictions")
  embeddings = {name: load_embeddings(path)
                for name, path in suite.parse_named(_EMBEDDINGS.value).items()}
  predictions = {name: load_predictions(path)
                 for name, path in suite.parse_named(_PREDICTIONS.value).items()}
  probe = cli.probe_config()
  config = suite.SuiteConfig(
      tasks=tuple(_TASK.value), features=tuple(_FEATURES.value),
      label_fractions=suite.fractions(flags.FLAGS.label_fractions), probe=probe,
      n_boot=_BOOTSTRAP.value, boot_seed=probe.seed,
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
  cli.run(main)
