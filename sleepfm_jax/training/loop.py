"""The training loop every trainer runs: contrastive pretraining and the supervised CNN baseline.

`Loop.run` steps a jitted update over an iterator of global batches and does the bookkeeping the
trainers share:

* gradient accumulation: `grad_accum` micro-batches per logged step;
* `jax.transfer_guard("disallow")` around each update (the batch upload, done by the iterator
  before the guard, is the step's only intended host-to-device transfer);
* the first step timed on its own (it compiles), so throughput figures leave compilation out;
* one `device_get` per log interval, not per step: metrics are averaged over the interval and
  written with the learning rate and samples/s to a `MetricsLog`;
* at most `max_in_flight` dispatched, unfinished steps (`in_flight_limit`): on CPU each step
  finishes before the next is dispatched, because XLA:CPU gives every queued step its own block
  of temporaries in host memory (the paper-shaped step with `remat="block:2"` at batch 32
  peaked at 13.6–21.6 GiB without the limit, 9.5 GiB with it, and was no faster without it;
  `benchmarks/loop_memory.py`, docs/performance.md "Memory");
* on CPU, between steps, host heap memory stranded below the heap's top is given back
  (`hostmem.StrandedMemory`): without it, one step in two or three left its temporaries where
  the next step's could not reuse them, and the heap held a second 4 GiB block for good; the
  first step is compiled ahead of its run so that what compilation left stranded is given back
  too;
* a tqdm bar;
* an `after_step(step, state)` hook for what differs between trainers (validation, checkpoints,
  early stopping); it returns True to stop (the metrics of the interval so far are then logged),
  and calls `restart_clock` when it spent time that is not training (evaluation), so that time
  stays out of the throughput.

Dropout reseeding from (seed, update count) is part of each trainer's jitted update, where the
update count lives.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from sleepfm_jax.training import hostmem
from sleepfm_jax.training.metrics_log import MetricsLog

State = Any
Update = Callable[..., tuple[State, dict]]


def in_flight_limit(setting: int) -> int:
  """Dispatched, unfinished steps allowed: `setting` if >= 0 (0 = no limit), and for -1 (auto) 1
  on CPU, where queued steps hold host memory and gain nothing, no limit on accelerators."""
  if setting >= 0:
    return setting
  return 1 if jax.default_backend() == "cpu" else 0


class Loop:
  """Steps `start_step + 1 .. total_steps` of one run; see the module docstring.

  Args:
    total_steps: the last step (updates, each of `grad_accum` micro-batches).
    batch_size: windows per step (all micro-batches, all processes), for samples/s.
    log_every: average and log the metrics every this many steps (and at the last step).
    learning_rate: step -> the learning rate of that step's update (logged as "lr").
    start_step: the step already done (a resumed run); the loop starts after it.
    grad_accum: micro-batches per step.
    transfer_guard: fail on implicit host<->device transfers inside an update.
    log: where the "train" rows go (None: nowhere).
    max_in_flight: at most this many dispatched, unfinished steps (0: no limit; -1: auto,
      `in_flight_limit`).
    progress: show a tqdm bar; desc and leave are passed to it.
    release_stranded: give back stranded host heap memory after each waited-for step (None:
      auto, where steps are waited for on CPU; see `hostmem.StrandedMemory`).

  After `run`: `first_step_s` (None if no step ran), `train` (the last logged averages),
  `final_step` and `wall_s` (seconds `run` took).
  """

  def __init__(self, *, total_steps: int, batch_size: int, log_every: int,
               learning_rate: Callable[[int], float], start_step: int = 0, grad_accum: int = 1,
               transfer_guard: bool = True, log: MetricsLog | None = None,
               progress: bool = True, desc: str = "train", leave: bool = True,
               max_in_flight: int = -1, release_stranded: bool | None = None):
    self.total_steps = int(total_steps)
    self.start_step = int(start_step)
    self.batch_size = batch_size
    self.log_every = log_every
    self.learning_rate = learning_rate
    self.grad_accum = grad_accum
    self.transfer_guard = transfer_guard
    self.log = log
    self._bar_args = dict(enabled=progress, desc=desc, leave=leave)
    self.max_in_flight = in_flight_limit(max_in_flight)
    if release_stranded is None:
      release_stranded = self.max_in_flight == 1 and jax.default_backend() == "cpu"
    self.release_stranded = hostmem.StrandedMemory() if release_stranded else None
    self.first_step_s: float | None = None
    self.train: dict[str, float] = {}
    self.final_step = self.start_step
    self.wall_s = 0.0
    self._t_last = time.perf_counter()
    self._seen = 0

  def restart_clock(self) -> None:
    """Starts a new throughput interval now (call after work that is not training)."""
    self._t_last, self._seen = time.perf_counter(), 0

  def _guard(self):  # a fresh context each time: context managers are single-use
    return jax.transfer_guard("disallow") if self.transfer_guard else contextlib.nullcontext()

  def run(self, state: State, update: Update, batches: Iterator[dict], *,
          step_args: Callable[[int], tuple] | None = None,
          after_step: Callable[[int, State], bool | None] | None = None) -> State:
    """Runs the steps; returns the final state.

    Args:
      state: the train state; `update` donates it.
      update: `update(state, batch, *step_args(step)) -> (state, metrics)`, jitted.
      batches: yields one global micro-batch (on the devices) per call of `update`.
      step_args: step -> extra device arguments of that step's updates (e.g. its learning rate),
        made once per step, outside the transfer guard.
      after_step: `after_step(step, state)` after each step; True stops the loop.
    """
    bar = _progress(self.total_steps, self.start_step, **self._bar_args)
    t_start = time.perf_counter()
    self.restart_clock()
    pending: list[dict] = []
    in_flight: collections.deque = collections.deque()
    step = self.start_step
    for step in range(self.start_step + 1, self.total_steps + 1):
      args = step_args(step) if step_args is not None else ()
      for micro in range(self.grad_accum):
        batch = next(batches)
        if step == self.start_step + 1 and micro == 0:
          self._compile_then_release(update, state, batch, args)
        with self._guard():
          state, metrics = update(state, batch, *args)
      pending.append(metrics)
      if self.max_in_flight:
        in_flight.append(metrics)
        while len(in_flight) >= self.max_in_flight:
          jax.block_until_ready(in_flight.popleft())
        if self.release_stranded is not None:
          self.release_stranded()
      self._seen += self.batch_size
      bar.update(1)
      if step == self.start_step + 1:  # keep compilation out of the throughput figures
        jax.block_until_ready(metrics)
        self.first_step_s = time.perf_counter() - self._t_last
        self.restart_clock()
      if step % self.log_every == 0 or step == self.total_steps:
        self._write(step, pending, bar)
        pending = []
      if after_step is not None and after_step(step, state):
        if pending:  # the stopped interval's metrics are logged, not lost
          self._write(step, pending, bar)
        break
    bar.close()
    self.final_step = step
    self.wall_s = time.perf_counter() - t_start
    return state

  def _compile_then_release(self, update: Update, state: State, batch: dict, args: tuple) -> None:
    """On CPU, compiles the jitted update before its first run and gives back what compilation
    left stranded on the heap, so the first step's temporaries do not land above it.

    XLA's compilation frees most of what it allocated, but not at the heap's top; the first
    step's temporaries then come from the top and that step peaked 0.5 GiB above every later one
    (paper-shaped step, block:1, batch 32: 6.37 against 5.83 GiB; 5.91 after this; performance.md
    "Memory", the whole command). The jitted call then reuses this executable.
    """
    if self.release_stranded is None or not hasattr(update, "lower"):
      return
    update.lower(state, batch, *args).compile()
    self.release_stranded()

  def _write(self, step: int, pending: list[dict], bar) -> None:
    fetched = jax.device_get(pending)  # one sync per log interval, not per step
    avg = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1] if k != "count"}
    dt = time.perf_counter() - self._t_last
    avg["lr"] = float(self.learning_rate(step))
    if self._seen:
      avg["samples_per_s"] = self._seen / dt
    if self.log is not None:
      self.log.write(step, "train", avg)
    bar.set_postfix(loss=f"{avg['loss']:.4f}", sps=f"{avg.get('samples_per_s', 0):.1f}")
    self.train = avg
    self.restart_clock()


def _progress(total: int, initial: int, *, enabled: bool, desc: str, leave: bool):
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

  return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
              desc=desc, leave=leave)
