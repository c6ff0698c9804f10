"""BatchNorm running statistics estimated from data (PyTorch's cumulative averaging).

`calibrate_batch_stats(model, batches)` replaces every `BatchNorm1d` layer's running mean and
variance by the average, over the given batches, of the statistics a train-mode forward pass
computes on each batch (mean, unbiased variance): what PyTorch's BatchNorm keeps with
`momentum=None`, and what a precise-BN or SWA-style recalibration does. The weights are untouched.

Its use here is a control: an encoder with random weights keeps its initial running statistics
(mean 0, variance 1), under which an eval-mode forward pass does not normalise at all; calibrated,
the same random encoder normalises every layer as training mode does
(`export.calibrate_untrained`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax
import numpy as np
from flax import nnx

from sleepfm_jax.models.effnet1d import BatchNorm1d


@nnx.jit
def _forward_train(model, inputs):
  model(inputs, train=True)


def calibrate_batch_stats(model: nnx.Module, batches: Iterable[Mapping[str, jax.Array]]) -> int:
  """Sets the BN running statistics of `model` to their average over `batches`; returns how many.

  Args:
    model: any module holding `BatchNorm1d` layers, called as `model(inputs, train=True)`.
    batches: the model's inputs, one batch at a time (all of the same shape). Each train-mode
      forward pass normalises with that batch's own statistics, whatever the running ones, so
      every batch contributes the same way, independent of the order. Dropout acts as in training.

  Raises:
    ValueError: the model has no BatchNorm layer, or `batches` is empty.
  """
  layers = [m for _, m in nnx.iter_modules(model) if isinstance(m, BatchNorm1d)]
  if not layers:
    raise ValueError("the model has no BatchNorm layer: there are no running statistics to "
                     "calibrate")
  momenta = [bn.momentum for bn in layers]
  total, count = None, 0
  try:
    for bn in layers:
      bn.momentum = 1.0  # running := this batch's statistics
    for inputs in batches:
      _forward_train(model, inputs)
      stats = jax.tree.map(lambda v: np.asarray(v, np.float64),
                           nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))
      total = stats if total is None else jax.tree.map(np.add, total, stats)
      count += 1
  finally:
    for bn, momentum in zip(layers, momenta, strict=True):
      bn.momentum = momentum
  if not count:
    raise ValueError("no batches to calibrate the BatchNorm statistics on")
  state = nnx.state(model, nnx.BatchStat)
  nnx.replace_by_pure_dict(state, jax.tree.map(lambda t: (t / count).astype(np.float32), total))
  nnx.update(model, state)
  return count
