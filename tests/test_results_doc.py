"""docs/results.md tables are generated from docs/results/*.json and cannot drift from them."""

import json
import pathlib

import pytest

from conftest import REPO
from sleepfm_jax.evaluation import results_doc


def _experiment():
  metrics, retrieval = [], []
  for seed, (loo, unt, cnn) in enumerate([(0.9, 0.7, 0.6), (0.8, 0.7, 0.7), (0.85, 0.75, 0.5)]):
    for labels in ("1 subject", "all"):
      bump = 0.05 if labels == "all" else 0.0
      metrics += [
          {"source": "loo", "feature": "concat", "task": "staging", "labels": labels,
           "seed": seed, "auroc": loo + bump, "auprc": loo - 0.3},
          {"source": "untrained", "feature": "concat", "task": "staging", "labels": labels,
           "seed": seed, "auroc": unt + bump, "auprc": unt - 0.3},
          {"source": "cnn", "feature": "cnn", "task": "staging", "labels": labels,
           "seed": seed, "auroc": cnn + bump, "auprc": cnn - 0.3}]
    retrieval.append({"source": "loo", "direction": "bas->ecg", "seed": seed,
                      "n_candidates": 1000, "recall@10": 0.1 + 0.01 * seed,
                      "chance@10": 0.01, "median_rank": 100 + seed})
  budget = [{"source": "loo", "what": "pretraining", "seed": seed, "steps": 600,
             "wall_s": w} for seed, w in enumerate((600, 660, 720))]
  return {"headline_feature": {"staging": "concat"}, "metrics": metrics,
          "retrieval": retrieval, "budget": budget}


def test_marked_tables_are_regenerated_from_the_json(tmp_path):
  (tmp_path / "exp.json").write_text(json.dumps(_experiment()))
  md = ("# x\n<!-- results: exp metric task=staging metric=auroc sources=loo,untrained -->\n"
        "stale\n<!-- /results -->\ntext\n"
        "<!-- results: exp paired task=staging pairs=loo-untrained,loo-cnn -->\n<!-- /results -->\n"
        "<!-- results: exp retrieval -->\n<!-- /results -->\n"
        "<!-- results: exp budget -->\n<!-- /results -->\n")
  out = results_doc.render(md, tmp_path)
  assert "stale" not in out and "text" in out
  assert "| loo | concat | 0.850 ± 0.050 | 0.900 ± 0.050 |" in out
  assert "| untrained | concat | 0.717 ± 0.029 | 0.767 ± 0.029 |" in out
  assert "| loo − untrained | +0.133 ± 0.058 (3/3) | +0.133 ± 0.058 (3/3) |" in out
  assert "| loo − cnn | +0.250 ± 0.132 (3/3) | +0.250 ± 0.132 (3/3) |" in out
  assert "| loo | bas->ecg | 1000 | 0.110 ± 0.010 | 11.0× (min 10.0×) | 101 |" in out
  assert "| loo | pretraining | 600 ± 0 | 11.0 ± 1.0 |" in out
  assert results_doc.render(out, tmp_path) == out  # idempotent


def test_bad_markers_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope"):
    results_doc.render("<!-- results: nope metric task=staging -->\n<!-- /results -->", tmp_path)
  (tmp_path / "exp.json").write_text(json.dumps(_experiment()))
  with pytest.raises(ValueError, match="unknown kind"):
    results_doc.render("<!-- results: exp pie -->\n<!-- /results -->", tmp_path)
  # a marker the pattern cannot match (no closing line) is an error, not a silently stale table
  with pytest.raises(ValueError, match="1 opened at a line start, 0 matched"):
    results_doc.render("<!-- results: exp pie -->\n", tmp_path)


def test_markers_may_name_retrieval_directions(tmp_path):
  """Directions hold "->"; such a marker used to match nothing and stay empty."""
  exp = {"retrieval": [{"source": "loo", "seed": 0, "direction": "bas->ecg", "n_candidates": 100,
                        "recall@10": 0.3, "chance@10": 0.1, "median_rank": 12.0}]}
  (tmp_path / "exp.json").write_text(json.dumps(exp))
  out = results_doc.render(
      "<!-- results: exp retrieval sources=loo directions=bas->ecg -->\n<!-- /results -->\n",
      tmp_path)
  assert "| loo | bas->ecg | 100 | 0.300 ± 0.000 | 3.0× (min 3.0×) | 12 |" in out


def test_docs_results_md_matches_its_json_files():
  doc = REPO / "docs" / "results.md"
  text = doc.read_text()
  assert results_doc.render(text, REPO / "docs" / "results") == text, (
      "docs/results.md is out of date with docs/results/*.json: run "
      "`python experiments/render_results.py`")
  assert "<!-- results:" in text  # the headline tables are generated, not typed


def test_content_table_averages_feature_groups_over_seeds(tmp_path):
  runs = {str(s): {"loo": {"bas": {"eeg_rel_delta": 0.4 + 0.1 * s, "eeg_log_power": 0.6 + 0.1 * s,
                                   "ecg_hr_bpm": 0.0}}} for s in range(3)}
  (tmp_path / "c.json").write_text(json.dumps({"seeds": runs}))
  out = results_doc.render("<!-- results: c content -->\n<!-- /results -->", tmp_path)
  assert "| source | embedding | eeg | ecg |" in out
  assert "| loo | bas | 0.60 ± 0.10 | 0.00 ± 0.00 |" in out


def test_paired_columns_are_the_paired_sources_budgets(tmp_path):
  """A merged file's other variants may have budgets the pair lacks: no empty columns for them
  (they used to appear after the pair's own budgets, all '–')."""
  exp = _experiment()
  exp["metrics"] = [{**r, "labels": "8 subjects", "source": "other"} for r in exp["metrics"]
                    ] + exp["metrics"]
  (tmp_path / "exp.json").write_text(json.dumps(exp))
  out = results_doc.render(
      "<!-- results: exp paired task=staging pairs=loo-untrained -->\n<!-- /results -->\n",
      tmp_path)
  assert "| difference | 1 subject | all |\n" in out
  assert "8 subjects" not in out
