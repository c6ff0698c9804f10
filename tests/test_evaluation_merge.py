"""Variants of an experiment side by side (bf16 vs f32): merged JSON, curves, the spread table."""

import json
import subprocess
import sys

import pytest

from conftest import REPO
from sleepfm_jax.evaluation import merge, results_doc


def _variant(shift: float, val_loss=(3.0, 3.1, 3.2)):
  metrics, retrieval, budget = [], [], []
  for seed in range(3):
    for labels, bump in (("1 subject", 0.0), ("all (9)", 0.1)):
      for source, base in (("loo", 0.7), ("untrained", 0.6)):
        metrics.append({"source": source, "feature": "concat", "task": "staging",
                        "labels": labels, "seed": seed, "auroc": base + bump + shift + 0.01 * seed,
                        "auprc": 0.4})
    for d, direction in enumerate(("bas->ecg", "ecg->bas")):
      retrieval.append({"source": "loo", "direction": direction, "seed": seed,
                        "n_candidates": 100, "recall@10": 0.2 + 0.1 * d + shift,
                        "chance@10": 0.1, "median_rank": 10})
    budget.append({"source": "loo", "what": "pretraining", "seed": seed, "steps": 5,
                   "wall_s": 1.0, "val_loss": val_loss[seed], "val_top1": 0.5 + shift})
  return {"headline_feature": {"staging": "concat"}, "metrics": metrics,
          "retrieval": retrieval, "budget": budget, "settings": {"dtype": "x"}}


def test_merge_tags_every_source_and_keeps_the_rows():
  merged = merge.merge({"f32": _variant(0.0), "bf16": _variant(0.01)})
  sources = {r["source"] for r in merged["metrics"]}
  assert sources == {"loo_f32", "untrained_f32", "loo_bf16", "untrained_bf16"}
  assert len(merged["metrics"]) == 2 * len(_variant(0.0)["metrics"])
  assert {r["source"] for r in merged["budget"]} == {"loo_f32", "loo_bf16"}
  assert merged["variants"]["bf16"]["settings"] == {"dtype": "x"}
  with pytest.raises(ValueError, match="separates"):
    merge.merge({"b-f": _variant(0.0)})
  other = {**_variant(0.0), "headline_feature": {"staging": "bas"}}
  with pytest.raises(ValueError, match="headline"):
    merge.merge({"a": _variant(0.0), "b": other})


def test_spread_table_compares_means_with_two_reference_sds(tmp_path):
  # reference val loss 3.0/3.1/3.2: sd 0.1, so the band is 0.2 either side of 3.1
  merged = merge.merge({"f32": _variant(0.0), "bf16": _variant(0.0, val_loss=(3.15, 3.25, 3.35)),
                        "far": _variant(0.0, val_loss=(3.4, 3.5, 3.6))})
  (tmp_path / "m.json").write_text(json.dumps(merged))
  md = ("<!-- results: m spread a=loo_bf16 b=loo_f32 -->\n<!-- /results -->\n"
        "<!-- results: m spread a=loo_far b=loo_f32 -->\n<!-- /results -->\n")
  out = results_doc.render(md, tmp_path)
  near, far = out.split("<!-- /results -->")[:2]
  assert "| validation loss | 3.250 ± 0.100 | 3.100 ± 0.100 | +0.150 ± 0.000 | 0.200 | yes |" in near
  assert "| validation loss | 3.500 ± 0.100 | 3.100 ± 0.100 | +0.400 ± 0.000 | 0.200 | **no** |" in far
  # identical values elsewhere: zero difference; the AUROC row is the last budget (all labels)
  assert "| staging concat AUROC, all (9) | 0.810 ± 0.010 | 0.810 ± 0.010 | +0.000 ± 0.000 |" in near
  assert "| recall@10 (mean of directions) | 0.250 ± 0.000 | 0.250 ± 0.000 |" in near


def test_primary_table_puts_the_variants_side_by_side(tmp_path):
  merged = merge.merge({"f32": _variant(0.0), "far": _variant(0.0, val_loss=(3.4, 3.5, 3.6))})
  (tmp_path / "m.json").write_text(json.dumps(merged))
  md = "<!-- results: m primary sources=loo_f32,loo_far -->\n<!-- /results -->\n"
  out = results_doc.render(md, tmp_path)
  assert ("| source | validation loss | validation top-1 | recall@10 (mean of directions) |"
          in out)
  assert "| loo_f32 | 3.100 ± 0.100 |" in out and "| loo_far | 3.500 ± 0.100 |" in out
  assert "0.810 ± 0.010" in out and "Mean ± sd over 3 seeds." in out
  # a variant run on one seed only (a sweep's screened settings): the caption says so
  one = _variant(0.0)
  for key in ("metrics", "retrieval", "budget"):
    one[key] = [r for r in one[key] if r["seed"] == 0]
  merged = merge.merge({"f32": _variant(0.0), "one": one})
  (tmp_path / "m.json").write_text(json.dumps(merged))
  out = results_doc.render(md.replace("loo_far", "loo_one"), tmp_path)
  assert "| loo_one | 3.000 ± 0.000 |" in out
  assert "Mean ± sd over 1–3 seeds per row (one seed: sd 0 is no spread measured)." in out


def test_curves_and_cli_merge_two_evidence_workdirs(tmp_path):
  for tag, shift in (("f32", 0.0), ("bf16", 0.01)):
    work = tmp_path / tag
    for seed in range(3):
      run = work / f"seed_{seed}" / "pretrain_loo"
      run.mkdir(parents=True)
      rows = [{"step": s, "split": split, "loss": 3.0 - 0.1 * s + shift, "top1": 0.1 * s}
              for s in (1, 2) for split in ("train", "val")]
      run.joinpath("metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (work / "results.json").write_text(json.dumps(_variant(shift)))
  curves = merge.curves(tmp_path / "f32")
  assert len(curves) == 6 and {c["source"] for c in curves} == {"loo"}
  assert curves[0] == {"source": "loo", "seed": 0, "step": 1, "loss": 2.9, "top1": 0.1}
  out, plot = tmp_path / "merged.json", tmp_path / "curves.png"
  published = tmp_path / "published.json"  # a results JSON as in docs/results/: no curves
  published.write_text(json.dumps(_variant(0.02)))
  proc = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "merge_results.py"),
       f"--inputs=f32={tmp_path / 'f32'},bf16={tmp_path / 'bf16'},pub={published}",
       f"--out={out}", f"--plot={plot}"], capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr
  merged = json.loads(out.read_text())
  assert {r["source"] for r in merged["metrics"]} >= {"loo_f32", "loo_bf16", "loo_pub"}
  assert len([r for r in merged["metrics"] if r["source"] == "loo_pub"]) == len(
      [r for r in _variant(0.02)["metrics"] if r["source"] == "loo"])
  assert {c["source"] for c in merged["curves"]} == {"loo_f32", "loo_bf16"}
  assert len(merged["curves"]) == 12 and plot.stat().st_size > 10_000
  bad = subprocess.run([sys.executable, str(REPO / "experiments" / "merge_results.py"),
                        f"--inputs=x={tmp_path / 'nope'}", f"--out={out}"],
                       capture_output=True, text=True, check=False)
  assert bad.returncode == 1 and "results.json does not exist" in bad.stderr
  assert "Traceback" not in bad.stderr
