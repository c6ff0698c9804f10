r"""What embeddings encode: out-of-fold R² of each window's spectral features from each embedding.

  python experiments/embedding_content.py --run=runs/ev/synthetic/seed_0/pretrain_loo \
      --embeddings=loo=runs/ev/synthetic/seed_0/emb_loo,untrained=runs/ev/synthetic/seed_0/emb_untrained \
      --out=docs/results/content_synthetic.json

`--run`: the pretraining run whose held-out windows were exported (its store and input channels);
every embedding set must be an export of the same windows. Ridge regression from each modality's
embedding (and `concat`) to each feature of `evaluation/features.py`, folds by subject
(`evaluation/content.py`). Numpy + scikit-learn only.
"""

import json
import pathlib

import numpy as np
from absl import flags

from sleepfm_jax import cli
from sleepfm_jax.data.store import WindowStore
from sleepfm_jax.evaluation import baselines, content, features
from sleepfm_jax.evaluation import embeddings as emb_format
from sleepfm_jax.training import runs

_RUN = flags.DEFINE_string("run", None, "Pretraining run (its splits.json).", required=True)
_EMB = flags.DEFINE_list("embeddings", None, "name=folder of an export, ...", required=True)
_FOLDS = flags.DEFINE_integer("folds", 3, "Folds by subject.")
_OUT = flags.DEFINE_string("out", None, "JSON output.")


def feature_table(run: str, es: emb_format.EmbeddingSet) -> tuple[np.ndarray, list[str]]:
  """The spectral features of the exported windows, rows in the export's order."""
  split = runs.run_splits(run)
  store = WindowStore(split["store"])
  table = baselines.select_windows(store, es.recordings, split["channels"])
  if not (np.array_equal(table.recording_id, es.recording_id)
          and np.array_equal(table.epoch, es.epoch)):
    raise ValueError(f"the export does not list the windows of {run}'s held-out recordings in "
                     "store order")
  x = baselines.store_features(store, table)
  names = features.feature_names()
  keep = [j for j, n in enumerate(names) if not n.endswith("_present")]
  return x[:, keep], [names[j] for j in keep]


def main(argv):
  del argv
  cli.start(jax=False)
  paths = dict(item.partition("=")[::2] for item in _EMB.value)
  sets = {name: emb_format.load_embeddings(path) for name, path in paths.items()}
  first = next(iter(sets.values()))
  for name, es in sets.items():
    if not (np.array_equal(es.recording_id, first.recording_id)
            and np.array_equal(es.epoch, first.epoch)):
      raise ValueError(f"embedding set {name!r} lists other windows than the first one")
  targets, names = feature_table(_RUN.value, first)
  result = {"run": _RUN.value, "embeddings": paths,
            "windows": len(first), "folds": _FOLDS.value, "r2": {}}
  for name, es in sets.items():
    views = {m: (es.emb[m], es.present[m]) for m in es.emb}
    views["concat"] = (es.features("concat"), np.any([es.present[m] for m in es.emb], axis=0))
    result["r2"][name] = {}
    for view, (x, present) in views.items():
      rows = np.asarray(present, bool)
      r2 = content.recoverability(x[rows], targets[rows], es.subject_id[rows], names,
                                  folds=_FOLDS.value)
      result["r2"][name][view] = {k: round(v, 4) for k, v in r2.items()}
      print(f"{name:>10} {view:>6}: " + "  ".join(
          f"{g} {v:+.2f}" for g, v in content.group_means(r2).items()), flush=True)
  if _OUT.value:
    pathlib.Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(_OUT.value).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
