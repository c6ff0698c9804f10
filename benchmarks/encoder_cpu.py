"""Wall time of one EffNet-1D train step (or inference forward), JAX vs the PyTorch reference.

One paper-shaped batch (default B=32, 5 channels, 7680 samples = 30 s at 256 Hz). `--mode train`:
forward + backward in train mode (batch-statistics BN, dropout), loss = sum of squared
embeddings. `--mode eval`: inference forward (running statistics, no gradient, as when
exporting embeddings). The two frameworks are timed
in alternating rounds in one process, so that a busy shared machine slows both alike; the JSON
reports medians, minima and their ratios.

  python benchmarks/encoder_cpu.py --mode train --batch 32 --rounds 7 --out encoder_cpu.json
"""

import argparse
import json
import os
import platform
import statistics
import time

import common  # host allocator set before JAX starts
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sleepfm_jax.models.effnet1d import EffNet1D


def jax_step_fn(model, mode):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def forward(params, rest, x):
    return nnx.merge(graphdef, params, rest)(x, train=False)

  if mode == "eval":
    return lambda x: jax.block_until_ready(forward(params, rest, x))

  @jax.jit
  def step(params, rest, x):
    m = nnx.merge(graphdef, params, rest)

    def loss(m):
      return jnp.sum(m(x, train=True) ** 2)

    value, grads = nnx.value_and_grad(loss)(m)
    return value, grads, nnx.state(m, nnx.Not(nnx.Param))

  return lambda x: jax.block_until_ready(step(params, rest, x))


def torch_step_fn(c_in, mode):
  import torch  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.training.torch_reference import build_effnet  # pylint: disable=C0415

  model = build_effnet(c_in).train(mode == "train")

  def forward(x):
    with torch.no_grad():
      model(x)

  if mode == "eval":
    return forward, torch

  def step(x):
    model.zero_grad(set_to_none=True)
    (model(x) ** 2).sum().backward()

  return step, torch


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mode", choices=("train", "eval"), default="train")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--channels", type=int, default=5)
  parser.add_argument("--samples", type=int, default=7680)
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--out", default=None, help="JSON file to write (default: print only)")
  args = parser.parse_args()

  shape = (args.batch, args.channels, args.samples)
  x_np = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  model = EffNet1D(args.channels, rngs=nnx.Rngs(0), dtype=jnp.dtype(args.dtype))
  jax_step = jax_step_fn(model, args.mode)
  x_jax = jnp.asarray(x_np)
  t0 = time.perf_counter()
  jax_step(x_jax)
  compile_s = time.perf_counter() - t0
  runners = {"jax": lambda: jax_step(x_jax)}
  if not args.no_torch:
    torch_step, torch = torch_step_fn(args.channels, args.mode)
    x_torch = torch.from_numpy(x_np)
    torch_step(x_torch)  # warm-up
    runners["torch"] = lambda: torch_step(x_torch)
  times = {k: [] for k in runners}
  for _ in range(args.rounds):
    for name, run in runners.items():
      t = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - t)
  result = {
      "benchmark": f"effnet1d_{args.mode}_cpu",
      "shape": list(shape),
      "dtype": args.dtype,
      "rounds": args.rounds,
      "jax_first_call_s": round(compile_s, 3),
      "median_s": {k: round(statistics.median(v), 4) for k, v in times.items()},
      "min_s": {k: round(min(v), 4) for k, v in times.items()},
      "all_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
      "versions": {"jax": jax.__version__},
      "host": {"cpus": os.cpu_count(), "machine": platform.machine(),
               "load_avg_1m": round(os.getloadavg()[0], 2),
               "host_allocator": common.HOST_ALLOCATOR},
  }
  if "torch" in times:
    result["versions"]["torch"] = torch.__version__
    result["torch_threads"] = torch.get_num_threads()
    result["speedup_median"] = round(result["median_s"]["torch"] / result["median_s"]["jax"], 3)
    result["speedup_min"] = round(result["min_s"]["torch"] / result["min_s"]["jax"], 3)
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
