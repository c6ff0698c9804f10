r"""One command, one JSON: what this accelerator (or CPU) does with SleepFM, end to end.

On whatever `jax.devices()` is (GPU, TPU or CPU), in this order:

1. peak: the best square matrix-product rate in float32 and bfloat16 (`roofline.peak_matmul`, or
   PyTorch's where XLA's GPU autotuning is off) and the streaming bandwidth
   (`roofline.stream_bandwidth`);
2. train_step: the trainer's paper-shaped step and the exporter's forward
   (`train_step.measure`) in every --dtypes at every --batches, with XLA's cost analysis of both;
3. roofline: from 1 and 2, each program's achieved FLOP/s as a fraction of the measured peak of
   its dtype (and of the vendor's nominal peak where the device is known), and its floors;
4. torch: the same step and forward in PyTorch (`compare_torch.TorchPaperStep`, float32) on the
   same device, when PyTorch is installed and can use it (else skipped, with the reason);
5. pretrain: the package's trainer (`training.train.train`) with the `paper` preset on a SYNTHETIC
   store written here (generator + preprocessing at --sample_rate, the paper's montage), for about
   --duration_s; samples/s and losses. The whole check stops by --time_limit_s: the pretraining is
   shortened to fit (its planned and actual lengths are in the JSON).

A failing part (e.g. out of device memory at one batch size) is recorded as an "error" and the
check goes on; so is a benchmark entry that would start less than `RESERVE_S` before the time
limit (batch sizes run smallest first, both dtypes each). Compilation times are cold: the
persistent compilation cache is off unless --compilation_cache names a folder.

On one GPU or TPU (run twice, partially, on an H200: docs/performance.md): the benchmarks first,
then the pretraining gets what they leave of --time_limit_s=460, up to --duration_s=300, so that
the check ends within 8 minutes. XLA's GPU autotuning is off (--gpu_autotune; it made the step's
first compile take 339 s on the H200), and the peaks of part 1 are then PyTorch's (--peak_by):

  python benchmarks/device_check.py

CPU smoke settings (what tests/test_device_check.py runs, a tiny encoder at 32 Hz):

  python benchmarks/device_check.py --quick --batches=2 --samples=960 --steps=2 --warmup=1 \
      --export_rounds=2 --peak_sizes=256 --bandwidth_gib=0.05 --sample_rate=32 --subjects=4 \
      --hours=0.1 --synthetic_rates=eeg=64,eog=64,emg=64,ecg=64,resp=16,spo2=1 \
      --pretrain_batch=4 --duration_s=5 --min_steps=4 --out=/tmp/device_check_cpu.json
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import statistics
import tempfile
import time
from typing import Any

from absl import flags

import common  # sets the host allocator before JAX starts
import compare_torch
import roofline
import train_step
from sleepfm_jax import cli

_BATCHES = flags.DEFINE_list("batches", ["32", "64", "256"], "Global batch sizes of the step and "
                             "export benchmarks (and of the PyTorch comparison).")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes of the encoders.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps / export calls per batch size (median).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls first.")
_EXPORT_ROUNDS = flags.DEFINE_integer("export_rounds", 10, "Timed export calls (0: no export).")
_SAMPLES = flags.DEFINE_integer("samples", common.PAPER_SAMPLES,
                                "Window length of the benchmark batches (7680: 30 s at 256 Hz).")
_QUICK = flags.DEFINE_bool("quick", False, "The `paper,quick` preset's tiny encoder everywhere "
                           "(widths 8, one block per stage): CPU smoke runs.")
_PEAK_SIZES = flags.DEFINE_list("peak_sizes", ["4096", "8192"],
                                "Square matrix-product sizes for the peak rate.")
_PEAK_ROUNDS = flags.DEFINE_integer("peak_rounds", 5, "Products per size (the best counts).")
_BANDWIDTH_GIB = flags.DEFINE_float("bandwidth_gib", 1.0, "Array size of the bandwidth test.")
_TORCH = flags.DEFINE_enum("torch", "auto", ["auto", "off"],
                           "auto: compare with PyTorch when it can use this device.")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", 256, "Store rate of the pretraining (Hz).")
_SUBJECTS = flags.DEFINE_integer("subjects", 8, "SYNTHETIC subjects (one night each).")
_HOURS = flags.DEFINE_float("hours", 1.0, "Hours per SYNTHETIC night.")
_SYNTHETIC_RATES = flags.DEFINE_string(
    "synthetic_rates", "", "Rates of the SYNTHETIC EDF files (generator syntax, e.g. "
    "eeg=64,ecg=64,resp=16); empty: the generator's defaults.")
_PRETRAIN_BATCH = flags.DEFINE_integer("pretrain_batch", 32, "Pretraining batch (paper: 32).")
_DURATION_S = flags.DEFINE_float("duration_s", 300.0, "Wanted length of the pretraining's steps.")
_MIN_STEPS = flags.DEFINE_integer("min_steps", 20, "Pretraining steps at least.")
_TIME_LIMIT_S = flags.DEFINE_float("time_limit_s", 460.0, "The pretraining is shortened so that "
                                   "the whole check ends by then (seconds from the start).")
_GPU_AUTOTUNE = flags.DEFINE_enum(
    "gpu_autotune", "off", ["off", "xla"],
    "off: XLA_FLAGS gets --xla_gpu_autotune_level=0 (unless XLA_FLAGS sets a level). On an H200 "
    "XLA's autotuning made the paper-shaped step's first compile take 339 s (54 s without), too "
    "long for the check's 8 minutes; the step ran no slower without it. xla: XLA's default. "
    "Without autotuning XLA's own matrix products are slow, so the peaks are then measured by "
    "PyTorch where it can use the device (--peak_by; else by JAX, understated: "
    "fraction_of_nominal_peak is the figure to read then).")
_PEAK_BY = flags.DEFINE_enum(
    "peak_by", "auto", ["auto", "jax", "torch"],
    "Who measures the peak product rates: auto = PyTorch where GPU autotuning is off and PyTorch "
    "can use the GPU (XLA's untuned products ran at 15 of 678 TFLOP/s in bfloat16 on an H200), "
    "else JAX.")
_LOADER_WORKERS = flags.DEFINE_integer("loader_workers", 0, "Grain worker processes of the "
                                       "pretraining (config.data.worker_count).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for the SYNTHETIC data, store and run "
                               "(default: a temporary folder, removed at the end).")
_OUT = flags.DEFINE_string("out", None, "JSON file (default: "
                           "benchmarks/results/device_check_<device>.json).")
cli.define_compilation_cache_flag()
flags.FLAGS.set_default("compilation_cache", "none")  # cold compile times, as the benchmarks

# Vendor spec-sheet peaks per chip, dense (no sparsity), GFLOP/s; float32 is the TF32 tensor-core
# rate, which XLA uses for float32 products at JAX's default precision on these GPUs. Matched in
# order against `device_kind`. The measured peak (part 1) is the reference of `fraction_of_peak`.
NOMINAL_PEAK_GFLOP_PER_S = (
    ("H100 PCIe", {"bfloat16": 756e3, "float32": 378e3}),
    ("H100", {"bfloat16": 989e3, "float32": 494e3}),
    ("H200", {"bfloat16": 989e3, "float32": 494e3}),
    ("A100", {"bfloat16": 312e3, "float32": 156e3}),
    ("TPU v6 lite", {"bfloat16": 918e3}),
    ("TPU v5 lite", {"bfloat16": 197e3}),
    ("TPU v5", {"bfloat16": 459e3}),
    ("TPU v4", {"bfloat16": 275e3}),
)


# Seconds of --time_limit_s kept for the pretraining's data, compilation and shortest run: a
# benchmark entry (or PyTorch batch size) that would start later is skipped.
RESERVE_S = 120.0


def _say(text: str) -> None:
  print(f"[device_check {time.strftime('%H:%M:%S')}] {text}", flush=True)


def _error(e: BaseException) -> dict[str, str]:
  return {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"}


def nominal_peak(device_kind: str) -> dict[str, float]:
  for name, peaks in NOMINAL_PEAK_GFLOP_PER_S:
    if name.lower() in device_kind.lower():
      return peaks
  return {}


def torch_peak_matmul(sizes, rounds: int, dtype: str, device: str) -> tuple[float, dict]:
  """As `roofline.peak_matmul`, by PyTorch on `device` (float32 with TF32 allowed, as JAX's
  default float32 products on GPUs)."""
  from sleepfm_jax.training import torch_reference  # pylint: disable=import-outside-toplevel

  torch = torch_reference.import_torch()
  tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  allow_tf32 = torch.backends.cuda.matmul.allow_tf32
  torch.backends.cuda.matmul.allow_tf32 = True
  try:
    square = {}
    for n in sizes:
      a = torch.full((n, n), 0.5, dtype=tdtype, device=device)
      b = torch.full((n, n), 0.5, dtype=tdtype, device=device)

      def product(a=a, b=b):
        torch.mm(a, b)
        sync()

      square[n] = round(2.0 * n ** 3 / roofline.best_of(product, rounds) / 1e9, 1)
      del a, b
  finally:
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
  return max(square.values()), square


def peak_source(peak_by: str, autotune_off: bool, backend: str) -> tuple[str, str | None]:
  """("jax" or "torch", the torch device) for part 1."""
  if peak_by == "jax" or (peak_by == "auto" and not (autotune_off and backend == "gpu")):
    return "jax", None
  device, reason = torch_device(backend)
  if device is None:
    if peak_by == "torch":
      raise ValueError(f"--peak_by=torch: {reason}")
    return "jax", None
  return "torch", device


def measure_peaks(dtypes, sizes, rounds: int, gib: float, device_kind: str,
                  by: tuple[str, str | None] = ("jax", None)) -> dict[str, Any]:
  """Part 1: peak product rate per dtype (by JAX, or by PyTorch on `by[1]`), nominal peak,
  streaming bandwidth (JAX)."""
  nominal = nominal_peak(device_kind)
  out: dict[str, Any] = {"measured_by": by[0]}
  for dtype in dtypes:
    if by[0] == "torch":
      peak, square = torch_peak_matmul(sizes, rounds, dtype, by[1])
    else:
      peak, square = roofline.peak_matmul(sizes, rounds, dtype)
    out[dtype] = {"peak_gflop_per_s": peak, "square_matmul_gflop_per_s": square,
                  "nominal_peak_gflop_per_s": nominal.get(dtype)}
    _say(f"peak {dtype}: {peak:.1f} GFLOP/s measured by {by[0]}"
         + (f", {nominal[dtype]:.0f} nominal" if dtype in nominal else ""))
  out["stream_gb_per_s"] = round(roofline.stream_bandwidth(gib, rounds), 1)
  _say(f"stream bandwidth: {out['stream_gb_per_s']} GB/s")
  return out


def roofline_entry(part: dict[str, Any], peak: dict[str, Any], bandwidth: float) -> dict:
  """Part 3 for one program: `roofline.stand` against the measured peak, and the nominal one."""
  out = roofline.stand(part["xla_cost"], part["all_s"], peak["peak_gflop_per_s"], bandwidth)
  nominal = peak.get("nominal_peak_gflop_per_s")
  out["fraction_of_nominal_peak"] = (common.sig(out["achieved_gflop_per_s"] / nominal)
                                     if nominal else None)
  return out


def torch_device(backend: str) -> tuple[str | None, str | None]:
  """The torch device on the same hardware as JAX's `backend`, or (None, why not)."""
  try:
    from sleepfm_jax.training import torch_reference  # pylint: disable=import-outside-toplevel

    torch = torch_reference.import_torch()
  except ImportError as e:
    return None, f"PyTorch is not installed ({e})"
  if backend == "cpu":
    return "cpu", None
  if backend in ("gpu", "cuda", "rocm"):
    if torch.cuda.is_available():
      return "cuda", None
    return None, (f"PyTorch {torch.__version__} cannot use this GPU (torch.cuda.is_available() "
                  "is False: a CPU-only build?)")
  return None, f"PyTorch has no {backend} backend here; the comparison needs the same device"


