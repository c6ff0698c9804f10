r"""Peak host RSS of the trainer's loop (`training/loop.py`) on the paper-shaped step.

`benchmarks/memory.py` waits for every step before timing the next, as a benchmark does; the
trainer dispatches steps ahead, and on XLA:CPU each dispatched step holds its own block of
temporaries in host memory. This runs `Loop.run` itself with each `max_in_flight` setting, each
in a fresh process, and samples the RSS every 5 ms (`common.RssSampler`):

  python benchmarks/loop_memory.py --remat=block:2 --max_in_flight=0,1 --steps=15 \
      --out=benchmarks/results/loop_memory_cpu_b32.json

`--dispatch=inline,async` compares XLA:CPU running the steps inline (what the CLIs and benchmarks
set, `hostmem.run_cpu_computations_inline`) with JAX's default asynchronous dispatch, and
`--repeats` runs each setting in that many processes (the overlap of two steps' temporaries that
inline dispatch removes is a race: it shows in some processes, not all). `--release=on,off`
compares the loop giving back stranded heap memory between steps (its default on CPU,
`hostmem.StrandedMemory`) with not doing so; each row has glibc's heap statistics after the
first step and at the end (`hostmem.heap_stats`), and the first step's own peak
(`first_step_peak_rss_gib`: with the release on, what compilation left stranded is given back
before that step runs, as `Loop.run` does).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import common  # noqa: F401  (sets the host allocator before JAX starts)

from sleepfm_jax.training import hostmem


def child(remat: str, batch: int, steps: int, limit: int, release: bool) -> dict:
  import jax  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.training.loop import Loop  # pylint: disable=import-outside-toplevel

  jax.config.update("jax_enable_compilation_cache", False)
  config = common.paper_config("float32")
  config.model.remat = remat
  step = common.JaxPaperStep(batch, config=config)
  loop = Loop(total_steps=steps, batch_size=batch, log_every=steps, learning_rate=lambda k: 0.0,
              transfer_guard=False, progress=False, max_in_flight=limit,
              release_stranded=None if release else False)
  if loop.release_stranded is not None:  # as Loop.run does between compiling and running step 1
    loop.release_stranded()
  with common.RssSampler() as first:  # step 1 (compiled ahead); then, as the loop does, the
    t = time.perf_counter()           # stranded memory given back
    step()
    first_s = time.perf_counter() - t
  heap_before = hostmem.heap_stats()
  if loop.release_stranded is not None:
    loop.release_stranded()
  with common.RssSampler() as rss:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = time.perf_counter()
    ends = []  # with max_in_flight=1 each step has finished when after_step sees it
    state = loop.run(step.state, lambda s, b: step.compiled(s, b), itertools.repeat(step.inputs),
                     after_step=lambda k, s: ends.append(time.perf_counter()))
    jax.block_until_ready(state)
    step_s = (time.perf_counter() - t) / steps
    each_s = [b - a for a, b in zip([t] + ends[:-1], ends)]
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
  return {"remat": remat, "batch": batch, "max_in_flight": limit, "steps": steps,
          "inline": not jax.config.values["jax_cpu_enable_async_dispatch"],
          "temp_gib": round(step.compiled.memory_analysis().temp_size_in_bytes / 1024.0 ** 3, 2),
          "first_step_peak_rss_gib": round(first.peak_mib / 1024.0, 2),
          "first_step_s": round(first_s, 3),
          "rss_before_gib": round(rss.start_mib / 1024.0, 2),
          "peak_rss_gib": round(rss.peak_mib / 1024.0, 2), "step_s": round(step_s, 3),
          # per step: meaningful with max_in_flight=1 (a step ends before the next is dispatched)
          "step_s_median": round(statistics.median(each_s), 3),
          "step_s_each": [round(x, 3) for x in each_s],
          "minor_faults_per_step": round(faults), "heap_before": heap_before,
          "release_stranded": loop.release_stranded is not None,
          "released_gib": round(loop.release_stranded.released_gib, 2)
                          if loop.release_stranded is not None else 0.0,
          "heap_after": hostmem.heap_stats()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--remat", default="block:2")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=15)
  parser.add_argument("--max_in_flight", default="0,1")
  parser.add_argument("--dispatch", default="inline", help="inline, async or both (comma list)")
  parser.add_argument("--repeats", type=int, default=1, help="processes per setting")
  parser.add_argument("--release", default="on", help="give back stranded heap memory between "
                      "steps as the loop does on CPU: on, off or both (comma list)")
  parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  if args.child is not None:
    print(json.dumps(child(args.remat, args.batch, args.steps, args.child,
                           args.release == "on")), flush=True)
    return
  results = []
  for dispatch, release, limit, repeat in itertools.product(
      args.dispatch.split(","), args.release.split(","),
      (int(k) for k in args.max_in_flight.split(",")), range(args.repeats)):
    env = dict(os.environ, SLEEPFM_JAX_CPU_DISPATCH=dispatch)
    proc = subprocess.run([sys.executable, __file__, f"--child={limit}", f"--remat={args.remat}",
                           f"--batch={args.batch}", f"--steps={args.steps}",
                           f"--release={release}"],
                          capture_output=True, text=True, check=False, env=env)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    row = json.loads(lines[-1]) if lines else {"max_in_flight": limit, "error": proc.stderr[-500:]}
    row.update(dispatch=dispatch, release=release, repeat=repeat)
    print(row, flush=True)
    results.append(row)
  out = {"benchmark": "loop_memory", "host": common.host_info(), "results": results}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
