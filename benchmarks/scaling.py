r"""Scaling on simulated CPU devices: the gathered contrastive loss as the global batch grows, and
weak scaling of a small encoder step over 1, 2, 4, 8 devices.

1. Loss: `losses.gathered_loss` (forward + gradient w.r.t. the embeddings and the temperature) on
   8 simulated devices, 3 modalities of 512-d embeddings, leave-one-out and pairwise, global batch
   256 ... 8192. Each device holds `[B/8, B]` logits per term (never `[B, B]`); reported: median
   seconds, XLA's temporary buffer size of the compiled program, and the size one `[B/8, B]`
   float32 logits block and one full `[B, B]` matrix would take.
2. Weak scaling: the trainer's jitted step (`steps.init_state` + `steps.make_steps`) for a small
   3-modality encoder at a fixed per-device batch on meshes of 1, 2, 4, 8 devices.

Simulated CPU devices share this machine's cores, so part 2 measures the overhead of sharding
(collectives, partitioning), not a speed-up: ideal weak scaling on real accelerators is a flat
step time, here it is step time growing in proportion to the device count. Run on real devices
(GPU/TPU host) with `--no-simulate` for the real curve.

  python benchmarks/scaling.py --out benchmarks/results/scaling_cpu.json
"""

from __future__ import annotations

import argparse
import os
import time

import common  # noqa: F401  (sets the host allocator before JAX starts)
from common import summarise, timed


def loss_scaling(batches, modes, dim: int, rounds: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.training import losses, sharding  # pylint: disable=import-outside-toplevel

  mesh = sharding.make_mesh()
  n_dev = sharding.data_axis_size(mesh)
  out = {"devices": n_dev, "embedding_dim": dim, "modalities": 3, "results": {}}
  for mode in modes:
    for batch in batches:
      rng = np.random.default_rng(batch)
      host = {m: rng.standard_normal((batch, dim)).astype(np.float32) for m in ("bas", "ecg",
                                                                                  "resp")}
      embs = jax.device_put(host, sharding.data_sharding(mesh))
      t = jax.device_put(jnp.float32(0.5), sharding.replicated(mesh))

      def objective(embs, t, mode=mode):
        loss, _ = losses.gathered_loss(embs, None, t, mesh=mesh, mode=mode)
        return loss

      fn = jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))
      t0 = time.perf_counter()
      compiled = fn.lower(embs, t).compile()
      compile_s = time.perf_counter() - t0

      def run(compiled=compiled, embs=embs, t=t):
        jax.block_until_ready(compiled(embs, t))

      run()
      times = [timed(run) for _ in range(rounds)]
      mem = compiled.memory_analysis()
      entry = dict(summarise(times, batch), compile_s=round(compile_s, 2),
                   xla_temp_mib=None if mem is None else round(mem.temp_size_in_bytes / 2**20, 1),
                   local_logits_block_mib=round(batch // n_dev * batch * 4 / 2**20, 2),
                   full_logits_matrix_mib=round(batch * batch * 4 / 2**20, 1))
      out["results"][f"{mode}_batch_{batch}"] = entry
      print(f"loss {mode} B={batch}: {entry['median_s'] * 1e3:.1f} ms, XLA temp "
            f"{entry['xla_temp_mib']} MiB, per-device logits block "
            f"{entry['local_logits_block_mib']} MiB", flush=True)
  return out


def weak_scaling(device_counts, per_device_batch: int, samples: int, rounds: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.training import sharding  # pylint: disable=import-outside-toplevel

  channels = dict(common.PAPER_CHANNELS)
  out = {"per_device_batch": per_device_batch, "samples": samples, "channels": channels,
         "model": "small EffNet-1D (widths 16..64, one block per stage)", "results": {}}
  for n in device_counts:
    if n > len(jax.devices()):
      continue
    mesh = sharding.make_mesh(devices=jax.devices()[:n])
    config = common.paper_config()
    config.model.update(widths=(16, 16, 24, 32, 48, 64, 64, 64), depths=(1, 1, 1, 1, 1, 1, 1),
                        head_width=128, embed_dim=64)
    step = common.JaxPaperStep(per_device_batch * n, samples=samples, channels=channels,
                               mesh=mesh, config=config)
    step()
    times = [timed(step) for _ in range(rounds)]
    entry = dict(summarise(times, per_device_batch * n), compile_s=round(step.compile_s, 2))
    out["results"][f"devices_{n}"] = entry
    print(f"weak scaling {n} devices (global batch {per_device_batch * n}): "
          f"{entry['median_s'] * 1e3:.0f} ms/step", flush=True)
    del step
    jax.clear_caches()
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="256,512,1024,2048,4096,8192")
  parser.add_argument("--modes", default="leave_one_out,pairwise")
  parser.add_argument("--devices", default="1,2,4,8")
  parser.add_argument("--per_device_batch", type=int, default=4)
  parser.add_argument("--samples", type=int, default=1920, help="window length (64 Hz x 30 s)")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--no-simulate", dest="simulate", action="store_false",
                      help="use the real devices instead of 8 simulated CPU devices")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()

  import jax  # pylint: disable=import-outside-toplevel

  if args.simulate:
    jax.config.update("jax_num_cpu_devices", 8)
  jax.config.update("jax_enable_compilation_cache", False)
  result = {"benchmark": "scaling", "simulated_cpu_devices": args.simulate,
            "host": common.host_info(), "cpu_count": os.cpu_count()}
  result["loss"] = loss_scaling([int(b) for b in args.batches.split(",")],
                                args.modes.split(","), 512, args.rounds)
  result["weak_scaling"] = weak_scaling([int(d) for d in args.devices.split(",")],
                                        args.per_device_batch, args.samples, args.rounds)
  text = common.write_json(result, args.out)
  print(text if not args.out else f"wrote {args.out}")


if __name__ == "__main__":
  main()
