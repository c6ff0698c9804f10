"""Host allocator settings (training/hostmem.py): XLA's freed buffers are reused, not remapped.

Each case runs in a fresh process, because the settings must be made before JAX starts its CPU
client. The jitted function has a 64 MiB temporary buffer (16384 pages of 4 KiB); a call that has
to map it afresh takes at least that many minor page faults.
"""

import json
import os
import platform
import subprocess
import sys

import pytest

from sleepfm_jax.training import hostmem

CHILD = r"""
import json, resource, sys, threading, time
if sys.argv[1] == "thread_first":  # like a Jupyter kernel: a thread allocated before the call
  t = threading.Thread(target=lambda: [bytearray(1000) for _ in range(100)])
  t.start()
  t.join()
from sleepfm_jax.training import hostmem
info = hostmem.retain_freed_memory()
import jax, jax.numpy as jnp

@jax.jit
def f(x, w):
  y = jnp.tanh(x @ w)  # [2048, 8192] float32: a 64 MiB temporary
  return jnp.sum(y.T @ y[:, :256])

x = jnp.ones((2048, 1024), jnp.float32)
w = jnp.ones((1024, 8192), jnp.float32) * 1e-3
faults = []
for _ in range(8):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x, w).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  # XLA frees a call's temporary on its own thread just after the result is ready; without this
  # pause (the rest of a training step) the next call sometimes allocates before that free.
  time.sleep(0.2)
print(json.dumps({"allocator": info, "faults": faults}))
"""
TEMP_PAGES = 64 * 1024 * 1024 // 4096


def _run(allocator_env: str | None, order: str = "call_first", tunables: bool = False) -> dict:
  env = dict(os.environ)
  env.pop(hostmem.ENV_VAR, None)
  env.pop("GLIBC_TUNABLES", None)
  if allocator_env is not None:
    env[hostmem.ENV_VAR] = allocator_env
  if tunables:
    env["GLIBC_TUNABLES"] = hostmem.TUNABLES
  out = subprocess.run([sys.executable, "-c", CHILD, order], env=env, capture_output=True,
                       text=True, timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _fault_free(faults: list[int]) -> int:
  """How many calls faulted in under 1 % of the temporary's pages."""
  return sum(f < TEMP_PAGES // 100 for f in faults)


LINUX_GLIBC = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the settings are glibc's")


@LINUX_GLIBC
def test_freed_xla_buffers_are_reused_instead_of_faulted_in_again():
  system = _run("system")
  assert system["allocator"] == {"applied": False, "reason": f"{hostmem.ENV_VAR}=system"}
  # glibc's default: every call maps its temporary afresh and faults every page in.
  assert min(system["faults"]) >= TEMP_PAGES, system

  tuned = _run(None)
  assert tuned["allocator"] == {"applied": True, "arenas_before": 1, "settings": {
      "M_ARENA_MAX": 1, "M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": -1}}
  # Once the heap has grown to the working set (the first calls), calls fault in no new pages.
  # (At most one of the last four may still map its temporary: the free on XLA's thread races
  # the next call, rarely, even after the pause.)
  assert _fault_free(tuned["faults"][-4:]) >= 3, tuned


@LINUX_GLIBC
def test_too_late_is_reported_and_the_environment_route_works():
  late = _run(None, order="thread_first")
  assert late["allocator"]["applied"] and late["allocator"]["arenas_before"] == 2, late
  assert hostmem.TUNABLES in late["allocator"]["warning"]

  env_route = _run("system", order="thread_first", tunables=True)
  assert _fault_free(env_route["faults"][-4:]) >= 3, env_route

