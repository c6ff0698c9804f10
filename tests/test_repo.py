"""Repository hygiene: the README's two set-up commands and CI stay in step, the numpy-only layers
never import jax, and the docs hold no unreplaced placeholders."""

import re
import subprocess
import sys

from conftest import REPO


def _readme_commands():
  text = (REPO / "README.md").read_text()
  block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S)
  assert block, "README must have a Quick start bash block"
  return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_exactly_two_commands():
  cmds = _readme_commands()
  assert len(cmds) == 2, cmds
  assert "experiments/demo.py" in cmds[0]
  assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
  ci = (REPO / ".ci" / "run").read_text().splitlines()
  assert _readme_commands()[1] in ci


def test_data_package_never_imports_jax():
  for path in (REPO / "sleepfm_jax" / "data").rglob("*.py"):
    src = path.read_text()
    assert not re.search(r"^\s*(import jax|from jax|import flax|from flax)", src, re.M), path


def test_evaluation_and_run_splits_never_import_jax():
  """Every module of evaluation/ (and what numpy-only tools import to read a run's splits) loads
  in a fresh interpreter without jax, flax or optax, also indirectly."""
  modules = sorted(f"sleepfm_jax.evaluation.{p.stem}"
                   for p in (REPO / "sleepfm_jax" / "evaluation").glob("*.py"))
  modules += ["sleepfm_jax.training.runs", "sleepfm_jax.cli", "sleepfm_jax.configs.preprocess"]
  code = ("import importlib, sys\n"
          f"for m in {modules!r}:\n"
          "  importlib.import_module(m)\n"
          "print(sorted({'jax', 'flax', 'optax'} & set(sys.modules)))\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=120, check=True)
  assert proc.stdout.strip() == "[]", proc.stdout


def _prose(text: str) -> str:
  """Markdown without fenced code blocks and inline code spans."""
  text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
  return re.sub(r"`[^`]*`", "", text)


def test_docs_have_no_unreplaced_placeholders():
  """A placeholder is an ALL_CAPS_NAME (or TODO/TBD/FIXME/XXX) left in the prose of README or
  docs/ (code blocks and `code spans` excepted), e.g. a section marker that was never filled."""
  for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
    prose = _prose(path.read_text())
    found = re.findall(r"\b(?:[A-Z][A-Z0-9]*_[A-Z0-9_]+|TODO|TBD|FIXME|XXX)\b", prose)
    assert not found, f"{path.relative_to(REPO)}: placeholders {sorted(set(found))}"
