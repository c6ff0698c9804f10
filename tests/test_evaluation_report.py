"""The report and the evaluate.py command write their files; evaluation never imports jax."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from eval_synth import embedding_set, recordings
from sleepfm_jax.evaluation import report, suite
from sleepfm_jax.evaluation.embeddings import save_embeddings
from sleepfm_jax.evaluation.predictions import Predictions, load_predictions
from sleepfm_jax.evaluation.probes import ProbeConfig


def test_evaluation_never_imports_jax():
  files = [*(REPO / "sleepfm_jax" / "evaluation").rglob("*.py"), REPO / "experiments" /
           "evaluate.py"]
  for path in files:
    src = path.read_text()
    assert not re.search(r"^\s*(import jax|from jax|import flax|from flax)", src, re.M), path


def _external(es, rng):
  """A fake 'CNN baseline' predictions file on the staging labels of `es`."""
  lab = es.stage >= 0
  y = es.stage[lab].astype(int)
  logits = rng.normal(size=(lab.sum(), 5))
  logits[np.arange(len(y)), y] += 2.0
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  return Predictions(task="staging", classes=["W", "N1", "N2", "N3", "REM"],
                     recording_id=es.recording_id[lab], epoch=es.epoch[lab],
                     subject_id=es.subject_id[lab], y_true=y, y_prob=p, meta={"name": "cnn"})


def test_report_writes_files(tmp_path):
  es = embedding_set(tmp_path / "emb", n_subjects=4, n_windows=60, dim=6, sdb_scored={1, 2, 3})
  config = suite.SuiteConfig(
      features=("bas", "concat"), label_fractions=(0.2, 1.0), n_boot=20,
      probe=ProbeConfig(c_grid=(1.0,), outer_folds=2, inner_folds=2),
      retrieval_candidates=30)
  cnn = _external(es, np.random.default_rng(0))
  cnn_path = cnn.save(tmp_path / "cnn.npz")
  result = suite.run_suite({"loo": es}, {"cnn": load_predictions(cnn_path)}, config,
                           progress=False, log=lambda _: None)
  metrics_log = tmp_path / "metrics.jsonl"
  metrics_log.write_text("\n".join(json.dumps({"step": s, "train/loss": 3 - s / 10,
                                               "val/loss": 3.1 - s / 12, "lr": 1e-3})
                                    for s in range(0, 30, 3)) + "\nnot json\n")
  paths = report.write_report(tmp_path / "out", result, metrics_jsonl=str(metrics_log),
                              tsne_points=80)
  out = tmp_path / "out"
  summary = json.loads((out / "report.json").read_text())  # strict JSON (no NaN)
  keys = {(e["source"], e["task"], e["feature"], e["label_fraction"])
          for e in summary["entries"]}
  assert ("loo", "staging", "concat", 0.2) in keys and ("cnn", "staging", "external", 1.0) in keys
  assert ("loo", "sdb", "bas", 1.0) in keys
  assert set(summary["retrieval"]["loo"]) >= {"bas->ecg", "others->resp"}
  cnn_entry = next(e for e in summary["entries"] if e["source"] == "cnn")
  assert cnn_entry["metrics"]["auroc_macro"] > 0.8
  assert cnn_entry["metrics"]["ci"]["auroc_macro"]["n_valid"] == 20
  for name in ("hypnogram_loo.png", "roc_loo_staging.png", "confusion_loo_sdb.png",
               "tsne_loo.png", "retrieval_loo.png", "label_efficiency_staging.png",
               "training_curves.png", "roc_cnn_staging.png", "hypnogram_cnn.png"):
    path = out / "plots" / name
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
  md = (out / "report.md").read_text()
  assert "## Sleep staging" in md and "## Cross-modal retrieval" in md
  assert "(plots/hypnogram_loo.png)" in md and "| cnn | external |" in md
  assert "resampling units" in md  # 4 subjects: the CI caveat is stated
  assert all(p.exists() for p in paths.values())


def test_headline_compares_a_source_with_its_control(tmp_path):
  kw = dict(n_subjects=4, n_windows=60, dim=6)
  good = embedding_set(tmp_path / "good", separation=2.0, **kw)
  noise = embedding_set(tmp_path / "noise", separation=0.0, seed=1, **kw)
  config = suite.SuiteConfig(tasks=("staging", "retrieval"), features=("concat",),
                             n_boot=10, probe=ProbeConfig(c_grid=(1.0,), outer_folds=2,
                                                          inner_folds=2),
                             retrieval_candidates=None)
  result = suite.run_suite({"loo": good, "untrained": noise}, config=config, progress=False,
                           log=lambda _: None)
  h = result.compare("loo", "untrained")
  t = h["tasks"]["staging"]
  a = result.headline("loo", "staging").metrics["auroc_macro"]
  b = result.headline("untrained", "staging").metrics["auroc_macro"]
  assert t["loo"]["auroc"] == a and t["untrained"]["auroc"] == b
  assert t["auroc_difference"] == pytest.approx(a - b) and a - b > 0.1
  ratios = {d: r["recall@10"] / r["chance@10"] for d, r in result.retrieval["loo"].items()}
  assert h["min_x_chance"] == pytest.approx(min(ratios.values()))
  assert h["retrieval"]["loo"]["bas->ecg"]["n_candidates"] == 240
  report.write_report(tmp_path / "out", result, tsne_points=50, compare=("loo", "untrained"))
  summary = json.loads((tmp_path / "out" / "report.json").read_text())
  assert summary["headline"]["tasks"]["staging"]["auroc_difference"] == pytest.approx(a - b)
  md = (tmp_path / "out" / "report.md").read_text()
  assert "## Headline" in md and f"| staging | {a:.3f} (" in md


def test_evaluate_command(tmp_path):
  save_embeddings(tmp_path / "emb", recordings(n_subjects=3, n_windows=40, dim=4,
                                               sdb_scored=set()))
  cmd = [sys.executable, str(REPO / "experiments" / "evaluate.py"),
         f"--embeddings=pw:{tmp_path / 'emb'}", "--task=staging,sdb,retrieval",
         "--features=concat", "--folds=3", "--inner_folds=2", "--c_grid=1",
         "--bootstrap=10", "--retrieval_candidates=20", "--tsne_points=60",
         f"--out={tmp_path / 'out'}"]
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  summary = json.loads((tmp_path / "out" / "report.json").read_text())
  assert summary["skipped"][0]["task"] == "sdb"
  assert "respiratory-event" in summary["skipped"][0]["reason"]
  pred = load_predictions(tmp_path / "out" / "predictions" / "pw_staging_concat_1.npz")
  assert len(pred) == sum(e["n_windows"] for e in summary["entries"])
  assert "## Skipped" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("spec,expected", [
    ("loo:/a/b,pw:/c", {"loo": "/a/b", "pw": "/c"}),
    ("/runs/x/emb", {"emb": "/runs/x/emb"}),
    ("runs/cnn.npz", {"cnn": "runs/cnn.npz"}),
])
def test_parse_named(spec, expected):
  assert suite.parse_named(spec) == expected
