r"""The trainer's paper-shaped pretraining step and the exporter's forward: speed, memory, compile.

Paper shapes: three EffNet-1D encoders (BAS 5 channels, ECG 1, respiratory 3), 30-s windows at
256 Hz (7680 samples), leave-one-out loss, SGD momentum 0.9 (`configs/pretrain.py:paper`). The step
is the trainer's own (`steps.init_state` + `steps.make_steps`, jitted, state donated) on one fixed
random batch; export is `export.Embedder.embed_batch` (numpy in, numpy out, eval mode).

Per batch size: trace/lower and XLA compile seconds of the step, median step seconds and
samples/s after warm-up, peak host RSS during the timed steps (sampled), XLA's static buffer sizes
of the compiled step, device memory statistics where the backend has them (GPU/TPU), export
samples/s and the export's first-call (compile) seconds. Runs on whatever `jax.devices()` is (CPU
here; the same command on a GPU host measures the GPU).

  python benchmarks/train_step.py --batches 32,64 --steps 5 \
      --out benchmarks/results/train_step_cpu.json
  python benchmarks/train_step.py --dtype bfloat16 --out benchmarks/results/train_step_gpu_bf16.json
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (sets the host allocator before JAX starts)
from common import timed


def measure(batch: int, dtype: str, steps: int, warmup: int, export_rounds: int, *,
            preset: str = "paper", samples: int = common.PAPER_SAMPLES, with_cost: bool = False
            ) -> dict:
  """One batch size: the step's compile, speed and memory, then (export_rounds > 0) the export's.

  Args:
    batch: global batch size.
    dtype: compute dtype of the encoders ("float32" or "bfloat16").
    steps: timed steps (median reported), after `warmup` untimed ones.
    warmup: untimed steps first (the first also allocates the executable's buffers).
    export_rounds: timed export calls (0: no export timing).
    preset: the pretraining preset (`configs/pretrain.py`), e.g. "paper,quick" (tiny encoder).
    samples: window length in samples (7680: 30 s at 256 Hz).
    with_cost: add XLA's FLOPs and bytes of the compiled step and export forward (`xla_cost`;
      the export forward is compiled once more for it).
  """
  import jax  # pylint: disable=import-outside-toplevel

  step = common.JaxPaperStep(batch, samples=samples,
                             config=common.paper_config(dtype, preset=preset))
  entry = {"init_s": round(step.init_s, 2), "lower_s": round(step.lower_s, 2),
           "compile_s": round(step.compile_s, 2),
           "xla_memory_analysis_mib": step.memory_analysis()}
  entry["first_step_s"] = round(timed(step), 3)  # the first run also allocates its buffers
  entry["step"] = common.time_calls(step, batch, steps, max(warmup - 1, 0))
  entry["step"]["device_memory"] = common.device_memory_stats()
  entry["step"]["loss_last"] = float(step.metrics["loss"])
  if with_cost:
    entry["step"]["xla_cost"] = common.xla_cost(step.compiled)
  if export_rounds:
    exp = common.JaxExport(step.model(), batch, samples=samples)
    entry["export_first_call_s"] = round(exp.first_call_s, 2)
    entry["export"] = common.time_calls(exp, batch, export_rounds, warmup=1)
    if with_cost:
      entry["export"]["xla_cost"] = common.xla_cost(
          exp.embedder.lower(exp.device_inputs()).compile())
    del exp
  del step
  jax.clear_caches()
  return entry


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="32,64", help="comma-separated global batch sizes")
  parser.add_argument("--dtype", default="float32", help="compute dtype: float32 or bfloat16 "
                      "(parameters and optimizer state stay float32)")
  parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
  parser.add_argument("--export_rounds", type=int, default=5, help="0: skip the export timing")
  parser.add_argument("--out", default=None, help="JSON file (default: print only)")
  args = parser.parse_args()

  import jax  # pylint: disable=import-outside-toplevel

  jax.config.update("jax_enable_compilation_cache", False)  # compile times stay honest
  result = {
      "benchmark": "train_step",
      "what": "trainer's paper-shaped pretraining step (3 encoders, LOO loss, backward, SGD "
              "momentum) and the exporter's forward, on one random batch",
      "channels": common.PAPER_CHANNELS, "samples": common.PAPER_SAMPLES, "dtype": args.dtype,
      "host": common.host_info(), "results": {},
  }
  started = time.time()
  for batch in [int(b) for b in args.batches.split(",")]:
    entry = measure(batch, args.dtype, args.steps, args.warmup, args.export_rounds)
    result["results"][f"batch_{batch}"] = entry
    print(f"batch {batch}: step {entry['step']['samples_per_s']} samples/s "
          f"(compile {entry['compile_s']} s, peak RSS {entry['step']['host_rss']['peak_rss_mib']} "
          f"MiB)" + (f", export {entry['export']['samples_per_s']} samples/s"
                     if "export" in entry else ""), flush=True)
  result["wall_s"] = round(time.time() - started, 1)
  result["process_peak_rss_mib"] = common.process_peak_rss_mib()
  result["host"]["load_avg_1_5_15m_end"] = common.load_average()
  text = common.write_json(result, args.out)
  print(text if not args.out else f"wrote {args.out}")


if __name__ == "__main__":
  main()