def compare_with_torch(batches, jax_f32: dict[str, Any], backend: str, model: dict | None,
                       samples: int, rounds: int, warmup: int, export_rounds: int,
                       deadline: float) -> dict:
  """Part 4: PyTorch's float32 step and forward at each batch size, against JAX's float32."""
  device, reason = torch_device(backend)
  if device is None:
    return {"status": "skipped", "reason": reason}
  from sleepfm_jax.training import torch_reference  # pylint: disable=import-outside-toplevel

  torch = torch_reference.import_torch()
  out: dict[str, Any] = {
      "status": "ran", "device": device, "version": torch.__version__,
      "reference": "sleepfm_jax/training/torch_reference.py: the original SleepFM's EffNet-1D "
                   "(its layer names) and its training script's leave-one-out loss, float32",
      "results": {}}
  if device == "cuda":  # PyTorch's defaults, recorded (JAX's float32 products may use TF32)
    out.update(device_name=torch.cuda.get_device_name(0),
               matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
               cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
               cudnn_benchmark=torch.backends.cudnn.benchmark)
  else:
    out["threads"] = torch.get_num_threads()
  for batch in batches:
    key = f"batch_{batch}"
    if time.time() > deadline - RESERVE_S:
      out["results"][key] = {"error": "skipped: too close to --time_limit_s"}
      continue
    try:
      tstep = compare_torch.TorchPaperStep(batch, samples=samples, device=device, model=model)
      entry = {"step": common.time_calls(tstep, batch, rounds, warmup)}
      entry["step"]["loss_last"] = tstep.last_loss[0]
      if export_rounds:
        entry["export"] = common.time_calls(tstep.export, batch, export_rounds, 1)
      del tstep
    except Exception as e:  # pylint: disable=broad-except  # e.g. out of device memory
      entry = _error(e)
    if device == "cuda":
      torch.cuda.empty_cache()
    ratios = {}
    for part in ("step", "export"):
      j = jax_f32.get(key, {}).get(part)
      if j and part in entry:
        ratios[part] = round(j["samples_per_s"] / entry[part]["samples_per_s"], 3)
    entry["ratio_jax_over_torch"] = ratios
    out["results"][key] = entry
    _say(f"torch batch {batch}: " + (entry.get("error") or ", ".join(
        f"{p} {entry[p]['samples_per_s']} samples/s (JAX / torch {ratios.get(p)})"
        for p in ("step", "export") if p in entry)))
  return out


