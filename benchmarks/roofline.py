r"""This machine's roofline and where the paper-shaped step and export stand against it.

Measures, with JAX on `jax.devices()[0]` (float32):
* peak matrix-product rate: the best of a few large square products (GFLOP/s);
* the matrix-product rates at the shapes of the encoders' widest and narrowest 1x1 convolutions;
* memory bandwidth: a streaming multiply-add over 1 GiB (bytes read + written per second);
* the FLOPs and bytes XLA counts for the compiled pretraining step and export forward
  (`compiled.cost_analysis()`), and the floors they imply: FLOPs / peak rate (if every product ran
  at the peak) and bytes / bandwidth (if every byte moved once at full speed). The step cannot
  run faster than the larger of the two, nor much faster than their sum when the two do not
  overlap; a target time below that floor is out of reach on this machine.

  python benchmarks/roofline.py --out benchmarks/results/roofline_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import common
from common import sig, timed


def best_of(fn, rounds: int) -> float:
  fn()
  return min(timed(fn) for _ in range(rounds))


def matmul_rate(m: int, k: int, n: int, rounds: int, dtype: str = "float32") -> float:
  """GFLOP/s of the best of `rounds` jitted `[m, k] @ [k, n]` products in `dtype`."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  a = jnp.full((m, k), 0.5, dtype)
  b = jnp.full((k, n), 0.5, dtype)
  f = jax.jit(lambda a, b: a @ b)
  s = best_of(lambda: f(a, b).block_until_ready(), rounds)
  return 2.0 * m * k * n / s / 1e9


def peak_matmul(sizes, rounds: int, dtype: str = "float32") -> tuple[float, dict[int, float]]:
  """The best rate of square products of the given sizes (GFLOP/s), and the rate per size."""
  square = {n: round(matmul_rate(n, n, n, rounds, dtype), 1) for n in sizes}
  return max(square.values()), square


def stream_bandwidth(gib: float, rounds: int) -> float:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  x = jnp.ones((int(gib * 2 ** 30) // 4,), jnp.float32)
  f = jax.jit(lambda x: x * 1.5 + 0.5)
  s = best_of(lambda: f(x).block_until_ready(), rounds)
  return 2.0 * x.nbytes / s / 1e9


def floors(c: dict[str, float], peak: float, bandwidth: float) -> dict[str, float]:
  compute = c["gflop"] / peak
  memory = c["gb_accessed"] / bandwidth
  return {"compute_floor_s": sig(compute), "memory_floor_s": sig(memory),
          "floor_s": sig(max(compute, memory)), "sum_s": sig(compute + memory)}


def stand(c: dict[str, float], times: list[float], peak: float,
          bandwidth: float) -> dict[str, Any]:
  """Where a program with XLA cost `c` (`common.xla_cost`) and measured `times` stands against a
  peak rate (GFLOP/s) and a bandwidth (GB/s): floors, achieved rate and fraction of the peak."""
  med = statistics.median(times)
  return {**c, **floors(c, peak, bandwidth), "measured_median_s": sig(med),
          "measured_all_s": [sig(t) for t in times],
          "achieved_gflop_per_s": sig(c["gflop"] / med),
          "fraction_of_peak": sig(c["gflop"] / med / peak)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--step_rounds", type=int, default=3)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()

  peak, square = peak_matmul((2048, 4096), args.rounds)
  # [tokens, in] x [in, out] of 1x1 convolutions at batch 32: the first expand of the stem
  # output (32 -> 192 channels at 3840 samples) and a late-stage expand (192 -> 1152 at 60).
  shapes = {"expand_32x192_at_3840": (args.batch * 3840, 32, 192),
            "project_192x32_at_3840": (args.batch * 3840, 192, 32),
            "expand_192x1152_at_60": (args.batch * 60, 192, 1152)}
  conv_rates = {k: round(matmul_rate(*v, args.rounds), 1) for k, v in shapes.items()}
  bandwidth = round(stream_bandwidth(1.0, args.rounds), 1)

  step = common.JaxPaperStep(args.batch)
  step_cost = common.xla_cost(step.compiled)
  step()  # warm-up: the first run also allocates the executable's buffers
  step_s = [timed(step) for _ in range(args.step_rounds)]
  exp = common.JaxExport(step.model(), args.batch)  # its first call is the warm-up
  export_cost = common.xla_cost(exp.embedder.lower(exp.device_inputs()).compile())
  export_s = [timed(exp) for _ in range(args.rounds)]

  result = {
      "benchmark": "roofline",
      "what": "peak matmul rate and memory bandwidth of this machine (JAX, float32), and the "
              "floors they set for the paper-shaped step and export (XLA cost analysis)",
      "host": common.host_info(), "batch": args.batch,
      "peak_matmul_gflop_per_s": peak, "square_matmul_gflop_per_s": square,
      "conv_shaped_matmul_gflop_per_s": conv_rates, "stream_gb_per_s": bandwidth,
      "step": stand(step_cost, step_s, peak, bandwidth),
      "export": stand(export_cost, export_s, peak, bandwidth),
  }
  text = common.write_json(result, args.out)
  print(text)


if __name__ == "__main__":
  main()
