r"""Benchmarks the data path: preprocessing throughput and memory, and Grain loader throughput.

  python benchmarks/preprocess.py --out=benchmarks/results/preprocess.json

Measures, each preprocessing run in a fresh child process (so that peak RSS is that run's own):
  * Sleep-EDF SC4001 (real, 22.1 h, 5 channels at 100/1 Hz, montage "sleepedf");
  * an 8-hour SYNTHETIC night written here as EDF: 12 channels at mixed rates (256/512/1 Hz), random
    but realistic-looking shapes. It only exercises the reader and the resampler: it is not
    physiological data.
Reports hours of PSG preprocessed per CPU core-minute (CPU time of the preprocessing call: user +
system) and peak RSS. Then, on the store written from the synthetic night: training-loader windows/s
with 0 and 2 Grain worker processes, the same with grain's per-element batching (for comparison),
and ordered evaluation batches/s.
"""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_OUT = flags.DEFINE_string("out", None, "Write the JSON results here (also printed).")
_HOURS = flags.DEFINE_float("hours", 8.0, "Length of the synthetic night in hours.")
_BATCH = flags.DEFINE_integer("batch", 32, "Loader batch size.")
_STEPS = flags.DEFINE_integer("steps", 60, "Loader batches timed per setting.")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "Grain worker counts to time.")
_SC4001 = flags.DEFINE_string(
    "sc4001", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                           "data", "psg-real", "sleep-edfx", "sleep-cassette"),
    "Folder with SC4001E0-PSG.edf and its hypnogram (skipped if absent).")
_CHILD = flags.DEFINE_string("child", None, "Internal: run one preprocessing job (JSON spec).")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The synthetic night: canonical-style labels, sampling rates (Hz) and a rough shape.
SYNTHETIC_CHANNELS = (
    ("EEG C3-M2", 256, "eeg"), ("EEG C4-M1", 256, "eeg"), ("EEG O1-M2", 256, "eeg"),
    ("EEG O2-M1", 256, "eeg"), ("EOG E1-M2", 512, "eog"), ("EOG E2-M1", 512, "eog"),
    ("EMG Chin", 512, "emg"), ("ECG", 512, "ecg"), ("Airflow", 256, "resp"),
    ("Thorax", 256, "resp"), ("Abdomen", 256, "resp"), ("SpO2", 1, "spo2"),
)


