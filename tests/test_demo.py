"""The README's main job, end to end, in its --quick form (a fresh process, as a user runs it)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_demo_quick_runs_end_to_end(sc4001, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  out = subprocess.run([sys.executable, str(REPO / "experiments" / "demo.py"),
                        f"--workdir={tmp_path}", "--quick"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
  log = out.stdout + out.stderr
  assert out.returncode == 0, log[-4000:]
  # The real SC4001 night went through the data path with its known epoch counts.
  assert "W 188, N1 58, N2 250, N3 220, REM 125" in log  # cropped to the sleep period +- 30 min
  assert "SYNTHETIC" in log
  report = json.loads((tmp_path / "report" / "report.json").read_text())
  tasks = {e["task"] for e in report["entries"]}
  assert {"staging", "sdb"} <= tasks
  for entry in report["entries"]:
    assert 0.0 <= entry["metrics"]["auroc_macro"] <= 1.0
  head = report["headline"]  # pretrained vs the untrained control, retrieval vs chance
  assert head["source"] == "loo" and head["control"] == "untrained"
  for task in ("staging", "sdb"):
    t = head["tasks"][task]
    assert t["auroc_difference"] == t["loo"]["auroc"] - t["untrained"]["auroc"]
  assert set(head["retrieval"]["untrained"]) == set(head["retrieval"]["loo"]) >= {"bas->ecg"}
  assert "pretrained" in log and "x chance" in log
  assert "## Headline" in (tmp_path / "report" / "report.md").read_text()
  assert (tmp_path / "pretrain_loo" / "curves.png").exists()
  index = json.loads((tmp_path / "embeddings_loo" / "index.json").read_text())
  assert index["mode"] == "leave_one_out" and index["recordings"]
