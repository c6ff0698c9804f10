"""Repository hygiene: the README's two set-up commands and CI stay in step."""

import re

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
