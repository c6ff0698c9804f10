r"""JAX vs PyTorch, paper-shaped: the pretraining step and the export forward, alternating.

One process, both frameworks, the same random batch, rounds alternating JAX / PyTorch so that a
shared machine's load slows both alike:

* step: three EffNet-1D encoders (BAS 5, ECG 1, respiratory 3 channels; 30 s x 256 Hz), the
  leave-one-out contrastive loss, backward and an SGD-momentum(0.9) update with the temperature
  clamped at t >= 0. JAX runs the trainer's own jitted step (`steps.make_steps`, paper preset);
  PyTorch runs `sleepfm_jax/training/torch_reference.py` encoders with a leave-one-out loss computed the
  way the original training script computes it.
* export: the eval-mode forward of the three encoders (JAX: `export.Embedder.embed_batch`,
  numpy in, numpy out; PyTorch: `inference_mode`, numpy in, numpy out).

Median of `--rounds` rounds after `--warmup` rounds; samples/s; peak RSS increase during the
calls of each framework (sampled; the two frameworks share the process, so the figure is the
working memory one call adds, not the resident model); ratio = JAX samples/s / PyTorch samples/s.

  python benchmarks/compare_torch.py --batches 32,64 --rounds 7 \
      --out benchmarks/results/compare_torch_cpu.json
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Mapping

import numpy as np

import common  # noqa: F401  (sets the host allocator before JAX starts)
from common import PAPER_CHANNELS, PAPER_SAMPLES, RssSampler, summarise, timed


class TorchPaperStep:
  """The original's pretraining step in PyTorch: 3 encoders, LOO loss, backward, SGD momentum.

  `device`: a torch device ("cpu", "cuda"); `model`: `torch_reference.build_effnet` keyword
  arguments (widths, depths, head_width, embed_dim) for a smaller encoder than the paper's;
  `build`: `in_channels -> torch.nn.Module` instead (e.g. the original authors' own `EffNet`,
  `benchmarks/memory.py`).
  """

  def __init__(self, batch: int, samples: int = PAPER_SAMPLES,
               channels: Mapping[str, int] = PAPER_CHANNELS, lr: float = 1e-3, seed: int = 0,
               device: str = "cpu", model: Mapping[str, object] | None = None,
               build: Callable[[int], object] | None = None):
    from sleepfm_jax.training import torch_reference  # pylint: disable=import-outside-toplevel

    torch = torch_reference.import_torch()
    self.torch = torch
    self.device = torch.device(device)
    torch.manual_seed(seed)
    if build is None:  # this project's reference of the original architecture
      build = functools.partial(torch_reference.build_effnet, **(model or {}))
    self.encoders = {m: build(c).to(self.device) for m, c in channels.items()}
    self.temperature = torch.nn.Parameter(torch.as_tensor(0.0, device=self.device))
    params = [p for e in self.encoders.values() for p in e.parameters()] + [self.temperature]
    self.optim = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=0.0)
    host = common.paper_inputs(batch, samples, seed, channels)
    self.inputs = {m: torch.from_numpy(x).to(self.device) for m, x in host.items()}
    self.host = host
    self.last_loss = None

  def loss(self, embs: list) -> object:
    """Leave-one-out loss as the original computes it: each modality against the plain mean of
    the others, cross-entropy summed over rows and both directions, / (2 x modalities), / batch."""
    torch = self.torch
    f = torch.nn.functional
    embs = [f.normalize(e) for e in embs]
    n = len(embs)
    total = 0.0
    correct = []
    for i in range(n):
      others = torch.stack([embs[j] for j in range(n) if j != i]).sum(0) / (n - 1)
      logits = embs[i] @ others.T * torch.exp(self.temperature)
      labels = torch.arange(logits.shape[0], device=logits.device)
      total = total + f.cross_entropy(logits, labels, reduction="sum")
      total = total + f.cross_entropy(logits.T, labels, reduction="sum")
      with torch.no_grad():  # the original's retrieval accuracies
        correct.append((torch.argmax(logits, 0) == labels).sum())
        correct.append((torch.argmax(logits, 1) == labels).sum())
    return total / (2 * n) / embs[0].shape[0], correct

  def __call__(self) -> None:
    torch = self.torch
    for e in self.encoders.values():
      e.train()
    embs = [self.encoders[m](x) for m, x in self.inputs.items()]
    loss, correct = self.loss(embs)
    self.optim.zero_grad(set_to_none=True)
    loss.backward()
    self.optim.step()
    with torch.no_grad():
      self.temperature.clamp_(min=0.0)
    self.last_loss = (float(loss.item()), [int(c) for c in correct])

  def export(self) -> dict[str, np.ndarray]:
    torch = self.torch
    out = {}
    with torch.inference_mode():
      for m, e in self.encoders.items():
        e.eval()
        out[m] = e(torch.from_numpy(self.host[m]).to(self.device)).cpu().numpy()
    return out


def alternate(runners: Mapping[str, callable], warmup: int, rounds: int, batch: int) -> dict:
  """Times the runners in alternating rounds; also the peak RSS increase during their calls."""
  for _ in range(warmup):
    for run in runners.values():
      run()
  times = {k: [] for k in runners}
  mem = {k: 0.0 for k in runners}
  loads = []
  for _ in range(rounds):
    loads.append(common.load_average()[0])
    for name, run in runners.items():
      with RssSampler() as s:
        times[name].append(timed(run))
      mem[name] = max(mem[name], s.peak_mib - s.start_mib)
  out = {k: dict(summarise(v, batch), peak_rss_increase_mib=round(mem[k], 1))
         for k, v in times.items()}
  out["ratio_jax_over_torch"] = round(out["jax"]["samples_per_s"] / out["torch"]["samples_per_s"],
                                      3)
  out["ratio_min_times"] = round(out["torch"]["min_s"] / out["jax"]["min_s"], 3)
  out["load_avg_1m_per_round"] = loads
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="32,64", help="comma-separated batch sizes")
  parser.add_argument("--samples", type=int, default=PAPER_SAMPLES)
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--parts", default="step,export", help="step and/or export")
  parser.add_argument("--torch-threads", type=int, default=0, help="0: PyTorch's default")
  parser.add_argument("--out", default=None, help="JSON file (default: print only)")
  args = parser.parse_args()

  import jax  # pylint: disable=import-outside-toplevel

  jax.config.update("jax_enable_compilation_cache", False)  # compile times stay honest
  from sleepfm_jax.training.torch_reference import import_torch  # pylint: disable=C0415

  torch = import_torch()
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  parts = args.parts.split(",")
  result = {
      "benchmark": "compare_torch",
      "what": "paper-shaped pretraining step (3 encoders, LOO loss, backward, SGD momentum) and "
              "export forward (3 encoders, eval mode); JAX and PyTorch alternating in one process",
      "channels": PAPER_CHANNELS, "samples": args.samples, "dtype": "float32",
      "rounds": args.rounds, "warmup": args.warmup,
      "host": common.host_info(),
      "torch": {"version": torch.__version__, "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads()},
      "results": {},
  }
  started = time.time()
  for batch in [int(b) for b in args.batches.split(",")]:
    jstep = common.JaxPaperStep(batch, samples=args.samples)
    tstep = TorchPaperStep(batch, samples=args.samples)
    entry = {"jax_compile_s": round(jstep.compile_s, 2), "jax_lower_s": round(jstep.lower_s, 2),
             "jax_step_memory_analysis": jstep.memory_analysis()}
    if "step" in parts:
      entry["step"] = alternate({"jax": jstep, "torch": tstep}, args.warmup, args.rounds, batch)
      entry["step"]["final_loss"] = {"jax": float(jstep.metrics["loss"]),
                                     "torch": tstep.last_loss[0]}
    if "export" in parts:
      jexp = common.JaxExport(jstep.model(), batch, samples=args.samples)
      entry["jax_export_first_call_s"] = round(jexp.first_call_s, 2)
      entry["export"] = alternate({"jax": jexp, "torch": tstep.export}, args.warmup,
                                  args.rounds, batch)
      del jexp
    result["results"][f"batch_{batch}"] = entry
    del jstep, tstep
    jax.clear_caches()
    if args.out:  # after each batch size: a later one that runs out of memory keeps these
      common.write_json(result, args.out)
    print(f"batch {batch}: " + ", ".join(
        f"{p} x{entry[p]['ratio_jax_over_torch']}" for p in parts if p in entry), flush=True)
  result["wall_s"] = round(time.time() - started, 1)
  result["host"]["load_avg_1_5_15m_end"] = common.load_average()
  result["process_peak_rss_mib"] = common.process_peak_rss_mib()
  summary = {k: {p: v[p]["ratio_jax_over_torch"] for p in parts if p in v}
             for k, v in result["results"].items()}
  result["summary_ratio_jax_over_torch"] = summary
  text = common.write_json(result, args.out)
  print(text if not args.out else f"wrote {args.out}: {summary}")


if __name__ == "__main__":
  main()
