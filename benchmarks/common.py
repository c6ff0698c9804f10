"""Shared pieces of the benchmark scripts: host facts, timing, memory, the paper-shaped step.

Every benchmark builds the *trainer's own* jitted step (`steps.init_state` + `steps.make_steps`,
the functions `train.train` runs) and the *exporter's own* forward (`export.Embedder`), so the
figures measure the code that trains and exports, not a copy. Nothing here is CPU specific: on a
GPU or TPU the same calls run on `jax.devices()`, and device memory statistics are reported where
the backend offers `Device.memory_stats()`.

Paper shapes: three encoders (BAS 5 channels, ECG 1, respiratory 3), 30-s windows at 256 Hz
(7680 samples), leave-one-out loss, SGD with momentum 0.9 (the package's `configs/pretrain.py:paper`).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import resource
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from sleepfm_jax.training import hostmem

REPO = pathlib.Path(__file__).resolve().parents[1]

# Before any benchmark starts JAX (or PyTorch): both then reuse freed buffers instead of mapping
# fresh zero-filled pages on every call, as the CLIs do. SLEEPFM_JAX_HOST_ALLOCATOR=system opts out.
HOST_ALLOCATOR = hostmem.retain_freed_memory()
CPU_INLINE = hostmem.run_cpu_computations_inline()  # XLA:CPU frees a step's temporaries first

PAPER_CHANNELS = {"bas": 5, "ecg": 1, "resp": 3}
PAPER_SAMPLES = 7680  # 30 s x 256 Hz
RESULTS = REPO / "benchmarks" / "results"


# ----------------------------------------------------------------------------------------------
# Host and device facts
# ----------------------------------------------------------------------------------------------


def load_average() -> list[float]:
  return [round(v, 2) for v in os.getloadavg()]


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def host_info() -> dict[str, Any]:
  """Machine, software versions, devices and XLA flags: what a figure depends on."""
  import jax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel

  return {
      "cpus": os.cpu_count(),
      "cpu_model": cpu_model(),
      "machine": platform.machine(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "device_kind": jax.devices()[0].device_kind,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
      "host_allocator": HOST_ALLOCATOR,
      "cpu_inline_dispatch": CPU_INLINE,
      "load_avg_1_5_15m": load_average(),
  }


def device_memory_stats() -> dict[str, float] | None:
  """Peak / current device memory (MiB) of the first local device, where the backend tracks it.

  GPU and TPU backends implement `memory_stats()`; XLA:CPU returns None (use host RSS there).
  """
  import jax  # pylint: disable=import-outside-toplevel

  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  # some backends raise instead of None
    stats = None
  if not stats:
    return None
  mib = 1024.0 ** 2
  keys = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit", "largest_alloc_size")
  return {k.replace("bytes", "mib"): round(stats[k] / mib, 1) for k in keys if k in stats}


def process_peak_rss_mib() -> float:
  """Peak resident set size of this process over its whole life (Linux: KiB in ru_maxrss)."""
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


class RssSampler:
  """Samples this process's RSS in a thread while active: the peak over a timed region.

  `ru_maxrss` only grows, so it cannot tell two configurations of one process apart; sampling
  every few milliseconds can (it may miss a spike shorter than the interval).
  """

  def __init__(self, interval_s: float = 0.005):
    import psutil  # pylint: disable=import-outside-toplevel

    self._proc = psutil.Process()
    self._interval = interval_s
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self.start_mib = 0.0
    self.peak_mib = 0.0

  def _rss(self) -> float:
    return self._proc.memory_info().rss / 1024.0 ** 2

  def _run(self):
    while not self._stop.is_set():
      self.peak_mib = max(self.peak_mib, self._rss())
      self._stop.wait(self._interval)

  def __enter__(self) -> "RssSampler":
    self.start_mib = self.peak_mib = self._rss()
    self._stop.clear()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak_mib = max(self.peak_mib, self._rss())

  def result(self) -> dict[str, float]:
    return {"peak_rss_mib": round(self.peak_mib, 1),
            "rss_before_mib": round(self.start_mib, 1),
            "peak_increase_mib": round(self.peak_mib - self.start_mib, 1)}


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
  """Wall seconds of `fn()`, which must block until its work is done."""
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def summarise(times: list[float], batch: int) -> dict[str, Any]:
  """Median, minimum and every time (4 significant digits: accelerator calls take milliseconds)
  and samples/s of the median."""
  med = statistics.median(times)
  return {"median_s": sig(med), "min_s": sig(min(times)), "all_s": [sig(t) for t in times],
          "samples_per_s": round(batch / med, 2), "rounds": len(times)}


def sig(x: float) -> float:
  """`x` to 4 significant digits (times, rates and floors span microseconds to seconds)."""
  return float(f"{x:.4g}")


def paper_inputs(batch: int, samples: int = PAPER_SAMPLES, seed: int = 0,
                 channels: Mapping[str, int] = PAPER_CHANNELS) -> dict[str, np.ndarray]:
  """Random float32 windows `{modality: [batch, channels, samples]}` at a physiological scale."""
  rng = np.random.default_rng(seed)
  return {m: (rng.standard_normal((batch, c, samples)) * 20.0).astype(np.float32)
          for m, c in channels.items()}


def time_calls(fn: Callable[[], Any], batch: int, rounds: int, warmup: int = 0) -> dict[str, Any]:
  """`summarise` of `rounds` timed calls of `fn()` after `warmup` untimed ones, with the peak host
  RSS during the timed calls (`RssSampler`)."""
  for _ in range(warmup):
    fn()
  times = []
  with RssSampler() as rss:
    for _ in range(rounds):
      times.append(timed(fn))
  out = summarise(times, batch)
  out["host_rss"] = rss.result()
  return out


def xla_cost(compiled) -> dict[str, float]:
  """XLA's FLOPs and bytes accessed of a compiled program (`compiled.cost_analysis()`), in G."""
  analysis = compiled.cost_analysis()
  return {"gflop": sig(analysis.get("flops", 0.0) / 1e9),
          "gb_accessed": sig(analysis.get("bytes accessed", 0.0) / 1e9)}


