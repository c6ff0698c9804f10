r"""Peak host RSS of the whole `experiments/pretrain.py --config=paper` process, per remat setting.

`benchmarks/memory.py` and `benchmarks/loop_memory.py` measure the paper-shaped step (alone, and
in the trainer's loop). A user runs the CLI, which also holds the Grain pipeline, Orbax, the
validation step's compilation and the metrics log. This runs the CLI itself, each setting in a
fresh process, and reads that process's peak RSS from the kernel when it exits (`os.wait4`,
`ru_maxrss`), with samples/s from its `metrics.jsonl`:

  python benchmarks/cli_memory.py --remat=auto,none,block:2 --repeats=2 --steps=10 \
      --out=benchmarks/results/cli_memory_cpu_b32.json

The store is a small SYNTHETIC one at the paper's inputs (`make_synthetic.py`, then
`preprocess.py --config=paper`), built under `--scratch` when `--store` is not given. Settings are
interleaved over repeats (auto, none, block:2, auto, ...) so that a slow spell on a shared machine
falls on all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import common

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))  # the experiments import the package from here


def build_store(scratch: pathlib.Path, subjects: int, hours: float) -> pathlib.Path:
  """A SYNTHETIC store at the paper's inputs under `scratch` (reused when it exists)."""
  raw, store = scratch / "synthetic", scratch / "store"
  if (store / "index.json").exists():  # written last, when the store is complete
    return store
  subprocess.run([sys.executable, str(ROOT / "experiments/make_synthetic.py"), f"--out={raw}",
                  f"--subjects={subjects}", f"--hours={hours:g}", "--workers=2"],
                 check=True, env=ENV)
  subprocess.run([sys.executable, str(ROOT / "experiments/preprocess.py"), "--config=paper",
                  f"--input={raw}", f"--out={store}", "--noprogress"], check=True, env=ENV)
  return store


def run_cli(store: pathlib.Path, remat: str, steps: int, batch: int) -> dict:
  """One pretraining process; its peak RSS as the kernel counted it, and its samples/s."""
  with tempfile.TemporaryDirectory(prefix="cli_memory_") as workdir:
    cmd = [sys.executable, str(ROOT / "experiments/pretrain.py"), "--config=paper",
           f"--config.data.store={store}", f"--config.model.remat={remat}",
           f"--config.batch_size={batch}", f"--config.stop_at_step={steps}",
           "--config.log_every=1", "--config.eval_every=1000", "--compilation_cache=none",
           f"--workdir={workdir}"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if proc.returncode:
      raise RuntimeError(f"pretrain.py with remat={remat} failed ({proc.returncode}):\n{out[-3000:]}")
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  sps = [r["samples_per_s"] for r in rows
         if "samples_per_s" in r and r.get("step", 0) > 1]  # step 1 holds the compilation
  return {"remat": remat, "batch": batch, "steps": steps,
          "peak_rss_gib": round(usage.ru_maxrss / 1024.0 ** 2, 2),  # ru_maxrss is in KiB
          "samples_per_s_median": round(statistics.median(sps), 2) if sps else None,
          "samples_per_s_each": [round(x, 2) for x in sps],
          "wall_s": round(wall, 1)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--remat", default="auto,none,block:2",
                      help="comma-separated model.remat settings (auto = the preset's)")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--store", default=None, help="an existing store at the paper's inputs")
  parser.add_argument("--scratch", default="/tmp/sleepfm_cli_memory",
                      help="where the SYNTHETIC store is built when --store is not given")
  parser.add_argument("--subjects", type=int, default=6)
  parser.add_argument("--hours", type=float, default=1.0)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()

  store = pathlib.Path(args.store) if args.store else build_store(
      pathlib.Path(args.scratch), args.subjects, args.hours)
  runs = []
  for repeat in range(args.repeats):
    for remat in args.remat.split(","):
      row = run_cli(store, remat, args.steps, args.batch)
      row["repeat"] = repeat
      print(json.dumps(row), flush=True)
      runs.append(row)
  result = {"benchmark": "cli_memory", "data": "SYNTHETIC", "host": common.host_info(),
            "command": "experiments/pretrain.py --config=paper (see run_cli)", "runs": runs}
  common.write_json(result, args.out)


if __name__ == "__main__":
  main()
