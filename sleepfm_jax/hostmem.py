"""Host allocator settings: keep freed memory for reuse instead of returning it to the kernel.

Why. XLA:CPU allocates each executable's temporary buffer when the executable runs and frees it
when it returns; the paper-shaped pretraining step asks for 6.2 GiB per call. glibc's malloc
serves every request above 32 MiB with a fresh `mmap` and gives it back with `munmap` on free, so
every step maps 6.2 GiB of new pages and the kernel zero-fills all of them on first touch: 1.6
million page faults per step, measured at 6.3 of the step's 14 CPU-seconds (docs/performance.md).

What `retain_freed_memory` changes, through glibc's `mallopt` (all documented in mallopt(3)):
  * `M_ARENA_MAX = 1`: every thread allocates from the main arena. A thread arena cannot grow a
    single chunk beyond 64 MiB and falls back to `mmap` whatever `M_MMAP_MAX` says; XLA's worker
    threads would otherwise still map and unmap their buffers.
  * `M_MMAP_MAX = 0`: large requests come from the heap, not from private mappings.
  * `M_TRIM_THRESHOLD = -1`: freed memory at the top of the heap is never given back, so the next
    step's buffer reuses pages that are already mapped.
The cost: the process's resident memory stays at its high-water mark (what a training process
needs on every step anyway) instead of falling between steps.

Call it first thing in a program's `main()`, before JAX starts its CPU client (the first
computation or `jax.devices()`): thread arenas created before the call keep their own behaviour.
The CLIs in `experiments/` and the benchmarks call it; set `SLEEPFM_JAX_HOST_ALLOCATOR=system`
to leave malloc alone. It does nothing off glibc (macOS, musl) and never imports jax.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from typing import Any

ENV_VAR = "SLEEPFM_JAX_HOST_ALLOCATOR"  # "system": leave malloc's defaults alone

# glibc <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
SETTINGS = (("M_ARENA_MAX", M_ARENA_MAX, 1), ("M_MMAP_MAX", M_MMAP_MAX, 0),
            ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, -1))

_applied: dict[str, Any] | None = None


def retain_freed_memory() -> dict[str, Any]:
  """Applies the allocator settings above once per process; returns what was done.

  Returns a JSON-ready dict: `applied` (bool), `reason` (why not, when not) and `settings`
  (parameter -> value, when applied). Later calls return the first call's result.
  """
  global _applied
  if _applied is not None:
    return _applied
  if os.environ.get(ENV_VAR, "").strip().lower() == "system":
    _applied = {"applied": False, "reason": f"{ENV_VAR}=system"}
  elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    _applied = {"applied": False, "reason": f"not glibc ({platform.system()}, "
                                            f"{platform.libc_ver()[0] or 'unknown libc'})"}
  else:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    failed = [name for name, param, value in SETTINGS if libc.mallopt(param, value) != 1]
    if failed:
      _applied = {"applied": False, "reason": f"mallopt refused {failed}"}
    else:
      _applied = {"applied": True, "settings": {name: value for name, _, value in SETTINGS}}
  return _applied
