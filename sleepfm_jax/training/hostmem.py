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
computation or `jax.devices()`): threads that already allocated have their own arenas and keep
mapping large blocks afresh. The CLIs in `experiments/` and the benchmarks call it; set
`SLEEPFM_JAX_HOST_ALLOCATOR=system` to leave malloc alone. Where other threads got there first
(a Jupyter kernel), the result says so (`arenas_before` > 1) and the environment variable
`GLIBC_TUNABLES` (value: `TUNABLES`), set before the process starts, does the same from the
start. It does nothing off glibc (macOS, musl) and never imports jax.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pathlib
import platform
import tempfile
from typing import Any

ENV_VAR = "SLEEPFM_JAX_HOST_ALLOCATOR"  # "system": leave malloc's defaults alone

# glibc <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
SETTINGS = (("M_ARENA_MAX", M_ARENA_MAX, 1), ("M_MMAP_MAX", M_MMAP_MAX, 0),
            ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, -1))

# The same settings as glibc tunables, for a process started with them in its environment.
TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
            "glibc.malloc.trim_threshold=18446744073709551615")

_applied: dict[str, Any] | None = None


def _arena_count(libc) -> int:
  """Number of malloc arenas so far (from glibc's `malloc_info` XML), or -1 if unreadable."""
  libc.fopen.restype = ctypes.c_void_p
  libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
  libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
  libc.fclose.argtypes = [ctypes.c_void_p]
  with tempfile.NamedTemporaryFile(suffix=".xml") as f:
    stream = libc.fopen(f.name.encode(), b"w")
    if not stream:
      return -1
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    return pathlib.Path(f.name).read_text().count("<heap nr=")


def retain_freed_memory() -> dict[str, Any]:
  """Applies the allocator settings above once per process; returns what was done.

  Returns a JSON-ready dict: `applied` (bool), `reason` (why not, when not), `settings`
  (parameter -> value, when applied), `arenas_before` (malloc arenas that existed at the call:
  more than 1 means threads that allocated earlier keep their own) and then a `warning`.
  Later calls return the first call's result.
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
    arenas = _arena_count(libc)
    failed = [name for name, param, value in SETTINGS if libc.mallopt(param, value) != 1]
    if failed:
      _applied = {"applied": False, "reason": f"mallopt refused {failed}"}
    else:
      _applied = {"applied": True, "settings": {name: value for name, _, value in SETTINGS},
                  "arenas_before": arenas}
      if arenas > 1:
        _applied["warning"] = (
            f"{arenas - 1} thread arena(s) existed before the call: threads using them still map "
            f"large blocks afresh; start the process with GLIBC_TUNABLES={TUNABLES} instead")
  return _applied