def paper_config(dtype: str = "float32", chunk_rows: int | None = None, preset: str = "paper"):
  """The `paper` pretraining preset (or `preset`, e.g. "paper,quick": the tiny encoder) with the
  compute dtype (and loss chunking) overridden."""
  from sleepfm_jax.configs import pretrain as pretrain_configs  # pylint: disable=C0415

  config = pretrain_configs.get_config(preset)
  config.model.dtype = dtype
  if chunk_rows is not None:
    config.loss.chunk_rows = chunk_rows
  return config


# ----------------------------------------------------------------------------------------------
# The trainer's step and the exporter's forward on random paper-shaped data
# ----------------------------------------------------------------------------------------------


class JaxPaperStep:
  """The trainer's jitted update (`steps.make_steps`) on one fixed random batch.

  `lower_s` and `compile_s` time tracing+lowering and XLA compilation of that very step; every
  later call runs the compiled executable, which donates the state exactly as in training.
  """

  def __init__(self, batch: int, *, dtype: str = "float32", samples: int = PAPER_SAMPLES,
               channels: Mapping[str, int] = PAPER_CHANNELS, mesh=None, config=None,
               seed: int = 0):
    import jax  # pylint: disable=import-outside-toplevel

    from sleepfm_jax.training import factories, sharding, steps  # pylint: disable=C0415

    self.batch_size = batch
    self.config = config if config is not None else paper_config(dtype)
    self.mesh = mesh if mesh is not None else sharding.make_mesh()
    steps_per_epoch = 1000  # only shapes the StepLR schedule, which is traced either way
    schedule = factories.make_schedule(self.config, steps_per_epoch, 20 * steps_per_epoch)
    tx = factories.make_optimizer(self.config, schedule)
    t = time.perf_counter()
    self.graphdef, self.state, state_sharding = steps.init_state(
        self.config, dict(channels), self.mesh, tx)
    jax.block_until_ready(self.state)
    self.init_s = time.perf_counter() - t
    step, _ = steps.make_steps(self.graphdef, self.config, self.mesh, state_sharding,
                               sharding.data_sharding(self.mesh))
    host = paper_inputs(batch, samples, seed, channels)
    host.update({f"present_{m}": np.ones((batch,), bool) for m in channels})
    self.inputs = sharding.host_local_batch_to_global(host, self.mesh)
    t = time.perf_counter()
    lowered = step.lower(self.state, self.inputs)
    self.lower_s = time.perf_counter() - t
    t = time.perf_counter()
    self.compiled = lowered.compile()
    self.compile_s = time.perf_counter() - t
    self.metrics = None

  def __call__(self) -> None:
    import jax  # pylint: disable=import-outside-toplevel

    self.state, self.metrics = self.compiled(self.state, self.inputs)
    jax.block_until_ready((self.state, self.metrics))

  def memory_analysis(self) -> dict[str, float] | None:
    """XLA's static buffer sizes of the compiled step (MiB), where the backend reports them."""
    try:
      m = self.compiled.memory_analysis()
    except Exception:  # pylint: disable=broad-except
      return None
    if m is None:
      return None
    mib = 1024.0 ** 2
    fields = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
              "alias_size_in_bytes", "generated_code_size_in_bytes")
    return {f.replace("_size_in_bytes", "_mib"): round(getattr(m, f) / mib, 1)
            for f in fields if hasattr(m, f)}

  def model(self):
    """The current model (an `nnx` view of the trained state)."""
    from flax import nnx  # pylint: disable=import-outside-toplevel

    model, _ = nnx.merge(self.graphdef, self.state)
    return model


