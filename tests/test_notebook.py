"""The quickstart notebook (notebooks/quickstart.ipynb) runs headless on CPU with SMALL settings.

The notebook is executed by a real Jupyter kernel (nbclient), with papermill-style parameters
injected after its "parameters" cell, as CI or a user with papermill would run it. Its SMALL
settings are a tiny encoder at 32 Hz trained for a few steps on SYNTHETIC nights, so what is checked
is that every stage runs and hands over well-formed results, not their quality.
"""

from __future__ import annotations

import json
import os

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
FIGURES = ("hypnogram.png", "roc_staging.png", "roc_sdb.png", "confusion_staging.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _kernel_env() -> dict[str, str]:
  """The test process's environment (JAX compilation cache included) with one CPU device.

  conftest simulates 8 CPU devices for the sharding tests; the notebook does not need them, and
  compiling for one device is faster.
  """
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
  return env


def inject_parameters(nb: nbformat.NotebookNode, **params) -> None:
  """Inserts a cell assigning `params` after the "parameters" cell (papermill's convention)."""
  index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
  cell.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(index + 1, cell)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  """(executed notebook, its WORKDIR)."""
  workdir = tmp_path_factory.mktemp("quickstart") / "run"
  nb = nbformat.read(NOTEBOOK, as_version=4)
  inject_parameters(nb, SMALL=True, EDF_DIR=None, WORKDIR=str(workdir), SEED=0)
  client = NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(REPO)}})
  client.execute(env=_kernel_env())  # raises CellExecutionError, with the cell's traceback
  return nb, workdir


def test_committed_notebook_is_clean_and_parameterised():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(not c.outputs and c.execution_count is None for c in code), "clear the outputs"
  params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1
  defaults = {}
  exec(params[0].source, {}, defaults)  # pylint: disable=exec-used
  assert defaults["SMALL"] is True and defaults["EDF_DIR"] is None
  assert {"WORKDIR", "REPO_URL", "SEED", "PREPROCESS_PRESET"} <= defaults.keys()
  # The install cell comes before anything imports jax (a fresh Colab session needs that order).
  first_jax = next(i for i, c in enumerate(code) if "import jax" in c.source)
  install = next(i for i, c in enumerate(code) if "pip" in c.source)
  assert install < first_jax


def test_runs_end_to_end_on_cpu(executed):
  nb, workdir = executed
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "error"]
  assert not errors
  results = json.loads((workdir / "results.json").read_text())
  assert results["synthetic"] is True and results["small"] is True
  assert results["platform"] == "cpu" and results["steps"] == 30
  assert set(results["tasks"]) == {"staging", "sdb"}
  for task, r in results["tasks"].items():
    assert 0.0 <= r["auroc_macro"] <= 1.0, task
    lo, hi = r["auroc_ci"]
    assert 0.0 <= lo <= hi <= 1.0, task
    assert r["n"] == int(np.sum(r["confusion"])) > 100, task
  assert np.array(results["tasks"]["staging"]["confusion"]).shape == (5, 5)
  # Checkpoints, metrics and exported embeddings are where the notebook says.
  assert (workdir / "pretrain" / "best").is_dir() and (workdir / "pretrain" / "metrics.jsonl").exists()
  index = json.loads((workdir / "embeddings" / "index.json").read_text())
  assert len(index["recordings"]) == 8


def test_plots_are_shown_inline_and_saved(executed):
  nb, workdir = executed
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "display_data" and "image/png" in o.get("data", {})]
  # Training curves, hypnogram, ROC (staging, SDB), confusion matrix.
  assert len(images) == 5
  for name in FIGURES:
    data = (workdir / "figures" / name).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs if o.output_type == "stream" and o.name == "stdout")
  assert "SYNTHETIC" in text and "staging: macro AUROC" in text
