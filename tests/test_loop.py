"""The shared training loop: its limit on dispatched, unfinished steps."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from sleepfm_jax.training import loop as loop_lib


def test_in_flight_limit_auto_is_one_on_cpu_only():
  assert loop_lib.in_flight_limit(0) == 0 and loop_lib.in_flight_limit(3) == 3
  assert loop_lib.in_flight_limit(-1) == (1 if jax.default_backend() == "cpu" else 0)


def _run(max_in_flight, monkeypatch):
  """Six steps of a real jitted update; returns the final state and the values waited for."""
  waited = []
  real = jax.block_until_ready

  def spy(x):
    waited.append(float(x["step"]) if isinstance(x, dict) else None)
    return real(x)

  monkeypatch.setattr(loop_lib.jax, "block_until_ready", spy)
  update = jax.jit(lambda s, b: (s + b, {"step": s[0] + b[0], "loss": jnp.sum(s)}))
  loop = loop_lib.Loop(total_steps=6, batch_size=2, log_every=3, learning_rate=lambda k: 0.1,
                       transfer_guard=False, progress=False, max_in_flight=max_in_flight)
  state = loop.run(jnp.zeros(2), update, itertools.repeat(jnp.ones(2)))
  return np.asarray(state), waited


def test_the_limit_waits_for_older_steps_and_changes_no_result(monkeypatch):
  free, waited_free = _run(0, monkeypatch)
  assert waited_free == [1.0]  # only the first (compiling) step is waited for
  one, waited_one = _run(1, monkeypatch)
  assert waited_one == [1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # every step before the next
  two, waited_two = _run(2, monkeypatch)
  assert waited_two == [1.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # one step may still run
  np.testing.assert_array_equal(free, [6.0, 6.0])
  np.testing.assert_array_equal(one, free)
  np.testing.assert_array_equal(two, free)


def test_on_cpu_the_first_step_is_compiled_then_stranded_memory_released_then_run():
  """Compilation leaves freed memory below the heap's top; the loop compiles the first update
  ahead of its run and gives that back before the run's temporaries are allocated
  (docs/performance.md, "the whole command"). The jitted call must then reuse that executable:
  one backend compilation, one trace, and the same result as without the release."""
  events = []

  class Recorder:  # stands in for hostmem.StrandedMemory, recording when it is called
    def __call__(self):
      events.append("release")
      return 0.0

  compiles = []

  def listener(name, secs, **kw):
    del secs
    if name == "/jax/core/compile/backend_compile_duration" and kw.get("fun_name") == "jit(body)":
      compiles.append(name)

  def body(s, b):
    events.append("trace")
    jax.debug.callback(lambda: events.append("run"))
    return s * 2.0 + b, {"loss": jnp.sum(s)}

  def run(release):
    loop = loop_lib.Loop(total_steps=4, batch_size=2, log_every=2, learning_rate=lambda k: 0.1,
                         transfer_guard=False, progress=False, max_in_flight=1,
                         release_stranded=release)
    if release:
      loop.release_stranded = Recorder()
    update = jax.jit(body)
    state = loop.run(jnp.arange(3.0), update, itertools.repeat(jnp.ones(3)),
                     after_step=lambda k, s: events.append(f"step{k}"))
    return np.asarray(state)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    released = run(True)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  # compiled (traced), released, then run; after each step's run the loop's own release
  assert events[:5] == ["trace", "release", "run", "release", "step1"], events
  assert events.count("trace") == 1, events
  assert events.count("release") == 5, events  # before step 1's run, then after each step
  assert len(compiles) == 1, compiles  # the first call ran the executable compiled ahead
  events.clear()
  plain = run(False)
  assert "release" not in events
  np.testing.assert_array_equal(released, plain)
  np.testing.assert_array_equal(plain, [15.0, 31.0, 47.0])  # 16 s + 15 after four steps
