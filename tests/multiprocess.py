"""Launches a small `jax.distributed` job of CPU processes on loopback, for tests.

Each process runs `python SCRIPT ARGS --coordinator=127.0.0.1:PORT --num_processes=N
--process_id=I` with `local_devices` simulated CPU devices. The script must call
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
) -> list[str]:
  """Runs `num_processes` copies of `script` as one jax.distributed job; returns their logs.

  Raises:
    AssertionError: if a process fails or the job exceeds `timeout` seconds (all are killed).
  """
  log_dir = pathlib.Path(log_dir)
  log_dir.mkdir(parents=True, exist_ok=True)
  coordinator = f"127.0.0.1:{free_port()}"
  env = _env(local_devices)
  procs, logs = [], []
  for i in range(num_processes):
    log = log_dir / f"process_{i}.log"
    logs.append(log)
    cmd = [sys.executable, os.path.abspath(script), *args, f"--coordinator={coordinator}",
           f"--num_processes={num_processes}", f"--process_id={i}"]
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
