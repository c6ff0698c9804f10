"""SleepFM's contrastive objectives (pairwise and leave-one-out) with missing-modality masks.

Both objectives, and both the single-array and the gathered (multi-device) versions, run through
one core, `_term_stats`: for one *term* (a row side against a column side, e.g. BAS windows
retrieving their ECG partners among the batch's ECG embeddings) it computes the cross-entropy of

    logits = exp(t) * rows @ cols.T        (rows, cols L2-normalised; row r's positive: column r)

summed over valid rows, the number of valid rows and the number of correct top-1 retrievals. The
loss is the mean over terms of the mean cross-entropy over that term's valid rows; terms without a
valid row in the (global) batch are left out of the mean. With every modality present this is the
original SleepFM reduction: cross-entropy summed over rows and terms, divided by the number of terms
and the batch size.

Terms, for modalities in the order of the `embs` mapping (`jax.jit` sorts dict keys, which for
`MODALITIES` is the same order):

* `"pairwise"`: for every pair a < b both directions, `"a->b"` (rows a, columns b) and `"b->a"`.
* `"leave_one_out"`: for every modality a, `"a->rest"` and `"rest->a"`, where `rest` is the plain
  mean of the other *present* modalities' normalised embeddings (not re-normalised, as the
  original; `renormalise_rest=True` re-normalises it).

Masks (`{modality: [B] bool}`, True = present) restrict each term to the windows where both of its
sides exist: a pairwise term a/b uses the windows with a and b present as rows *and* as candidate
columns, so it equals the original term computed on that sub-batch, and its two directions share
one candidate set. For leave-one-out the rest side exists where at least one other modality is
present. Absent embeddings are zeroed before anything else, so their values never reach the loss.

`gathered_loss` computes the same numbers across a device mesh: inside `jax.shard_map` each device
holds `B / n` rows, all-gathers the normalised embeddings and masks of the data axis (columns), and
sums its rows' statistics; a `psum` makes the sums global and the reduction runs once outside, so
the result is exact whatever the number of valid rows per device. Differentiate the returned loss
(`jax.grad` outside `shard_map`): the all-gather transposes to a reduce-scatter and the replicated
temperature's cotangent is summed over devices, so no rescaling by the device count is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from sleepfm_jax.training.sharding import DATA_AXIS

Array = jax.Array
Stats = dict[str, tuple[Array, Array, Array]]  # term -> (ce_sum, rows, correct)

MODES = ("pairwise", "leave_one_out")
REST = "rest"

# Temperature settings. SleepFM: t = 0 at init (logit scale 1), clamped to t >= TEMPERATURE_MIN
# after each step, no upper bound. CLIP: t = log(1 / 0.07) at init, logit scale capped at 100.
TEMPERATURE_INIT_CLIP = math.log(1.0 / 0.07)
TEMPERATURE_MIN = 0.0
TEMPERATURE_MAX_CLIP = math.log(100.0)

# Logit given to excluded columns: the most negative float32. A valid row always keeps its own
# positive column, so exp(_EXCLUDED - row max) is exactly 0 whatever the temperature; a row with no
# candidate at all (an invalid row) stays finite (CE 0), so its masked value and gradient are never
# NaN. (-inf would make such rows NaN and trip jax_debug_infs.)
_EXCLUDED = float(jnp.finfo(jnp.float32).min)


def clamp_temperature(
    t: Array, lo: float | None = TEMPERATURE_MIN, hi: float | None = None
) -> Array:
  """Clips the log-temperature `t` to `[lo, hi]` (either bound may be None).

  The original SleepFM sets `t = max(t, 0)` after every optimiser step (`lo=0`, `hi=None`); CLIP
  also caps the logit scale at 100 (`hi=TEMPERATURE_MAX_CLIP`).
  """
  return jnp.clip(t, lo, hi)


def l2_normalise(x: Array, eps: float = 1e-12) -> Array:
  """Returns `x / max(||x||, eps)` along the last axis, in float32 (as torch's F.normalize).

  The clamp sits under the square root, so an all-zero row gives zeros and zero gradient, not NaN.
  """
  x = x.astype(jnp.float32)
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def term_names(modalities: tuple[str, ...], mode: str) -> tuple[str, ...]:
  """The names of the loss terms, in the order the metrics report them."""
  return tuple(name for name, _, _, _ in _terms(modalities, mode))


def _check_mode(mode: str) -> None:
  if mode not in MODES:
    raise ValueError(f"unknown contrastive mode {mode!r}; expected one of {MODES}")


def _terms(modalities: tuple[str, ...], mode: str) -> list[tuple[str, str, str, str]]:
  """Lists `(term name, row side, column side, validity key)` for `mode`.

  Side keys name a modality (`"bas"`) or the rest of modality a (`"rest:bas"`); the validity key
  names the per-window mask shared by the term's rows and columns.
  """
  _check_mode(mode)
  out = []
  if mode == "pairwise":
    for i, a in enumerate(modalities):
      for b in modalities[i + 1 :]:
        out.append((f"{a}->{b}", a, b, f"{a}&{b}"))
        out.append((f"{b}->{a}", b, a, f"{a}&{b}"))
  else:
    if len(modalities) < 2:
      raise ValueError(f"leave_one_out needs at least 2 modalities, got {modalities}")
    for a in modalities:
      out.append((f"{a}->{REST}", a, f"{REST}:{a}", f"{a}&{REST}"))
      out.append((f"{REST}->{a}", f"{REST}:{a}", a, f"{a}&{REST}"))
  return out


def _prepare(embs: Mapping[str, Array], masks: Mapping[str, Array] | None):
  """Validates inputs, fills missing masks with True, zeroes and normalises embeddings."""
  if not embs:
    raise ValueError("no embeddings given")
  shapes = {k: tuple(v.shape) for k, v in embs.items()}
  batch = {s[0] for s in shapes.values() if len(s) == 2}
  if len(batch) != 1 or any(len(s) != 2 for s in shapes.values()):
    raise ValueError(f"embeddings must all be [batch, dim] with one batch size; got {shapes}")
  (n,) = batch
  masks = dict(masks or {})
  unknown = set(masks) - set(embs)
  if unknown:
    raise ValueError(f"masks for modalities without embeddings: {sorted(unknown)}")
  out_masks = {}
  for k in embs:
    m = masks.get(k)
    m = jnp.ones((n,), bool) if m is None else jnp.asarray(m).astype(bool)
    if m.shape != (n,):
      raise ValueError(f"mask of {k!r} has shape {m.shape}, expected ({n},)")
    out_masks[k] = m
  normed = {k: jnp.where(out_masks[k][:, None], l2_normalise(v), 0.0) for k, v in embs.items()}
  return normed, out_masks


def _sides(
    e: Mapping[str, Array], m: Mapping[str, Array], mode: str, renormalise_rest: bool
) -> tuple[dict[str, Array], dict[str, Array]]:
  """Builds every side vector a term may use and every term's validity mask."""
  sides = dict(e)
  valid = {}
  names = tuple(e)
  if mode == "pairwise":
    for i, a in enumerate(names):
      for b in names[i + 1 :]:
        valid[f"{a}&{b}"] = m[a] & m[b]
  else:
    for a in names:
      others = [b for b in names if b != a]
      count = sum(m[b].astype(jnp.float32) for b in others)
      total = sum(jnp.where(m[b][:, None], e[b], 0.0) for b in others)
      rest = total / jnp.maximum(count, 1.0)[:, None]
      sides[f"{REST}:{a}"] = l2_normalise(rest) if renormalise_rest else rest
      valid[f"{a}&{REST}"] = m[a] & (count > 0)
  return sides, valid


def _term_stats(
    rows: Array,
    row_valid: Array,
    cols: Array,
    col_valid: Array,
    scale: Array,
    offset: Array | int,
) -> tuple[Array, Array, Array]:
  """Cross-entropy statistics of one term for a block of rows against all columns.

  Args:
    rows: `[b, D]` float32 row-side vectors (a block of the batch, e.g. one device's rows).
    row_valid: `[b]` bool, rows that count.
    cols: `[N, D]` float32 column-side vectors (the whole, possibly gathered, batch).
    col_valid: `[N]` bool, columns that are candidates.
    scale: logit scale `exp(t)`.
    offset: index in `cols` of row 0's positive (row r's positive is column `offset + r`).

  Returns:
    `(sum of CE over valid rows, number of valid rows, number of valid rows whose arg-max column is
    their positive)`; the last two are int32 and carry no gradient.
  """
  logits = scale * jnp.matmul(rows, cols.T, precision=jax.lax.Precision.HIGHEST)
  logits = jnp.where(col_valid[None, :], logits, _EXCLUDED)
  labels = offset + jnp.arange(rows.shape[0])
  positive = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  ce = jax.nn.logsumexp(logits, axis=1) - positive
  ce_sum = jnp.sum(jnp.where(row_valid, ce, 0.0))
  n_rows = jnp.sum(row_valid.astype(jnp.int32))
  hits = row_valid & (jnp.argmax(jax.lax.stop_gradient(logits), axis=1) == labels)
  return ce_sum, n_rows, jnp.sum(hits.astype(jnp.int32))


def _all_stats(
    local: tuple[dict[str, Array], dict[str, Array]],
    full: tuple[dict[str, Array], dict[str, Array]],
    t: Array,
    mode: str,
    offset: Array | int,
    renormalise_rest: bool,
) -> Stats:
  """Statistics of every term: `local` (rows) against `full` (columns) prepared inputs."""
  e, m = local
  e_all, m_all = full
  sides, valid = _sides(e, m, mode, renormalise_rest)
  sides_all, valid_all = _sides(e_all, m_all, mode, renormalise_rest)
  scale = jnp.exp(jnp.asarray(t, jnp.float32))
  stats = {}
  for name, row, col, key in _terms(tuple(e), mode):
    stats[name] = _term_stats(sides[row], valid[key], sides_all[col], valid_all[key], scale, offset)
  return stats


def _reduce(stats: Stats, t: Array) -> tuple[Array, dict[str, Array]]:
  """Loss (mean over active terms of mean CE over valid rows) and metrics from global stats."""
  means, active = [], []
  metrics = {}
  for name, (ce_sum, n_rows, correct) in stats.items():
    has_rows = n_rows > 0
    denom = jnp.maximum(n_rows, 1).astype(jnp.float32)
    mean = jnp.where(has_rows, ce_sum / denom, 0.0)
    means.append(mean)
    active.append(has_rows.astype(jnp.float32))
    metrics[f"loss/{name}"] = jax.lax.stop_gradient(mean)
    metrics[f"acc/{name}"] = correct.astype(jnp.float32) / denom
    metrics[f"rows/{name}"] = n_rows
  n_active = sum(active)
  loss = sum(means) / jnp.maximum(n_active, 1.0)
  metrics["loss"] = jax.lax.stop_gradient(loss)
  metrics["active_terms"] = n_active
  metrics["logit_scale"] = jax.lax.stop_gradient(jnp.exp(jnp.asarray(t, jnp.float32)))
  return loss, metrics


def contrastive_loss(
    embs: Mapping[str, Array],
    masks: Mapping[str, Array] | None,
    t: Array,
    *,
    mode: str = "pairwise",
    renormalise_rest: bool = False,
) -> tuple[Array, dict[str, Array]]:
  """SleepFM contrastive loss of one batch held as whole arrays (any sharding, or one device).

  Args:
    embs: modality -> `[B, D]` embeddings (any float dtype; computed in float32, unnormalised).
    masks: modality -> `[B]` bool presence, or None / missing keys for "all present".
    t: scalar log-temperature; the logit scale is `exp(t)`.
    mode: `"pairwise"` or `"leave_one_out"`.
    renormalise_rest: leave-one-out only: L2-normalise the mean of the other modalities.

  Returns:
    `(loss, metrics)`: `metrics` holds `loss/<term>` (mean CE over the term's valid rows),
    `acc/<term>` (top-1 retrieval accuracy), `rows/<term>` (valid rows), `loss`, `active_terms`
    and `logit_scale`; none of them carries a gradient.
  """
  _check_mode(mode)
  e, m = _prepare(embs, masks)
  return _reduce(_all_stats((e, m), (e, m), t, mode, 0, renormalise_rest), t)


def gathered_loss(
    embs: Mapping[str, Array],
    masks: Mapping[str, Array] | None,
    t: Array,
    *,
    mesh: jax.sharding.Mesh,
    mode: str = "pairwise",
    axis: str = DATA_AXIS,
    renormalise_rest: bool = False,
) -> tuple[Array, dict[str, Array]]:
  """`contrastive_loss` with each device's rows scored against the gathered global batch.

  Call it inside `jax.jit` on global arrays whose batch dimension is sharded over `axis` (as
  `sharding.data_sharding` lays them out); `t` is replicated. The values equal
  `contrastive_loss` on the full batch up to float rounding, as do the gradients of the returned
  loss. Memory per device: `[B / n, B]` logits per term instead of `[B, B]`.

  Args:
    embs, masks, t, mode, renormalise_rest: as `contrastive_loss`.
    mesh: the device mesh; the global batch must be a multiple of the size of `axis`.
    axis: the mesh axis the batch is split over.

  Returns:
    `(loss, metrics)` as `contrastive_loss`, replicated on every device.
  """
  _check_mode(mode)
  n_dev = mesh.shape[axis]
  batch = next(iter(embs.values())).shape[0]
  if batch % n_dev:
    raise ValueError(
        f"global batch {batch} is not a multiple of the {axis!r} axis size {n_dev} "
        f"(mesh {dict(mesh.shape)})"
    )
  masks = dict(masks or {})
  masks = {k: masks.get(k, jnp.ones((batch,), bool)) for k in embs}
  gather: Callable[[Array], Array] = lambda x: jax.lax.all_gather(x, axis, tiled=True)

  def per_device(embs_b, masks_b, t_b):
    e, m = _prepare(embs_b, masks_b)
    e_all = jax.tree.map(gather, e)
    m_all = jax.tree.map(gather, m)
    offset = jax.lax.axis_index(axis) * next(iter(e.values())).shape[0]
    stats = _all_stats((e, m), (e_all, m_all), t_b, mode, offset, renormalise_rest)
    return jax.lax.psum(stats, axis)

  spec = jax.P(axis)
  stats = jax.shard_map(
      per_device, mesh=mesh, in_specs=(spec, spec, jax.P()), out_specs=jax.P()
  )(dict(embs), masks, t)
  return _reduce(stats, t)