def make_store(root: pathlib.Path, *, subjects: int, hours: float, rates: str,
               sample_rate: int) -> tuple[str, dict]:
  """SYNTHETIC nights (the project's generator) preprocessed into a window store with the paper's
  montage (5 BAS, ECG, 3 respiratory channels) at `sample_rate`."""
  from sleepfm_jax.configs import preprocess as preprocess_configs  # pylint: disable=C0415
  from sleepfm_jax.data import discovery, synthetic  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data.preprocess import preprocess  # pylint: disable=import-outside-toplevel

  workers = max(1, min(subjects, (os.cpu_count() or 1) // 2))
  t = time.perf_counter()
  synthetic.write_dataset(root / "edf", n_subjects=subjects, hours=hours, seed=0,
                          rates=rates or None, workers=workers, progress=False)
  generate_s = time.perf_counter() - t
  config = preprocess_configs.get_config("synthetic").to_dict()
  config.update(montage="paper", sample_rate=sample_rate, workers=workers)
  specs, unpaired = discovery.discover([str(root / "edf")])
  t = time.perf_counter()
  report = preprocess(specs, root / "store", config, unpaired=unpaired, progress=False)
  info = {"subjects": subjects, "hours_per_night": hours, "sample_rate": sample_rate,
          "synthetic_rates": rates or "generator defaults", "montage": "paper",
          "recordings_ok": report["files"]["ok"], "generate_s": round(generate_s, 1),
          "preprocess_s": round(time.perf_counter() - t, 1)}
  return str(root / "store"), info


def pretrain(root: pathlib.Path, *, preset: str, batch: int, duration_s: float, min_steps: int,
             deadline: float, estimate: dict[str, float] | None, loader_workers: int) -> dict:
  """Part 5: the trainer on a SYNTHETIC store for about `duration_s` (ending by `deadline`)."""
  from sleepfm_jax.configs import pretrain as pretrain_configs  # pylint: disable=C0415
  from sleepfm_jax.data.store import WindowStore  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.training import train  # pylint: disable=import-outside-toplevel

  store, info = make_store(root, subjects=_SUBJECTS.value, hours=_HOURS.value,
                           rates=_SYNTHETIC_RATES.value, sample_rate=_SAMPLE_RATE.value)
  windows = len(WindowStore(store))
  _say(f"SYNTHETIC store: {info['recordings_ok']} nights, {windows} windows at "
       f"{info['sample_rate']} Hz (generate {info['generate_s']} s, preprocess "
       f"{info['preprocess_s']} s)")
  config = pretrain_configs.get_config(preset)
  config.data.store = store
  config.data.worker_count = loader_workers
  config.batch_size = batch
  # The paper's StepLR decays x0.1 every 5 epochs; epochs of a small store last seconds, so the
  # rate would vanish within the run: keep the paper's starting rate instead.
  config.optim.schedule = "constant"
  # Steps for `duration_s` at the speed part 2 measured at the nearest batch size (the trainer also
  # loads data), fewer when the time limit is near; setup: that step's init, lower and compile.
  setup_s = 1.5 * estimate["setup_s"] + 20.0 if estimate else 60.0
  planned_s = max(0.0, min(duration_s, deadline - time.time() - setup_s))
  sps = estimate["samples_per_s"] if estimate else batch
  steps = max(min_steps, int(planned_s * sps / batch))
  config.total_steps = steps
  config.eval_every = config.checkpoint_every = steps  # validate and save once, at the end
  config.eval_max_batches = 8
  config.log_every = max(1, min(config.log_every, steps // 5))
  out: dict[str, Any] = {
      "preset": preset, "store": info, "windows": windows, "batch_size": batch,
      "duration_requested_s": duration_s, "duration_planned_s": round(planned_s, 1),
      "steps": steps, "estimate_from_benchmark": estimate,
      "overrides": {"optim.schedule": "constant (the paper's StepLR is per epoch; a small "
                                      "store's epochs are seconds long)",
                    "total_steps": steps, "eval_every": steps, "checkpoint_every": steps,
                    "eval_max_batches": 8, "log_every": config.log_every,
                    "data.worker_count": loader_workers}}
  _say(f"pretraining {preset} for {steps} steps of batch {batch} (about {planned_s:.0f} s)")
  t = time.perf_counter()
  summary = train.train(config, str(root / "run"))
  out["wall_s"] = round(time.perf_counter() - t, 1)
  rows = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
  train_rows = [r for r in rows if r["split"] == "train"]
  rates = [r["samples_per_s"] for r in train_rows if "samples_per_s" in r]
  out.update({
      "final_step": summary["final_step"], "first_step_s": round(summary["first_step_s"], 2),
      # After the first (compiling) step; one value per log interval.
      "samples_per_s": round(statistics.median(rates), 2) if rates else None,
      "samples_per_s_per_interval": [round(r, 2) for r in rates],
      "loss_first": train_rows[0]["loss"] if train_rows else None,
      "loss_last": train_rows[-1]["loss"] if train_rows else None,
      "loss_by_step": {r["step"]: round(r["loss"], 4) for r in train_rows},
      "val": {k: v for k, v in summary.get("val", {}).items() if isinstance(v, (int, float))},
  })
  return out


def benchmark_steps(result: dict[str, Any], batches, preset: str, deadline: float,
                    out: str) -> None:
  """Parts 2 and 3 into `result["train_step"]` and `result["roofline"]`: `train_step.measure` per
  batch size and dtype (batch-major, so that a time limit reached early still leaves both dtypes
  at the small batches) against `result["peak"]`; `result` is rewritten to `out` after every
  entry, so that what is done survives a crash."""
  import jax  # pylint: disable=import-outside-toplevel

  peak = result["peak"]

  steps = result["train_step"] = {dtype: {} for dtype in _DTYPES.value}
  roofs = result["roofline"] = {dtype: {} for dtype in _DTYPES.value}
  for batch in batches:
    for dtype in _DTYPES.value:
      key = f"batch_{batch}"
      if time.time() > deadline - RESERVE_S:
        entry = {"error": f"skipped: fewer than {RESERVE_S:.0f} s left before --time_limit_s "
                          "(kept for the pretraining)"}
      else:
        try:
          entry = train_step.measure(batch, dtype, _STEPS.value, _WARMUP.value,
                                     _EXPORT_ROUNDS.value, preset=preset, samples=_SAMPLES.value,
                                     with_cost=True)
        except Exception as e:  # pylint: disable=broad-except  # e.g. out of device memory
          entry = _error(e)
          jax.clear_caches()
      steps[dtype][key] = entry
      if "error" in entry:
        _say(f"{dtype} batch {batch}: {entry['error']}")
        continue
      roof = {p: roofline_entry(entry[p], peak[dtype], peak["stream_gb_per_s"])
              for p in ("step", "export") if p in entry}
      roofs[dtype][key] = roof
      _say(f"{dtype} batch {batch}: step {entry['step']['samples_per_s']} samples/s (compile "
           f"{entry['compile_s']} s, {roof['step']['fraction_of_peak']:.3g} of peak)"
           + (f", export {entry['export']['samples_per_s']} samples/s "
              f"({roof['export']['fraction_of_peak']:.3g} of peak)" if "export" in roof else ""))
      common.write_json(result, out)


def _torch_model(preset: str) -> dict[str, Any]:
  """`build_effnet` arguments of the preset's encoder (the tiny one of `--quick`)."""
  m = common.paper_config(preset=preset).model
  return {"widths": tuple(m.widths), "depths": tuple(m.depths), "head_width": m.head_width,
          "embed_dim": m.embed_dim}


def pretrain_part(f32: dict[str, Any], preset: str, deadline: float) -> dict[str, Any]:
  """Part 5 with its speed estimate from the float32 benchmark entries `f32`, in --workdir or a
  temporary folder (removed after); a failure is returned as an "error"."""
  ok = {int(k.split("_")[1]): v for k, v in f32.items() if "step" in v}
  estimate = None
  if ok:
    b = min(ok, key=lambda b: abs(b - _PRETRAIN_BATCH.value))
    estimate = {"batch": b, "samples_per_s": ok[b]["step"]["samples_per_s"],
                "setup_s": ok[b]["init_s"] + ok[b]["lower_s"] + ok[b]["compile_s"]}
  root = pathlib.Path(_WORKDIR.value or tempfile.mkdtemp(prefix="device_check_"))
  try:
    p = pretrain(root, preset=preset, batch=_PRETRAIN_BATCH.value, duration_s=_DURATION_S.value,
                 min_steps=_MIN_STEPS.value, deadline=deadline, estimate=estimate,
                 loader_workers=_LOADER_WORKERS.value)
    _say(f"pretraining: {p['final_step']} steps in {p['wall_s']} s, {p['samples_per_s']} "
         f"samples/s, loss {p['loss_first']} -> {p['loss_last']}")
  except Exception as e:  # pylint: disable=broad-except
    p = _error(e)
    _say(f"pretraining failed: {p['error']}")
  finally:
    if not _WORKDIR.value:
      shutil.rmtree(root, ignore_errors=True)
  return p


def device_name(host: dict[str, Any]) -> str:
  kind = host["backend"] if host["backend"] == "cpu" else host["device_kind"]
  return re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_")


AUTOTUNE_FLAG = "--xla_gpu_autotune_level=0"


def set_gpu_autotune(mode: str) -> bool:
  """Before JAX starts its backends: turns XLA's GPU autotuning off for `mode == "off"` unless
  XLA_FLAGS already sets a level. Returns whether it is off (CPU and TPU ignore the flag)."""
  current = os.environ.get("XLA_FLAGS", "")
  if "xla_gpu_autotune_level" in current:
    return "xla_gpu_autotune_level=0" in current
  if mode == "off":
    os.environ["XLA_FLAGS"] = f"{current} {AUTOTUNE_FLAG}".strip()
    return True
  return False


def main(argv):
  del argv
  autotune_off = set_gpu_autotune(_GPU_AUTOTUNE.value)
  # JAX takes 75 % of GPU memory at start; leave PyTorch room for its part (unless set).
  os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.6")
  cli.start()
  started = time.time()
  deadline = started + _TIME_LIMIT_S.value
  import jax  # pylint: disable=import-outside-toplevel

  preset = "paper,quick" if _QUICK.value else "paper"
  batches = [int(b) for b in _BATCHES.value]
  host = common.host_info()
  result: dict[str, Any] = {
      "benchmark": "device_check",
      "what": "peak rates, the trainer's paper-shaped step and the exporter's forward (float32 / "
              "bfloat16), their roofline fractions, PyTorch on the same device, and a short "
              "paper-preset pretraining on SYNTHETIC data",
      "settings": {h.name: h.value for h in globals().values() if isinstance(h, flags.FlagHolder)},
      "preset": preset, "channels": common.PAPER_CHANNELS, "samples": _SAMPLES.value,
      "host": host, "device_count": jax.device_count(),
      "xla_python_client_mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
      "gpu_autotune_off": autotune_off,
  }
  _say(f"{host['backend']}: {jax.device_count()} x {host['device_kind']}, preset {preset}")
  out = _OUT.value or str(common.RESULTS / f"device_check_{device_name(host)}.json")

  # -- 1. peak rates --
  result["peak"] = measure_peaks(_DTYPES.value, [int(n) for n in _PEAK_SIZES.value],
                                 _PEAK_ROUNDS.value, _BANDWIDTH_GIB.value, host["device_kind"],
                                 peak_source(_PEAK_BY.value, autotune_off, host["backend"]))

  # -- 2. the trainer's step and the exporter's forward; 3. their roofline fractions --
  benchmark_steps(result, batches, preset, deadline, out)
  # -- 4. PyTorch on the same device --
  if _TORCH.value == "off":
    result["torch"] = {"status": "skipped", "reason": "--torch=off"}
  else:
    result["torch"] = compare_with_torch(
        batches, result["train_step"].get("float32", {}), host["backend"],
        _torch_model(preset) if _QUICK.value else None, _SAMPLES.value, _STEPS.value,
        _WARMUP.value, _EXPORT_ROUNDS.value, deadline)
  if result["torch"]["status"] == "skipped":
    _say(f"torch skipped: {result['torch']['reason']}")
  common.write_json(result, out)
  # -- 5. pretraining on SYNTHETIC data --
  result["pretrain"] = pretrain_part(result["train_step"].get("float32", {}), preset, deadline)

  result["summary"] = summarise_result(result)
  result["wall_s"] = round(time.time() - started, 1)
  result["process_peak_rss_mib"] = common.process_peak_rss_mib()
  common.write_json(result, out)
  _say(f"done in {result['wall_s']} s; wrote {out}")
  print(json.dumps(result["summary"], indent=2))


def summarise_result(result: dict[str, Any]) -> dict[str, Any]:
  """The headline figures: samples/s and roofline fractions per dtype and batch, PyTorch ratios,
  pretraining speed and loss."""
  out: dict[str, Any] = {"device": result["host"]["device_kind"], "train_step": {}}
  for dtype, entries in result["train_step"].items():
    out["train_step"][dtype] = {
        k: e.get("error") or {
            "step_samples_per_s": e["step"]["samples_per_s"],
            "export_samples_per_s": e.get("export", {}).get("samples_per_s"),
            "step_fraction_of_peak": result["roofline"][dtype][k]["step"]["fraction_of_peak"],
            "export_fraction_of_peak":
                result["roofline"][dtype][k].get("export", {}).get("fraction_of_peak")}
        for k, e in entries.items()}
  torch = result["torch"]
  out["torch"] = ({k: v.get("error") or v["ratio_jax_over_torch"]
                   for k, v in torch["results"].items()}
                  if torch["status"] == "ran" else f"skipped: {torch['reason']}")
  p = result["pretrain"]
  out["pretrain"] = p.get("error") or {k: p[k] for k in ("steps", "wall_s", "samples_per_s",
                                                         "loss_first", "loss_last")}
  return out


if __name__ == "__main__":
  cli.run(main)
