r"""Puts several variants of an evidence experiment side by side in one results JSON.

  python experiments/merge_results.py --inputs=f32=runs/bf16/f32,bf16=runs/bf16/bf16 \
      --out=docs/results/bf16_synthetic.json --plot=docs/figures/bf16_synthetic_curves.png

Each input is TAG=WORKDIR of an `experiments/evidence.py` run (its `results.json` and the
pretraining runs' metrics logs), or TAG=FILE.json, an already published results JSON (e.g.
docs/results/synthetic.json, for its baselines on the same windows, folds and labels; it brings
the validation curves it holds, none if it holds none). Sources are renamed SOURCE_TAG (`sleepfm_jax/evaluation/merge.py`),
so docs/results.md's tables compare the variants seed by seed (e.g. the `spread` kind).
"""

import json
import pathlib

from absl import flags

from sleepfm_jax import cli
from sleepfm_jax.evaluation import merge, report

_INPUTS = flags.DEFINE_list("inputs", None, "TAG=WORKDIR or TAG=RESULTS.json, one per variant.",
                            required=True)
_OUT = flags.DEFINE_string("out", None, "Merged results JSON.", required=True)
_PLOT = flags.DEFINE_string("plot", None, "Also plot the validation curves here (PNG).")
_PLOT_TAGS = flags.DEFINE_list("plot_tags", None, "Variants the plot shows (default: all; leave "
                               "out one that reuses another's pretraining runs).")


def main(argv):
  del argv
  cli.start(jax=False)
  results, curve_rows = {}, {}
  for item in _INPUTS.value:
    tag, sep, workdir = item.partition("=")
    if not sep:
      raise ValueError(f"--inputs: '{item}' is not TAG=WORKDIR")
    if workdir.endswith(".json"):
      results[tag] = json.loads(pathlib.Path(workdir).read_text())
      results[tag].setdefault("curves", [])
    else:
      path = pathlib.Path(workdir) / "results.json"
      if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run experiments/evidence.py there first")
      results[tag] = {**json.loads(path.read_text()), "curves": merge.curves(workdir)}
    curve_rows[tag] = len(results[tag]["curves"])
  merged = merge.merge(results)
  pathlib.Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(_OUT.value).write_text(json.dumps(merged, indent=1, default=float) + "\n")
  print(f"wrote {_OUT.value} (validation rows per variant: {curve_rows})")
  if _PLOT.value:
    tags = _PLOT_TAGS.value or list(results)
    shown = {merge.tag_source(c["source"], t) for t in tags for c in results[t]["curves"]}
    report.plot_variant_curves([c for c in merged["curves"] if c["source"] in shown],
                               pathlib.Path(_PLOT.value))
    print(f"wrote {_PLOT.value}")


if __name__ == "__main__":
  cli.run(main)