class JaxExport:
  """The exporter's per-batch path (`export.Embedder.embed_batch`): channel selection, upload,
  the jitted eval-mode forward and the download of the embeddings, on a fixed random batch."""

  def __init__(self, model, batch: int, *, samples: int = PAPER_SAMPLES, seed: int = 0,
               devices=None):
    import jax  # pylint: disable=import-outside-toplevel

    from sleepfm_jax import export  # pylint: disable=import-outside-toplevel
    from sleepfm_jax.training import sharding  # pylint: disable=import-outside-toplevel

    channels = {m: tuple(f"ch{i}" for i in range(n)) for m, n in model.in_channels.items()}
    mesh = sharding.make_mesh(devices=list(devices or jax.local_devices()))
    self.embedder = export.Embedder(model, {}, channels, batch, mesh, "benchmark")
    host = paper_inputs(batch, samples, seed, model.in_channels)
    for m, n in model.in_channels.items():
      host[f"mask_{m}"] = np.ones((batch, n), bool)
    host["valid"] = np.ones((batch,), bool)
    self.batch = host
    self.index = {m: np.arange(n) for m, n in model.in_channels.items()}
    self.first_call_s = timed(self)

  def __call__(self) -> dict[str, np.ndarray]:
    emb, _ = self.embedder.embed_batch(self.batch, self.index)  # returns host numpy arrays
    return emb

  def device_inputs(self):
    """The batch as `embed_batch` hands it to the jitted forward (channels selected, on the
    mesh)."""
    import jax  # pylint: disable=import-outside-toplevel

    from sleepfm_jax.training import sharding  # pylint: disable=import-outside-toplevel

    inputs = {m: self.batch[m][:, self.index[m]] for m in self.embedder.modalities}
    return jax.device_put(inputs, sharding.data_sharding(self.embedder.mesh))


def write_json(result: Mapping[str, Any], out: str | os.PathLike | None) -> str:
  text = json.dumps(result, indent=2)
  if out:
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
  return text
