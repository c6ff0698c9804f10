"""Launches a small `jax.distributed` job of CPU processes on loopback, for tests.

Each process runs `python SCRIPT ARGS --coordinator=127.0.0.1:PORT --num_processes=N
--process_id=I` with `local_devices` simulated CPU devices. With `launcher="slurm"` the processes
instead get `ARGS --distributed` and the environment variables Slurm's `srun` sets (job id, node
list, task count and rank), so that `jax.distributed.initialize()` without arguments has to detect
the job itself, the code path TPU pod slices use (TPU detection itself needs TPU VMs; Slurm's can
be imitated on one machine). The script must call
`jax.distributed.initialize` inside `main()` under `if __name__ == "__main__"`. Output goes to one
log file per process (no pipes, so a chatty process cannot block); on a timeout or a non-zero exit
every process is killed and the assertion message carries each process's log tail.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
  """A TCP port that was free on 127.0.0.1 a moment ago."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(local_devices: int) -> dict[str, str]:
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={local_devices}"])
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
  return env


def _tail(path: pathlib.Path, chars: int = 4000) -> str:
  text = path.read_text(errors="replace") if path.exists() else "<no output>"
  return text[-chars:]


def run_processes(
    script: str | os.PathLike,
    args: Sequence[str],
    *,
    log_dir: str | os.PathLike,
    num_processes: int = 2,
    local_devices: int = 2,
    timeout: float = 120.0,
    coordinator_flag: str = "--coordinator",
    launcher: str = "flags",
) -> list[str]:
  """Runs `num_processes` copies of `script` as one jax.distributed job; returns their logs.

  `coordinator_flag` names the script's flag for the coordinator address. `launcher` is "flags"
  (explicit coordinator/process flags) or "slurm" (`--distributed` and Slurm's variables).

  Raises:
    AssertionError: if a process fails or the job exceeds `timeout` seconds (all are killed).
  """
  log_dir = pathlib.Path(log_dir)
  log_dir.mkdir(parents=True, exist_ok=True)
  if launcher not in ("flags", "slurm"):
    raise ValueError(f"launcher must be 'flags' or 'slurm', got {launcher!r}")
  port = free_port()
  coordinator = f"127.0.0.1:{port}"
  procs, logs = [], []
  for i in range(num_processes):
    log = log_dir / f"process_{i}.log"
    logs.append(log)
    env = _env(local_devices)
    cmd = [sys.executable, os.path.abspath(script), *args]
    if launcher == "flags":
      cmd += [f"{coordinator_flag}={coordinator}", f"--num_processes={num_processes}",
              f"--process_id={i}"]
    else:  # what `srun --ntasks=N` would set on a one-node allocation; the port is ours
      env.update(SLURM_JOB_ID="1", SLURM_STEP_NODELIST="127.0.0.1",
                 SLURM_NTASKS=str(num_processes), SLURM_PROCID=str(i), SLURM_LOCALID=str(i),
                 JAX_COORDINATOR_PORT=str(port))
      cmd.append("--distributed")
    with open(log, "w") as f:
      procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO))
  deadline = time.monotonic() + timeout
  failure = None
  try:
    while any(p.poll() is None for p in procs):
      if time.monotonic() > deadline:
        failure = f"timed out after {timeout:.0f} s"
        break
      if any(p.poll() not in (None, 0) for p in procs):
        failure = "a process failed"
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  codes = [p.returncode for p in procs]
  if failure or any(codes):
    report = "\n".join(f"--- process {i} (exit {c}) ---\n{_tail(log)}"
                       for i, (c, log) in enumerate(zip(codes, logs)))
    raise AssertionError(f"distributed job {script} {failure or 'failed'}: exits {codes}\n{report}")
  return [log.read_text(errors="replace") for log in logs]