def write_synthetic_night(path: str, hours: float, seed: int = 0) -> None:
  """Writes an EDF with SYNTHETIC signals (not physiological; for throughput only) + CSV stages."""
  import edfio  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  seconds = int(hours * 3600) // 30 * 30
  signals = []
  for label, fs, kind in SYNTHETIC_CHANNELS:
    n = seconds * fs
    t = np.arange(n, dtype=np.float32) / fs
    if kind in ("eeg", "eog", "emg"):
      x = rng.standard_normal(n).astype(np.float32)
      x = np.cumsum(x, dtype=np.float32)
      x -= np.convolve(x, np.ones(fs, np.float32) / fs, mode="same")  # drift removal (~1 Hz HP)
      x *= 4 if kind == "eeg" else 8
      x += 20 * np.sin(2 * np.pi * 10 * t) * (np.sin(2 * np.pi * t / 600) > 0.5)  # alpha bursts
      unit, rng_phys = "uV", (-500.0, 500.0)
    elif kind == "ecg":
      phase = (t * 1.1) % 1.0
      x = 1.2 * np.exp(-((phase - 0.3) / 0.01) ** 2) + 0.05 * rng.standard_normal(n)
      unit, rng_phys = "mV", (-3.0, 3.0)
    elif kind == "resp":
      x = np.sin(2 * np.pi * 0.25 * t) * (1 + 0.3 * np.sin(2 * np.pi * t / 300))
      x += 0.05 * rng.standard_normal(n)
      unit, rng_phys = "", (-3.0, 3.0)
    else:  # SpO2, integer percent
      x = np.clip(np.round(96 + np.cumsum(rng.standard_normal(n)) * 0.05), 85, 100)
      unit, rng_phys = "%", (0.0, 100.0)
    lo, hi = rng_phys
    digital = np.round((np.clip(x, lo, hi) - lo) / (hi - lo) * 65535 - 32768).astype(np.int16)
    del x, t
    signals.append(edfio.EdfSignal.from_digital(
        digital, fs, label=label, physical_dimension=unit, physical_range=rng_phys,
        digital_range=(-32768, 32767)))
  edfio.Edf(signals, data_record_duration=1.0).write(path)
  stages = ("W", "1", "2", "3", "2", "R")
  with open(os.path.splitext(path)[0] + ".csv", "w", encoding="utf-8") as f:
    f.write("onset,duration,label\n")
    for k in range(seconds // 30):
      f.write(f"{30 * k},30,Sleep stage {stages[(k // 20) % len(stages)]}\n")


def _child(spec_json: str) -> None:
  """Runs one preprocessing job and prints its CPU time, wall time and peak RSS as JSON."""
  from sleepfm_jax.data import discovery  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data import preprocess as pp  # pylint: disable=import-outside-toplevel

  job = json.loads(spec_json)
  specs, _ = discovery.discover(job["input"])
  c0, w0 = time.process_time(), time.perf_counter()
  report = pp.preprocess(specs, job["output"], job["config"], overwrite=True, progress=False)
  cpu, wall = time.process_time() - c0, time.perf_counter() - w0
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
  print(json.dumps({"cpu_s": cpu, "wall_s": wall, "peak_rss_mb": rss, "hours": report["hours"],
                    "windows": report["windows"], "ok": report["files"]["ok"],
                    "skipped": [s["reason"] for s in report["skipped"]]}))


def _run_child(job: dict) -> dict:
  env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
  res = subprocess.run([sys.executable, os.path.abspath(__file__), f"--child={json.dumps(job)}"],
                       capture_output=True, text=True, env=env, check=False)
  if res.returncode:
    raise RuntimeError(res.stderr[-3000:])
  out = json.loads(res.stdout.strip().splitlines()[-1])
  out["hours_per_core_minute"] = round(out["hours"] / (out["cpu_s"] / 60.0), 1)
  for k in ("cpu_s", "wall_s", "peak_rss_mb"):
    out[k] = round(out[k], 2)
  return out


def _loader(store: str, batch: int, steps: int, workers: list[int]) -> dict:
  import grain  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.data import pipeline  # pylint: disable=import-outside-toplevel

  src = pipeline.WindowSource(store)
  results = {"windows_in_store": len(src), "batch": batch, "steps": steps,
             "bytes_per_batch_float32": None}

  def time_iter(it, label):
    t0 = time.perf_counter()
    first = next(it)
    startup = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(steps):
      next(it)
    dt = time.perf_counter() - t1
    if hasattr(it, "close"):
      it.close()
    results[label] = {"windows_per_s": round(steps * batch / dt, 1),
                      "batches_per_s": round(steps / dt, 2),
                      "first_batch_s": round(startup, 2)}
    return first

  for w in workers:
    ds = pipeline.train_dataset(src, global_batch=batch, seed=0)
    first = time_iter(pipeline.train_iterator(ds, worker_count=w), f"train_workers_{w}")
    results["bytes_per_batch_float32"] = int(sum(v.nbytes for v in first.values()))
  plain = (grain.MapDataset.source(src).seed(0).shuffle().repeat()
           .batch(batch, drop_remainder=True)
           .to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)))
  time_iter(iter(plain), "train_per_element_grain_batch_workers_0")
  t0 = time.perf_counter()
  n = 0
  for b in pipeline.eval_batches(src, batch_size=batch):
    n += int(b["valid"].sum())
  dt = time.perf_counter() - t0
  results["eval_ordered"] = {"windows_per_s": round(n / dt, 1), "windows": n}
  return results


def main(argv):
  del argv
  if _CHILD.value:
    _child(_CHILD.value)
    return
  results = {
      "benchmark": "preprocess",
      "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                  "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
      "target_hours_per_core_minute": 100,
  }
  with tempfile.TemporaryDirectory(prefix="sleepfm_bench_") as tmp:
    sc = os.path.abspath(_SC4001.value)
    if os.path.exists(os.path.join(sc, "SC4001E0-PSG.edf")):
      results["sc4001"] = {"data": "real: Sleep-EDF SC4001E0 (22.08 h; 3 ch at 100 Hz, 2 at 1 Hz)",
                           "montage": "sleepedf", **_run_child(
                               {"input": sc,
                                "output": os.path.join(tmp, "sc"),
                                "config": {"montage": "sleepedf"}})}
      os.remove(os.path.join(tmp, "sc", "report.json"))
    night = os.path.join(tmp, "night", "synth-001.edf")
    os.makedirs(os.path.dirname(night))
    t0 = time.perf_counter()
    write_synthetic_night(night, _HOURS.value)
    gen_s = time.perf_counter() - t0
    store = os.path.join(tmp, "synth_store")
    results["synthetic_night"] = {
        "data": (f"SYNTHETIC: {_HOURS.value:g}-h EDF, 12 channels at 256/512/1 Hz written by this "
                 "benchmark (random shapes; exercises reader + resampler only)"),
        "edf_mb": round(os.path.getsize(night) / 2**20, 1), "generate_s": round(gen_s, 1),
        "montage": "standard", **_run_child(
            {"input": os.path.dirname(night), "output": store,
             "config": {"montage": "standard"}})}
    os.remove(night)
    results["loader"] = _loader(store, _BATCH.value, _STEPS.value, [int(w) for w in _WORKERS.value])
  text = json.dumps(results, indent=1)
  print(text)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value, "w", encoding="utf-8") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
