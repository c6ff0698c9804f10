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

Retained memory needs two more things. (1) `run_cpu_computations_inline`: XLA:CPU runs a
computation on its own threads and frees the temporaries there just after the outputs are ready,
so the next step, dispatched as soon as the last one's outputs are ready, often allocates its
temporaries before the last step's are freed; with the settings above the heap then grows by
another block each time and never shrinks (a loop waiting on every step of a function with
128 MiB of temporaries grew by 0.6-1.4 GiB in 30 steps). Run inline
(`jax_cpu_enable_async_dispatch=False`), a computation returns only once it has freed its
temporaries: the same loop grew by at most one block. It costs nothing where the program waits on
each step anyway, as the trainer does on CPU, and applies to single-device CPU computations only.
(2) `StrandedMemory`, called between steps by the training loop on CPU: a freed block that does
not end the heap can be split by later smaller requests, and the next step's temporaries then
come from the heap's top, a second block for good (the paper-shaped step at batch 32: 9.5 instead
of 4.9 GiB in half the runs); it gives such stranded memory back and keeps the top.
docs/performance.md, "Memory", has the measurements.

Call `retain_freed_memory`, then `run_cpu_computations_inline`, first thing in a program's
`main()`, before JAX starts its CPU client (the first computation or `jax.devices()`): threads
that already allocated have their own arenas and keep mapping large blocks afresh, and the
dispatch mode is read when the client starts. The CLIs in `experiments/` and the benchmarks call
both; set `SLEEPFM_JAX_HOST_ALLOCATOR=system` to leave malloc alone. Where other threads got there first
(a Jupyter kernel), the result says so (`arenas_before` > 1) and the environment variable
`GLIBC_TUNABLES` (value: `TUNABLES`), set before the process starts, does the same from the
start. It does nothing off glibc (macOS, musl); only `run_cpu_computations_inline` imports
jax.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import pathlib
import platform
import tempfile
from typing import Any

ENV_VAR = "SLEEPFM_JAX_HOST_ALLOCATOR"  # "system": leave malloc's defaults alone
DISPATCH_ENV_VAR = "SLEEPFM_JAX_CPU_DISPATCH"  # "async": leave JAX's CPU dispatch alone

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


def _on_glibc() -> bool:
  return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


class _MallInfo2(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in (
      "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
      "fordblks", "keepcost")]


@functools.cache
def _libc():
  """glibc, with the prototypes of the functions used here declared once."""
  libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  libc.malloc_trim.argtypes = [ctypes.c_size_t]
  if hasattr(libc, "mallinfo2"):  # glibc >= 2.33
    libc.mallinfo2.restype = _MallInfo2
  return libc


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
  elif not _on_glibc():
    _applied = {"applied": False, "reason": f"not glibc ({platform.system()}, "
                                            f"{platform.libc_ver()[0] or 'unknown libc'})"}
  else:
    libc = _libc()
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


def run_cpu_computations_inline() -> bool:
  """Makes XLA:CPU run single-device computations inline when `retain_freed_memory` applied its
  settings (module docstring); returns whether it did. Call it after `retain_freed_memory` and
  before JAX starts its CPU client. `SLEEPFM_JAX_CPU_DISPATCH=async` leaves JAX's default."""
  if not (_applied or {}).get("applied"):
    return False
  if os.environ.get(DISPATCH_ENV_VAR, "").strip().lower() == "async":
    return False
  import jax  # pylint: disable=import-outside-toplevel

  jax.config.update("jax_cpu_enable_async_dispatch", False)
  return True


def heap_stats() -> dict[str, float] | None:
  """glibc's main heap now (`mallinfo2`, GiB): `heap` (obtained from the kernel), `in_use`, `free`
  (held for reuse) and `top` (the free part at the heap's end, where a request larger than any
  other free chunk is served from). None off glibc. A freed XLA temporary that is not at the top
  may be split by later smaller requests; the next step's temporary then no longer fits there and
  the heap grows by another block (docs/performance.md, "Memory")."""
  if not _on_glibc():
    return None
  libc = _libc()
  if not hasattr(libc, "mallinfo2"):  # glibc < 2.33
    return None
  info = libc.mallinfo2()
  gib = 1024.0 ** 3
  return {"heap": round(info.arena / gib, 3), "in_use": round(info.uordblks / gib, 3),
          "free": round(info.fordblks / gib, 3), "top": round(info.keepcost / gib, 3)}


class StrandedMemory:
  """Gives back to the kernel free heap memory stranded below the heap's top, keeping the top.

  With the settings above, a step's freed temporaries that do not end at the heap's top (another
  allocation landed above them while they were in use) can be split by later smaller requests;
  the next step's temporaries then no longer fit there and come from the top, so the heap holds
  two blocks for good (measured on the paper-shaped step: docs/performance.md, "Memory"). Called
  between steps, this checks the heap (`heap_stats`, about a millisecond) and, when the free
  memory below the top has grown by `threshold_gib` since the last release, calls glibc's
  `malloc_trim` with the top as its pad: the stranded pages are unmapped (they fault in again
  only if reused) while the top, where the temporaries are now served from, stays resident.
  Does nothing when `retain_freed_memory` did not apply its settings.
  """

  def __init__(self, threshold_gib: float = 0.5):
    self.threshold_gib = threshold_gib
    self.level_gib = 0.0  # stranded free memory after the last release
    self.released_gib = 0.0  # total given back
    self._libc = None
    if (_applied or {}).get("applied"):
      self._libc = _libc()

  def __call__(self) -> float:
    """Releases stranded memory if it grew enough; returns the GiB below the top then released
    (0.0 when nothing was done)."""
    if self._libc is None:
      return 0.0
    stats = heap_stats()
    if stats is None:
      return 0.0
    stranded = stats["free"] - stats["top"]
    if stranded < self.level_gib + self.threshold_gib:
      self.level_gib = min(self.level_gib, stranded)
      return 0.0
    self._libc.malloc_trim(int(stats["top"] * 1024 ** 3))
    self.level_gib = stranded
    self.released_gib += stranded
    return stranded
