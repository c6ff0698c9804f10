r"""Regenerates the tables of docs/results.md from docs/results/*.json.

  python experiments/render_results.py [--doc=docs/results.md] [--results=docs/results]

Tables sit between `<!-- results: EXPERIMENT KIND ... -->` and `<!-- /results -->` markers
(`sleepfm_jax/evaluation/results_doc.py`); everything else in the document is left as it is.
"""

import pathlib

from absl import flags

from sleepfm_jax import cli
from sleepfm_jax.evaluation import results_doc

_REPO = pathlib.Path(__file__).resolve().parents[1]
_DOC = flags.DEFINE_string("doc", str(_REPO / "docs" / "results.md"), "The markdown document.")
_RESULTS = flags.DEFINE_string("results", str(_REPO / "docs" / "results"),
                               "Folder of the experiments' JSON files.")


def main(argv):
  del argv
  cli.start(jax=False)
  doc = pathlib.Path(_DOC.value)
  text = doc.read_text()
  new = results_doc.render(text, _RESULTS.value)
  doc.write_text(new)
  print(f"{doc}: {'updated' if new != text else 'already up to date'}")


if __name__ == "__main__":
  cli.run(main)
