"""Models and optimizers from configs: one factory per idea, shared by every trainer and loader.

`build_model` (the contrastive `SleepFM`) serves pretraining, export and checkpoint conversion;
`build_supervised_model` the end-to-end CNN baseline; both read the encoder shape from the config's
`model` block through `encoder_kwargs`. `make_schedule` and `make_optimizer` read its `optim` block
(`configs.common.optimizer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from sleepfm_jax.models import effnet1d
from sleepfm_jax.models.sleepfm import SleepFM, SupervisedCNN


def encoder_kwargs(model: ml_collections.ConfigDict) -> dict[str, Any]:
  """`EffNet1D` keyword arguments of a config's `model` block (without the embedding size)."""
  return dict(widths=tuple(model.widths), depths=tuple(model.depths), head_width=model.head_width,
              dropout=model.dropout, dtype=jnp.dtype(effnet1d.resolve_dtype(model.dtype)),
              remat=model.get("remat", "none"),  # absent in older run configs
              norm=model.get("norm", "batch"))


def build_model(config: ml_collections.ConfigDict, in_channels: Mapping[str, int],
                seed: int) -> SleepFM:
  """The contrastive model of a pretraining config, initialised from `seed`."""
  return SleepFM(dict(in_channels), embed_dim=config.model.embed_dim,
                 temperature_init=config.loss.temperature_init,
                 rngs=nnx.Rngs(params=seed, dropout=seed + 1), **encoder_kwargs(config.model))


def build_supervised_model(config: ml_collections.ConfigDict, in_channels: Mapping[str, int],
                           num_classes: int, seed: int) -> SupervisedCNN:
  """The end-to-end CNN of a supervised config, initialised from `seed`."""
  return SupervisedCNN(dict(in_channels), num_classes=num_classes,
                       rngs=nnx.Rngs(params=seed, dropout=seed + 1),
                       **encoder_kwargs(config.model))


def make_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
  o = config.optim
  if o.schedule == "constant":
    main = optax.constant_schedule(o.lr)
  elif o.schedule == "step":  # PyTorch StepLR, stepped once per epoch as the original
    main = optax.exponential_decay(o.lr, transition_steps=o.step_every_epochs * steps_per_epoch,
                                   decay_rate=o.step_factor, staircase=True)
  elif o.schedule == "cosine":
    main = optax.cosine_decay_schedule(o.lr, max(1, total_steps - o.warmup_steps))
  else:
    raise ValueError(f"config.optim.schedule must be constant, step or cosine, got {o.schedule!r}")
  if o.warmup_steps > 0:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, o.lr, o.warmup_steps), main], [o.warmup_steps])
  return main


def _decay_mask(params: Any) -> Any:
  """Weight decay on conv/linear kernels only (not biases, norms or the temperature)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: getattr(path[-1], "key", None) == "kernel" and np.ndim(x) > 1, params)


def make_optimizer(config: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  o = config.optim
  parts = []
  if o.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(o.grad_clip))
  if o.name == "sgd":
    if o.weight_decay > 0:  # PyTorch SGD's coupled weight decay (added to the gradient)
      parts.append(optax.add_decayed_weights(o.weight_decay, mask=_decay_mask))
    parts.append(optax.sgd(schedule, momentum=o.momentum))
  elif o.name == "adamw":
    parts.append(optax.adamw(schedule, weight_decay=o.weight_decay, mask=_decay_mask))
  else:
    raise ValueError(f"config.optim.name must be sgd or adamw, got {o.name!r}")
  tx = optax.chain(*parts)
  if o.grad_accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=o.grad_accum)
  return tx
