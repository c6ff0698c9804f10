"""`benchmarks/device_check.py` end to end on CPU with tiny settings: every part runs and the JSON
holds real numbers (the GPU/TPU run uses the same code with the default flags)."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO

# The CPU smoke settings of the script's docstring and docs/performance.md ("Device check").
SMOKE = ["--quick", "--batches=2", "--samples=960", "--steps=2", "--warmup=1", "--export_rounds=2",
         "--peak_sizes=256", "--bandwidth_gib=0.05", "--sample_rate=32", "--subjects=4",
         "--hours=0.1", "--synthetic_rates=eeg=64,eog=64,emg=64,ecg=64,resp=16,spo2=1",
         "--pretrain_batch=4", "--duration_s=5", "--min_steps=4"]


def _positive(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_device_check_cpu_smoke(tmp_path):
  out = tmp_path / "device_check.json"
  # One CPU device (conftest simulates 8, which batch 2 would not split over); the tests' shared
  # compilation cache makes a rerun compile from it.
  env = dict(os.environ, XLA_FLAGS="")
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", "none")
  # The peaks by PyTorch (what a GPU without XLA's autotuning uses), where it is installed.
  with_torch = importlib.util.find_spec("torch") is not None
  proc = subprocess.run(
      [sys.executable, str(REPO / "benchmarks" / "device_check.py"), *SMOKE, f"--out={out}",
       f"--peak_by={'torch' if with_torch else 'jax'}",
       f"--compilation_cache={cache}", f"--workdir={tmp_path / 'work'}"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "[device_check" in proc.stdout and "done in" in proc.stdout
  r = json.loads(out.read_text())
  assert r["benchmark"] == "device_check" and r["preset"] == "paper,quick"
  assert r["host"]["backend"] == "cpu" and r["settings"]["batches"] == ["2"]
  # GPU autotuning off by default: the flag reaches XLA (which ignores it on CPU)
  assert r["gpu_autotune_off"] and "--xla_gpu_autotune_level=0" in r["host"]["xla_flags"]
  assert r["peak"]["measured_by"] == ("torch" if with_torch else "jax")

  for dtype in ("float32", "bfloat16"):
    assert _positive(r["peak"][dtype]["peak_gflop_per_s"])
    entry = r["train_step"][dtype]["batch_2"]
    assert "error" not in entry, entry
    for part in ("step", "export"):
      assert _positive(entry[part]["samples_per_s"]), (dtype, part)
      assert _positive(entry[part]["xla_cost"]["gflop"]), (dtype, part)
      roof = r["roofline"][dtype]["batch_2"][part]
      assert 0.0 < roof["fraction_of_peak"] <= 1.0, (dtype, part, roof)
      assert roof["fraction_of_nominal_peak"] is None  # no spec-sheet peak for a CPU
    assert math.isfinite(entry["step"]["loss_last"])
  assert _positive(r["peak"]["stream_gb_per_s"])

  torch = r["torch"]
  assert torch["status"] in ("ran", "skipped")
  if torch["status"] == "ran":
    t = torch["results"]["batch_2"]
    assert _positive(t["step"]["samples_per_s"]) and _positive(t["export"]["samples_per_s"])
    assert _positive(t["ratio_jax_over_torch"]["step"])
    assert _positive(t["ratio_jax_over_torch"]["export"])
  else:
    assert isinstance(torch["reason"], str) and torch["reason"]

  p = r["pretrain"]
  assert "error" not in p, p
  assert p["store"]["recordings_ok"] == 4 and p["store"]["sample_rate"] == 32
  assert p["final_step"] == p["steps"] >= 4
  assert _positive(p["samples_per_s"])
  assert math.isfinite(p["loss_first"]) and math.isfinite(p["loss_last"])
  assert set(r["summary"]) == {"device", "train_step", "torch", "pretrain"}
  assert _positive(r["wall_s"])
