r"""Peak host memory of the paper-shaped pretraining step: this project vs the original's code.

Every configuration runs in a fresh process of its own, so that each peak belongs to one
framework and one setting only:

* `jax:<remat>`: the trainer's own jitted step (`common.JaxPaperStep`, `paper` preset) with
  `model.remat` = `none` (every activation kept for the backward pass) or `block` (each
  bottleneck recomputed in the backward pass, `models/effnet1d.py`);
* `original`: the original authors' PyTorch code (github.com/rthapa84/sleepfm-codebase,
  `sleepfm/model/models.py`), three `EffNet`s with the 512-d `fc` exactly as its
  `2_pretrain.py` sets them up, the leave-one-out loss and SGD with momentum 0.9
  (`compare_torch.TorchPaperStep`). Its source is read from `--original` at run time and
  imported from a temporary folder; nothing of it is copied into this repository.

Per process: the peak RSS over its whole life (`ru_maxrss`: imports, initialisation, JAX's
compilation and the steps), the peak sampled during the timed steps, the median step time, and
for JAX XLA's temporary buffers of the compiled step.

  # --original: a checkout of the original repository, or its bare git directory
  python benchmarks/memory.py --original=/path/to/sleepfm-codebase --batches 32,64 \
      --out benchmarks/results/memory_cpu.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time
import types

import common  # noqa: F401  (sets the host allocator before JAX or PyTorch starts)

ORIGINAL_MODELS = "sleepfm/model/models.py"


def original_source(path: str) -> str:
  """The original's `models.py` from a checkout or from a bare git directory (`fetch`'s mirror)."""
  root = pathlib.Path(path)
  if (root / ORIGINAL_MODELS).exists():
    return (root / ORIGINAL_MODELS).read_text()
  return subprocess.run(["git", f"--git-dir={root}", "show", f"HEAD:{ORIGINAL_MODELS}"],
                        check=True, capture_output=True, text=True).stdout


def original_builder(path: str):
  """`in_channels -> EffNet` of the original code, set up as its `2_pretrain.py` does."""
  import importlib.util  # pylint: disable=import-outside-toplevel

  import torch  # pylint: disable=import-outside-toplevel

  try:
    import loguru  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:  # the original logs through loguru; its messages are not needed here
    quiet = types.SimpleNamespace(info=lambda *a, **k: None, debug=lambda *a, **k: None,
                                  warning=lambda *a, **k: None)
    sys.modules["loguru"] = types.SimpleNamespace(logger=quiet)
  folder = pathlib.Path(tempfile.mkdtemp(prefix="sleepfm_original_"))
  (folder / "models.py").write_text(original_source(path))
  spec = importlib.util.spec_from_file_location("sleepfm_original_models", folder / "models.py")
  models = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(models)

  def build(in_channels: int):
    model = models.EffNet(in_channel=in_channels, stride=2, dilation=1)
    model.fc = torch.nn.Linear(model.fc.in_features, 512)
    return model

  return build


def child(kind: str, batch: int, steps: int, original: str | None, samples: int,
          preset: str) -> dict:
  """One configuration in this process: build, one untimed step, `steps` timed ones."""
  if kind == "original":
    from compare_torch import TorchPaperStep  # pylint: disable=import-outside-toplevel

    step = TorchPaperStep(batch, samples=samples, build=original_builder(original))
    extra = {"threads": step.torch.get_num_threads(), "torch": step.torch.__version__}
    loss = lambda: step.last_loss[0]  # noqa: E731
  else:
    import jax  # pylint: disable=import-outside-toplevel

    jax.config.update("jax_enable_compilation_cache", False)
    config = common.paper_config("float32", preset=preset)
    config.model.remat = kind.split(":", 1)[1]
    step = common.JaxPaperStep(batch, samples=samples, config=config)
    extra = {"compile_s": round(step.compile_s, 1),
             "xla_memory_analysis_mib": step.memory_analysis()}
    loss = lambda: float(step.metrics["loss"])  # noqa: E731
  first = common.timed(step)
  timing = common.time_calls(step, batch, steps)
  return {"kind": kind, "batch": batch, "first_step_s": round(first, 2),
          "step": timing, "loss": loss(),
          "process_peak_rss_mib": common.process_peak_rss_mib(), **extra}


def run_child(kind: str, batch: int, args) -> dict:
  cmd = [sys.executable, __file__, f"--child={kind}", f"--batches={batch}",
         f"--steps={args.steps}", f"--samples={args.samples}", f"--preset={args.preset}"]
  original = args.original
  if original:
    cmd.append(f"--original={original}")
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  return {"kind": kind, "batch": batch, "error": f"exit {proc.returncode}: "
                                                 f"{proc.stderr.strip().splitlines()[-1:]}"}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", default="32,64")
  parser.add_argument("--kinds", default="original,jax:none,jax:block",
                      help="comma-separated: original, jax:none, jax:block")
  parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
  parser.add_argument("--original", default=None,
                      help="checkout (or bare git directory) of rthapa84/sleepfm-codebase")
  parser.add_argument("--samples", type=int, default=common.PAPER_SAMPLES)
  parser.add_argument("--preset", default="paper",
                      help="pretraining preset of the JAX step (`paper,quick`: tiny encoders)")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  batches = [int(b) for b in args.batches.split(",")]
  if args.child:
    print(json.dumps(child(args.child, batches[0], args.steps, args.original, args.samples,
                           args.preset)), flush=True)
    return
  kinds = args.kinds.split(",")
  if "original" in kinds and not args.original:
    parser.error("--original is required for the 'original' kind (or leave it out of --kinds)")
  started = time.time()
  result = {"benchmark": "memory", "what": __doc__.splitlines()[0], "host": common.host_info(),
            "channels": common.PAPER_CHANNELS, "samples": args.samples,
            "preset": args.preset, "dtype": "float32", "original": args.original, "results": []}
  if args.original:
    result["original_models_py_lines"] = len(original_source(args.original).splitlines())
  for batch in batches:
    for kind in kinds:
      entry = run_child(kind, batch, args)
      result["results"].append(entry)
      print(f"batch {batch} {kind}: peak RSS {entry.get('process_peak_rss_mib')} MiB, "
            f"step {entry.get('step', {}).get('median_s')} s {entry.get('error', '')}",
            flush=True)
      common.write_json(result, args.out)
  result["wall_s"] = round(time.time() - started, 1)
  text = common.write_json(result, args.out)
  print(text if not args.out else f"wrote {args.out}")


if __name__ == "__main__":
  main()
