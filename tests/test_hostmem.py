"""Host allocator settings (sleepfm_jax/hostmem.py): XLA's freed buffers are reused, not remapped.

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

from sleepfm_jax import hostmem

CHILD = r"""
import json, resource
from sleepfm_jax import hostmem
info = hostmem.retain_freed_memory()
import jax, jax.numpy as jnp

@jax.jit
def f(x, w):
  y = jnp.tanh(x @ w)  # [2048, 8192] float32: a 64 MiB temporary
  return jnp.sum(y.T @ y[:, :256])

x = jnp.ones((2048, 1024), jnp.float32)
w = jnp.ones((1024, 8192), jnp.float32) * 1e-3
faults = []
for _ in range(6):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x, w).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"allocator": info, "faults": faults}))
"""
TEMP_PAGES = 64 * 1024 * 1024 // 4096


def _run(allocator_env: str | None) -> dict:
  env = dict(os.environ)
  env.pop(hostmem.ENV_VAR, None)
  if allocator_env is not None:
    env[hostmem.ENV_VAR] = allocator_env
  out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                       timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the settings are glibc's")
def test_freed_xla_buffers_are_reused_instead_of_faulted_in_again():
  system = _run("system")
  assert system["allocator"] == {"applied": False, "reason": f"{hostmem.ENV_VAR}=system"}
  # glibc's default: every call maps its temporary afresh and faults every page in.
  assert min(system["faults"]) >= TEMP_PAGES, system

  tuned = _run(None)
  assert tuned["allocator"] == {"applied": True, "settings": {
      "M_ARENA_MAX": 1, "M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": -1}}
  # Once the heap has grown to the working set (the first calls), calls fault in no new pages.
  assert max(tuned["faults"][-3:]) < TEMP_PAGES // 100, tuned

